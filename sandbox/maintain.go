package sandbox

import (
	"context"
	"time"
)

// maintain removes idle runtimes every MaintenanceInterval. A runtime is idle
// when nothing is in flight in it and its last activity ended more than
// InactiveThreshold ago; creations in progress are never touched.
func (m *Manager) maintain() {
	defer close(m.maintDone)
	t := time.NewTicker(m.cfg.MaintenanceInterval)
	defer t.Stop()
	for {
		select {
		case <-m.stopMaint:
			return
		case <-t.C:
			m.reapIdle(context.Background(), time.Now().Add(-m.cfg.InactiveThreshold))
		}
	}
}

func (m *Manager) reapIdle(ctx context.Context, threshold time.Time) {
	m.mu.Lock()
	var victims []*entry
	for _, e := range m.table {
		if e.pending() || e.rt == nil {
			continue
		}
		last, idle := e.rt.idleSince()
		if idle && last.Before(threshold) {
			victims = append(victims, e)
			m.dropLocked(e)
		}
	}
	m.mu.Unlock()
	removed := 0
	for _, e := range victims {
		m.cfg.Observer.RuntimeRemoved(RemovedMaintenance)
		if err := m.finish(ctx, e, 0); err == nil {
			removed++
		}
	}
	if len(victims) > 0 {
		m.log.Info("maintenance removed inactive runtimes", "removed", removed, "candidates", len(victims))
	}
}

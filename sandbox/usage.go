package sandbox

// Usage reports CPU usage for the health endpoint: the host's in percent of
// all cores, and each runtime's in percent of one core.
func (m *Manager) Usage() (float64, map[string]float64) {
	return m.usage.Read(func() map[string]uint64 {
		m.mu.Lock()
		rts := make([]*Runtime, 0, len(m.table))
		for _, e := range m.table {
			if !e.pending() && e.rt != nil {
				rts = append(rts, e.rt)
			}
		}
		m.mu.Unlock()
		out := make(map[string]uint64, len(rts))
		for _, r := range rts {
			if ct := r.current(); ct != nil {
				if ns, err := ct.CPUTime(); err == nil {
					out[r.ID] = ns
				}
			}
		}
		return out
	})
}

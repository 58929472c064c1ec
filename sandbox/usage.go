package sandbox

import "executor/sandbox/usage"

// newUsageSampler samples the runtimes' CPU counters in the background while
// the health endpoint asks for them.
func (m *Manager) newUsageSampler() *usage.Sampler {
	return usage.New(usage.Config{Runtimes: m.cpuCounters})
}

// Usage reports CPU usage for the health endpoint: the host's in percent of
// all cores, and each runtime's in percent of one core, from the latest
// background sample (see package usage: only the reading that starts the
// sampler waits). Every ready runtime in the table is listed, as of this
// call: one created since the latest sample reads 0, one deleted since is
// left out.
func (m *Manager) Usage() (float64, map[string]float64) {
	host, sampled := m.usage.Read()
	m.mu.Lock()
	out := make(map[string]float64, len(m.table))
	for id, e := range m.table {
		if !e.pending() && e.rt != nil {
			out[id] = sampled[id]
		}
	}
	m.mu.Unlock()
	return host, out
}

// cpuCounters reads each ready runtime's CPU time, in nanoseconds. The
// table's lock is only held to list the runtimes: creations and deletions
// never wait on the cgroup reads.
func (m *Manager) cpuCounters() map[string]uint64 {
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
			if ns, err := ct.CPUUsage(); err == nil {
				out[r.ID] = ns
			}
		}
	}
	return out
}

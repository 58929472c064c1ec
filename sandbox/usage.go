package sandbox

import (
	"executor/sandbox/container"
	"executor/sandbox/usage"
)

// Usage is the host's and the runtimes' usage figures (see package usage).
type Usage = usage.Figures

// RuntimeUsage is one runtime's usage figures: CPU in percent of one core
// over the latest sample interval, memory charged to its cgroup and that
// cgroup's limit in bytes, and its tasks, as the latest sample read them.
type RuntimeUsage = usage.Runtime

// counterReader is a container with memory and pids counters beside its CPU
// counter (container.Container; the tests' fakes may have the CPU counter
// alone).
type counterReader interface {
	Counters() (container.Counters, error)
}

// newUsageSampler samples the runtimes' cgroup counters in the background
// while the health endpoint and the runtime objects ask for them.
func (m *Manager) newUsageSampler() *usage.Sampler {
	return usage.New(usage.Config{Runtimes: m.counters})
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

// UsageFigures is Usage with the memory and pids figures: every ready
// runtime of the table as of this call, one created since the latest sample
// with 0 CPU and no memory or pids figures (HasMemory and HasPIDs false).
func (m *Manager) UsageFigures() Usage {
	fig := m.usage.Figures()
	sampled := fig.Runtimes
	m.mu.Lock()
	fig.Runtimes = make(map[string]RuntimeUsage, len(m.table))
	for id, e := range m.table {
		if !e.pending() && e.rt != nil {
			fig.Runtimes[id] = sampled[id]
		}
	}
	m.mu.Unlock()
	return fig
}

// withUsage gives ready runtimes' infos (ids[i] is infos[i]'s id) their
// figures from the latest sample, starting the sampler if need be. As in
// UsageFigures, a ready runtime the latest sample did not read (new since)
// has 0 CPU and no memory or pids figures; a pending one has no figures.
func (m *Manager) withUsage(ids []string, infos []Info) {
	if len(infos) == 0 {
		return
	}
	sampled := m.usage.Figures().Runtimes
	// One allocation for all the figures, not one per runtime: a list of
	// a thousand runtimes is polled.
	figs := make([]RuntimeUsage, len(infos))
	for i := range infos {
		if infos[i].Status == "pending" {
			continue
		}
		figs[i] = sampled[ids[i]]
		infos[i].Usage = &figs[i]
	}
}

// counters reads each ready runtime's cgroup counters. The table's lock is
// only held to list the runtimes: creations and deletions never wait on the
// cgroup reads.
func (m *Manager) counters() map[string]usage.Counters {
	m.mu.Lock()
	rts := make([]*Runtime, 0, len(m.table))
	for _, e := range m.table {
		if !e.pending() && e.rt != nil {
			rts = append(rts, e.rt)
		}
	}
	m.mu.Unlock()
	out := make(map[string]usage.Counters, len(rts))
	for _, r := range rts {
		ct := r.current()
		if ct == nil {
			continue
		}
		if cr, ok := ct.(counterReader); ok {
			if c, err := cr.Counters(); err == nil {
				out[r.ID] = usage.Counters(c)
			}
			continue
		}
		if ns, err := ct.CPUUsage(); err == nil {
			out[r.ID] = usage.Counters{CPU: ns}
		}
	}
	return out
}

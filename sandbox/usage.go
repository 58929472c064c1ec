package sandbox

import (
	"os"
	"strconv"
	"strings"
	"time"
)

// usageSample is one reading of the CPU counters.
type usageSample struct {
	at        time.Time
	hostBusy  uint64 // jiffies
	hostTotal uint64
	runtimes  map[string]uint64 // runtime id -> cgroup CPU time in ns
}

// Usage reports CPU usage for the health endpoint: the host's in percent of
// all cores, and each runtime's in percent of one core (the reference's
// cores x 100), averaged since the previous reading (at least 100 ms ago).
func (m *Manager) Usage() (float64, map[string]float64) {
	m.usageMu.Lock()
	defer m.usageMu.Unlock()
	prev := m.lastUsage
	if prev == nil {
		prev = m.sampleUsage()
		time.Sleep(100 * time.Millisecond)
	} else if since := time.Since(prev.at); since < 100*time.Millisecond {
		time.Sleep(100*time.Millisecond - since)
	}
	cur := m.sampleUsage()
	m.lastUsage = cur
	host := 0.0
	if dt := cur.hostTotal - prev.hostTotal; dt > 0 && cur.hostTotal > prev.hostTotal {
		host = float64(cur.hostBusy-prev.hostBusy) / float64(dt) * 100
	}
	wall := float64(cur.at.Sub(prev.at).Nanoseconds())
	per := make(map[string]float64, len(cur.runtimes))
	for id, ns := range cur.runtimes {
		old, ok := prev.runtimes[id]
		if !ok || ns < old || wall <= 0 {
			per[id] = 0
			continue
		}
		per[id] = float64(ns-old) / wall * 100
	}
	return host, per
}

func (m *Manager) sampleUsage() *usageSample {
	s := &usageSample{at: time.Now(), runtimes: map[string]uint64{}}
	s.hostBusy, s.hostTotal = hostCPU()
	m.mu.Lock()
	rts := make([]*Runtime, 0, len(m.table))
	for _, e := range m.table {
		if !e.pending() && e.rt != nil {
			rts = append(rts, e.rt)
		}
	}
	m.mu.Unlock()
	for _, r := range rts {
		ct := r.current()
		if ct == nil {
			continue
		}
		st, err := ct.c.Stats()
		if err != nil || st.CgroupStats == nil {
			continue
		}
		s.runtimes[r.ID] = st.CgroupStats.CpuStats.CpuUsage.TotalUsage
	}
	return s
}

// hostCPU reads the busy and total jiffies of the host from /proc/stat.
func hostCPU() (busy, total uint64) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(data), "\n")
	fields := strings.Fields(line)
	if len(fields) < 5 || fields[0] != "cpu" {
		return 0, 0
	}
	for i, f := range fields[1:] {
		v, _ := strconv.ParseUint(f, 10, 64)
		total += v
		if i != 3 && i != 4 { // idle and iowait
			busy += v
		}
	}
	return busy, total
}

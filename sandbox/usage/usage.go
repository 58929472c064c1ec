// Package usage reports CPU usage for the health endpoint: the host's in
// percent of all its cores, and each runtime's in percent of one core (the
// reference's cores x 100), averaged over the interval between two samples.
package usage

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// MinInterval is the shortest interval a reading averages over: a reading
// sooner than this after the previous one waits out the rest.
const MinInterval = 100 * time.Millisecond

// Meter keeps the previous sample. The zero value is ready to use.
type Meter struct {
	mu   sync.Mutex
	last *sample
}

// sample is one reading of the CPU counters.
type sample struct {
	at        time.Time
	hostBusy  uint64 // jiffies
	hostTotal uint64
	runtimes  map[string]uint64 // runtime id -> CPU time in ns
}

// Read returns the usage since the previous reading (at least MinInterval
// ago). runtimes returns each runtime's CPU time so far, in nanoseconds.
func (m *Meter) Read(runtimes func() map[string]uint64) (float64, map[string]float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	take := func() *sample {
		s := &sample{at: time.Now(), runtimes: runtimes()}
		s.hostBusy, s.hostTotal = hostCPU()
		return s
	}
	prev := m.last
	if prev == nil {
		prev = take()
		time.Sleep(MinInterval)
	} else if since := time.Since(prev.at); since < MinInterval {
		time.Sleep(MinInterval - since)
	}
	cur := take()
	m.last = cur
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

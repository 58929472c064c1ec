// Package usage reports CPU usage for the health endpoint: the host's in
// percent of all its cores, and each runtime's in percent of one core (the
// reference's cores x 100), averaged over the interval between two samples.
//
// A Sampler takes the samples in the background while someone asks for the
// figures, so a reading never waits on thousands of cgroup reads, and stops
// when nobody has asked for a while, so an idle daemon spends nothing on it.
package usage

import (
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// MinInterval is the interval the first figures after a start average over:
// the only reading that waits is the one that starts the sampler (the first
// after New or after an idle stop), for two samples this far apart.
const MinInterval = 100 * time.Millisecond

// DefaultInterval is how often a running Sampler samples: the figures a
// reading returns are at most this old and average over this long.
const DefaultInterval = time.Second

// DefaultIdleAfter is how long a Sampler keeps sampling after the last
// reading.
const DefaultIdleAfter = time.Minute

// Config configures a Sampler.
type Config struct {
	// Runtimes returns each runtime's CPU time so far, in nanoseconds; a
	// runtime whose counter could not be read is left out. It is called
	// from the sampler's goroutine, never with the Sampler's lock held.
	Runtimes func() map[string]uint64
	// Host returns the host's busy and total CPU time, in any unit; nil
	// reads /proc/stat.
	Host func() (busy, total uint64)
	// Interval is DefaultInterval when zero, IdleAfter DefaultIdleAfter.
	Interval  time.Duration
	IdleAfter time.Duration
}

// Sampler keeps the latest usage figures, sampling in a goroutine of its
// own while they are read. Close stops it.
type Sampler struct {
	cfg Config

	mu       sync.Mutex
	running  bool
	closed   bool
	stop     chan struct{} // closes the running goroutine
	fresh    chan struct{} // closed at the running goroutine's first figures, or when it ends
	lastRead time.Time
	have     bool
	host     float64
	per      map[string]float64 // replaced, never changed
	wg       sync.WaitGroup
}

// sample is one reading of the CPU counters.
type sample struct {
	at        time.Time
	hostBusy  uint64
	hostTotal uint64
	runtimes  map[string]uint64 // runtime id -> CPU time in ns
}

// New returns a Sampler; it starts sampling at the first Read.
func New(cfg Config) *Sampler {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.IdleAfter <= 0 {
		cfg.IdleAfter = DefaultIdleAfter
	}
	if cfg.Host == nil {
		cfg.Host = hostCPU
	}
	return &Sampler{cfg: cfg}
}

// Read returns the latest figures: the host's usage and each sampled
// runtime's. It returns at once, but for the reading that starts the
// sampler, which waits for its first figures (MinInterval and two samples).
// The map is shared: callers must not change it. After Close it returns
// nothing.
func (s *Sampler) Read() (float64, map[string]float64) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return 0, nil
	}
	s.lastRead = time.Now()
	if !s.running {
		s.running = true
		s.stop = make(chan struct{})
		s.fresh = make(chan struct{})
		s.wg.Add(1)
		go s.run(s.stop, s.fresh)
	}
	if !s.have {
		fresh := s.fresh
		s.mu.Unlock()
		<-fresh
		s.mu.Lock()
	}
	host, per := s.host, s.per
	s.mu.Unlock()
	return host, per
}

// Close stops the sampling and waits for it to end.
func (s *Sampler) Close() {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		if s.running {
			close(s.stop)
		}
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// run samples until Close or until nobody read the figures for IdleAfter;
// it then drops them, so a later start never serves figures from before the
// pause.
func (s *Sampler) run(stop <-chan struct{}, fresh chan struct{}) {
	defer s.wg.Done()
	published := false
	defer func() {
		if !published {
			close(fresh)
		}
	}()
	prev := s.take()
	t := time.NewTimer(MinInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			s.mu.Lock()
			s.stopLocked()
			s.mu.Unlock()
			return
		case <-t.C:
		}
		cur := s.take()
		host, per := figures(prev, cur)
		prev = cur
		s.mu.Lock()
		// The first figures are always published: their readers are
		// waiting, however short IdleAfter is.
		if s.closed || published && time.Since(s.lastRead) >= s.cfg.IdleAfter {
			s.stopLocked()
			s.mu.Unlock()
			return
		}
		s.host, s.per, s.have = host, per, true
		s.mu.Unlock()
		if !published {
			published = true
			close(fresh)
		}
		t.Reset(s.cfg.Interval)
	}
}

// stopLocked marks the sampler stopped and drops its figures.
func (s *Sampler) stopLocked() {
	s.running, s.have, s.host, s.per = false, false, 0, nil
}

// take reads the counters, with no lock held: at a thousand runtimes that
// is a few thousand system calls.
func (s *Sampler) take() *sample {
	smp := &sample{at: time.Now(), runtimes: s.cfg.Runtimes()}
	smp.hostBusy, smp.hostTotal = s.cfg.Host()
	return smp
}

// figures is the usage between two samples. A runtime new since prev, or
// whose counter went back (a restarted container), reads 0; one gone since
// is left out.
func figures(prev, cur *sample) (float64, map[string]float64) {
	host := 0.0
	if cur.hostTotal > prev.hostTotal && cur.hostBusy >= prev.hostBusy {
		host = float64(cur.hostBusy-prev.hostBusy) / float64(cur.hostTotal-prev.hostTotal) * 100
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

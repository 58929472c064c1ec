// Package usage reports the runtimes' usage for the health endpoint and the
// runtime objects: CPU, the host's in percent of all its cores and each
// runtime's in percent of one core (the reference's cores x 100), averaged
// over the interval between two samples; each runtime's memory and tasks as
// its cgroup counts them at the latest sample; the host's memory from
// /proc/meminfo.
//
// A Sampler takes the samples in the background while someone asks for the
// figures, so a reading never waits on thousands of cgroup reads, and stops
// when nobody has asked for a while, so an idle daemon spends nothing on it.
package usage

import (
	"math"
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

// Counters are one runtime's cgroup counters at one sample.
type Counters struct {
	CPU         uint64 // CPU time so far, in nanoseconds
	Memory      uint64 // bytes charged to the cgroup, page cache included
	MemoryLimit uint64 // bytes; 0 for no limit
	PIDs        uint64 // tasks (processes and threads)
	// HasMemory and HasPIDs say whether the cgroup has those counters.
	HasMemory, HasPIDs bool
}

// Runtime is one runtime's figures.
type Runtime struct {
	// CPU is in percent of one core, averaged since the previous sample:
	// 0 for a runtime new since then.
	CPU float64
	// Memory, MemoryLimit and PIDs are as the latest sample read them;
	// HasMemory and HasPIDs say whether the cgroup has the counters.
	Memory, MemoryLimit, PIDs uint64
	HasMemory, HasPIDs        bool
}

// Figures are the latest figures of the host and of each sampled runtime.
type Figures struct {
	// CPU is the host's, in percent of all its cores.
	CPU float64
	// MemoryTotal and MemoryAvailable are the host's (MemTotal and
	// MemAvailable of /proc/meminfo), in bytes; HasMemory says they were
	// read.
	MemoryTotal, MemoryAvailable uint64
	HasMemory                    bool
	// Runtimes has every runtime whose counters the latest sample read;
	// callers must not change it.
	Runtimes map[string]Runtime
}

// Config configures a Sampler.
type Config struct {
	// Runtimes returns each runtime's counters; a runtime whose CPU
	// counter could not be read is left out. It is called from the
	// sampler's goroutine, never with the Sampler's lock held.
	Runtimes func() map[string]Counters
	// Host returns the host's busy and total CPU time, in any unit; nil
	// reads /proc/stat.
	Host func() (busy, total uint64)
	// HostMemory returns the host's total and available memory in bytes,
	// ok false when they could not be read; nil reads /proc/meminfo.
	HostMemory func() (total, available uint64, ok bool)
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
	fig      Figures            // replaced, never changed
	per      map[string]float64 // fig's runtime CPU figures alone, for Read
	wg       sync.WaitGroup
}

// sample is one reading of the CPU counters.
type sample struct {
	at        time.Time
	hostBusy  uint64
	hostTotal uint64
	memTotal  uint64
	memAvail  uint64
	hasMem    bool
	runtimes  map[string]Counters // by runtime id
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
	if cfg.HostMemory == nil {
		cfg.HostMemory = hostMemory
	}
	return &Sampler{cfg: cfg}
}

// Read returns the latest CPU figures: the host's usage and each sampled
// runtime's. It returns at once, but for the reading that starts the
// sampler, which waits for its first figures (MinInterval and two samples).
// The map is shared: callers must not change it. After Close it returns
// nothing.
func (s *Sampler) Read() (float64, map[string]float64) {
	fig, per := s.latest()
	return fig.CPU, per
}

// Figures returns the latest figures, CPU, memory and pids, as Read does.
func (s *Sampler) Figures() Figures {
	fig, _ := s.latest()
	return fig
}

// latest starts the sampler if need be and returns its figures.
func (s *Sampler) latest() (Figures, map[string]float64) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return Figures{}, nil
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
	fig, per := s.fig, s.per
	s.mu.Unlock()
	return fig, per
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
		fig := figures(prev, cur)
		per := make(map[string]float64, len(fig.Runtimes))
		for id, r := range fig.Runtimes {
			per[id] = r.CPU
		}
		prev = cur
		s.mu.Lock()
		// The first figures are always published: their readers are
		// waiting, however short IdleAfter is.
		if s.closed || published && time.Since(s.lastRead) >= s.cfg.IdleAfter {
			s.stopLocked()
			s.mu.Unlock()
			return
		}
		s.fig, s.per, s.have = fig, per, true
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
	s.running, s.have, s.fig, s.per = false, false, Figures{}, nil
}

// take reads the counters, with no lock held: at a thousand runtimes that
// is a few thousand system calls.
func (s *Sampler) take() *sample {
	smp := &sample{at: time.Now(), runtimes: s.cfg.Runtimes()}
	smp.hostBusy, smp.hostTotal = s.cfg.Host()
	smp.memTotal, smp.memAvail, smp.hasMem = s.cfg.HostMemory()
	return smp
}

// figures is the usage between two samples: CPU averaged over the
// interval, memory and pids as cur read them. A runtime new since prev, or
// whose CPU counter went back (a restarted container), reads 0 CPU; one
// gone since is left out.
func figures(prev, cur *sample) Figures {
	fig := Figures{
		MemoryTotal: cur.memTotal, MemoryAvailable: cur.memAvail, HasMemory: cur.hasMem,
		Runtimes: make(map[string]Runtime, len(cur.runtimes)),
	}
	if cur.hostTotal > prev.hostTotal && cur.hostBusy >= prev.hostBusy {
		fig.CPU = float64(cur.hostBusy-prev.hostBusy) / float64(cur.hostTotal-prev.hostTotal) * 100
	}
	wall := float64(cur.at.Sub(prev.at).Nanoseconds())
	for id, c := range cur.runtimes {
		r := Runtime{
			Memory: c.Memory, MemoryLimit: c.MemoryLimit, PIDs: c.PIDs,
			HasMemory: c.HasMemory, HasPIDs: c.HasPIDs,
		}
		if old, ok := prev.runtimes[id]; ok && c.CPU >= old.CPU && wall > 0 {
			r.CPU = float64(c.CPU-old.CPU) / wall * 100
		}
		fig.Runtimes[id] = r
	}
	return fig
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

// hostMemory reads MemTotal and MemAvailable from /proc/meminfo, in bytes.
func hostMemory() (total, available uint64, ok bool) {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, 0, false
	}
	return parseMeminfo(data)
}

// parseMeminfo takes MemTotal and MemAvailable from /proc/meminfo's text
// (kB, which the kernel means as KiB); ok only with both.
func parseMeminfo(data []byte) (total, available uint64, ok bool) {
	var have int // bit 0: MemTotal, bit 1: MemAvailable
	for line := range strings.SplitSeq(string(data), "\n") {
		name, rest, found := strings.Cut(line, ":")
		if !found || (name != "MemTotal" && name != "MemAvailable") {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) != 2 || fields[1] != "kB" {
			return 0, 0, false
		}
		kb, err := strconv.ParseUint(fields[0], 10, 64)
		if err != nil || kb > math.MaxUint64/1024 {
			return 0, 0, false
		}
		if name == "MemTotal" {
			total, have = kb*1024, have|1
		} else {
			available, have = kb*1024, have|2
		}
	}
	return total, available, have == 3
}

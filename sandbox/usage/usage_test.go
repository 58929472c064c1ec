package usage

import (
	"maps"
	"sync"
	"testing"
	"time"
)

// A runtime's CPU time over the interval becomes percent of one core; a
// runtime new since the previous sample, or whose counter went back (a
// restarted container), reads 0; one gone since is left out. Memory, pids
// and the host's memory are the current sample's, whatever the previous.
func TestFigures(t *testing.T) {
	at := time.Now()
	cpu := func(ns uint64) Counters { return Counters{CPU: ns} }
	prev := &sample{at: at, hostBusy: 10, hostTotal: 100, memTotal: 1, memAvail: 1, hasMem: true,
		runtimes: map[string]Counters{"a": cpu(0), "gone": cpu(5), "reset": cpu(1e12),
			"mem": {CPU: 1, Memory: 99, MemoryLimit: 100, PIDs: 9, HasMemory: true, HasPIDs: true}}}
	tests := []struct {
		name string
		cur  *sample
		want Figures
	}{
		{
			name: "100 ms later",
			cur: &sample{at: at.Add(100 * time.Millisecond), hostBusy: 30, hostTotal: 140,
				runtimes: map[string]Counters{"a": cpu(50e6), "reset": cpu(10), "new": cpu(1e9)}},
			want: Figures{CPU: 50, Runtimes: map[string]Runtime{"a": {CPU: 50}, "reset": {}, "new": {}}},
		},
		{
			name: "two cores busy",
			cur:  &sample{at: at.Add(time.Second), hostBusy: 110, hostTotal: 200, runtimes: map[string]Counters{"a": cpu(2e9)}},
			want: Figures{CPU: 100, Runtimes: map[string]Runtime{"a": {CPU: 200}}},
		},
		{
			name: "host counters went back",
			cur:  &sample{at: at.Add(time.Second), hostBusy: 5, hostTotal: 50, runtimes: map[string]Counters{}},
			want: Figures{Runtimes: map[string]Runtime{}},
		},
		{
			name: "memory and pids are the latest sample's",
			cur: &sample{at: at.Add(time.Second), hostBusy: 10, hostTotal: 100, memTotal: 8 << 30, memAvail: 3 << 30, hasMem: true,
				runtimes: map[string]Counters{
					"mem":      {CPU: 1e9 + 1, Memory: 64 << 20, MemoryLimit: 128e6, PIDs: 3, HasMemory: true, HasPIDs: true},
					"no limit": {Memory: 5, PIDs: 1, HasMemory: true, HasPIDs: true},
					"cpu only": cpu(7),
				}},
			want: Figures{MemoryTotal: 8 << 30, MemoryAvailable: 3 << 30, HasMemory: true, Runtimes: map[string]Runtime{
				"mem":      {CPU: 100, Memory: 64 << 20, MemoryLimit: 128e6, PIDs: 3, HasMemory: true, HasPIDs: true},
				"no limit": {Memory: 5, PIDs: 1, HasMemory: true, HasPIDs: true},
				"cpu only": {},
			}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := figures(prev, tc.cur)
			if got.CPU != tc.want.CPU || got.MemoryTotal != tc.want.MemoryTotal || got.MemoryAvailable != tc.want.MemoryAvailable || got.HasMemory != tc.want.HasMemory {
				t.Errorf("host %+v, want %+v", got, tc.want)
			}
			if !maps.Equal(got.Runtimes, tc.want.Runtimes) {
				t.Errorf("runtimes %+v, want %+v", got.Runtimes, tc.want.Runtimes)
			}
		})
	}
}

// MemTotal and MemAvailable, in KiB in the file, are given in bytes; a file
// without both, or in another unit, gives nothing.
func TestParseMeminfo(t *testing.T) {
	tests := []struct {
		name             string
		in               string
		total, available uint64
		ok               bool
	}{
		{"both", "MemTotal:        8056344 kB\nMemFree:  100 kB\nMemAvailable:    6022140 kB\nBuffers: 1 kB\n", 8056344 * 1024, 6022140 * 1024, true},
		{"no MemAvailable (before 3.14)", "MemTotal: 1024 kB\nMemFree: 10 kB\n", 0, 0, false},
		{"twice MemTotal", "MemTotal: 1024 kB\nMemTotal: 1024 kB\n", 0, 0, false},
		{"other unit", "MemTotal: 1024 MB\nMemAvailable: 1 kB\n", 0, 0, false},
		{"garbage", "MemTotal: lots kB\nMemAvailable: 1 kB\n", 0, 0, false},
		{"overflow", "MemTotal: 18446744073709551615 kB\nMemAvailable: 1 kB\n", 0, 0, false},
		{"empty", "", 0, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			total, available, ok := parseMeminfo([]byte(tc.in))
			if ok != tc.ok || ok && (total != tc.total || available != tc.available) {
				t.Errorf("parseMeminfo = %d, %d, %v; want %d, %d, %v", total, available, ok, tc.total, tc.available, tc.ok)
			}
		})
	}
}

// The host's own /proc/meminfo reads, and its figures are plausible.
func TestHostMemory(t *testing.T) {
	total, available, ok := hostMemory()
	if !ok || total == 0 || available > total {
		t.Fatalf("hostMemory = %d, %d, %v", total, available, ok)
	}
}

// fakeCounters stands in for the cgroup and /proc/stat reads, which the e2e
// health tests cover: each sample, every runtime used 10 ms more and the
// host 1 busy of 2 ticks. It can be held inside a sample to show that
// readers never wait on one.
type fakeCounters struct {
	mu      sync.Mutex
	ids     []string
	ns      uint64
	ticks   uint64
	calls   int
	hold    chan struct{} // while non-nil, a sample waits for it to close
	holding chan struct{} // closed when a sample starts waiting on hold
}

func (f *fakeCounters) runtimes() map[string]Counters {
	f.mu.Lock()
	f.calls++
	f.ns += 10e6
	out := make(map[string]Counters, len(f.ids))
	for _, id := range f.ids {
		out[id] = Counters{CPU: f.ns, Memory: f.ns / 1e6, MemoryLimit: 1 << 30, PIDs: uint64(len(id)), HasMemory: true, HasPIDs: true}
	}
	hold, holding := f.hold, f.holding
	f.hold, f.holding = nil, nil
	f.mu.Unlock()
	if hold != nil {
		close(holding)
		<-hold
	}
	return out
}

func (f *fakeCounters) host() (busy, total uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ticks += 2
	return f.ticks / 2, f.ticks
}

func (f *fakeCounters) setIDs(ids ...string) {
	f.mu.Lock()
	f.ids = ids
	f.mu.Unlock()
}

func (f *fakeCounters) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func newFake(t *testing.T, cfg Config, ids ...string) (*Sampler, *fakeCounters) {
	f := &fakeCounters{ids: ids}
	cfg.Runtimes, cfg.Host = f.runtimes, f.host
	cfg.HostMemory = func() (uint64, uint64, bool) { return 2 << 30, 1 << 30, true }
	s := New(cfg)
	t.Cleanup(s.Close)
	return s, f
}

// readSoon reads in a goroutine and fails the test when the reading waits
// on a sample in progress: a generous bound, far above any reading that
// only takes a lock.
func readSoon(t *testing.T, s *Sampler) (float64, map[string]float64) {
	t.Helper()
	type result struct {
		host float64
		per  map[string]float64
	}
	done := make(chan result, 1)
	go func() {
		host, per := s.Read()
		done <- result{host, per}
	}()
	select {
	case r := <-done:
		return r.host, r.per
	case <-time.After(10 * time.Second):
		t.Fatal("Read waited on a sample in progress")
		return 0, nil
	}
}

// The first reading waits for figures; later ones return the kept figures
// even while a sample is in progress.
func TestSamplerKeepsFigures(t *testing.T) {
	s, f := newFake(t, Config{Interval: 5 * time.Millisecond}, "a", "b")
	host, per := s.Read()
	if host != 50 {
		t.Errorf("host %v%%, want 50%%", host)
	}
	if len(per) != 2 || per["a"] <= 0 || per["b"] <= 0 {
		t.Fatalf("first figures %v, want a and b above 0", per)
	}
	// Figures carries the same CPU figures beside the memory and pids of
	// the latest sample, and the host's memory.
	fig := s.Figures()
	if fig.MemoryTotal != 2<<30 || fig.MemoryAvailable != 1<<30 || !fig.HasMemory || len(fig.Runtimes) != 2 {
		t.Fatalf("Figures %+v", fig)
	}
	if a := fig.Runtimes["a"]; a.CPU <= 0 || !a.HasMemory || a.Memory == 0 || a.MemoryLimit != 1<<30 || !a.HasPIDs || a.PIDs != 1 {
		t.Errorf("figures of a %+v", a)
	}
	hold, holding := make(chan struct{}), make(chan struct{})
	f.mu.Lock()
	f.hold, f.holding = hold, holding
	f.mu.Unlock()
	select {
	case <-holding: // a sample is now in progress and stays so
	case <-time.After(10 * time.Second):
		t.Fatal("no sample taken in the background")
	}
	defer close(hold)
	_, kept := readSoon(t, s)
	for i := 0; i < 3; i++ {
		if _, again := readSoon(t, s); !maps.Equal(again, kept) {
			t.Fatalf("figures changed with no sample taken: %v then %v", kept, again)
		}
	}
	if len(kept) != 2 || kept["a"] <= 0 {
		t.Fatalf("figures during a sample %v, want the last ones", kept)
	}
}

// Nobody reading for IdleAfter stops the sampling; the next reading starts
// it again with fresh figures, not the ones from before the pause.
func TestSamplerStopsWhenIdleAndRestarts(t *testing.T) {
	const interval = 5 * time.Millisecond
	s, f := newFake(t, Config{Interval: interval, IdleAfter: 200 * time.Millisecond}, "before")
	if _, per := s.Read(); len(per) != 1 || per["before"] <= 0 {
		t.Fatalf("figures %v", per)
	}
	waitStopped(t, s)
	calls := f.callCount()
	time.Sleep(20 * interval)
	if got := f.callCount(); got != calls {
		t.Fatalf("%d samples taken after the sampler stopped", got-calls)
	}
	f.setIDs("after")
	_, per := s.Read()
	if len(per) != 1 || per["after"] <= 0 {
		t.Fatalf("figures after the restart %v, want only the runtime sampled since", per)
	}
	if f.callCount() <= calls {
		t.Fatal("the reading after the pause took no sample")
	}
}

// Close stops the sampler and waits for it; a reading waiting for the first
// figures is let go, and readings after Close start nothing.
func TestSamplerClose(t *testing.T) {
	t.Run("running", func(t *testing.T) {
		s, f := newFake(t, Config{Interval: 5 * time.Millisecond}, "a")
		s.Read()
		s.Close()
		s.Close()
		if running(s) {
			t.Fatal("running after Close")
		}
		calls := f.callCount()
		if host, per := readSoon(t, s); host != 0 || per != nil {
			t.Errorf("figures after Close: %v %v", host, per)
		}
		if f.callCount() != calls || running(s) {
			t.Error("a reading after Close sampled")
		}
	})
	t.Run("while the first reading waits", func(t *testing.T) {
		s, f := newFake(t, Config{}, "a")
		hold, holding := make(chan struct{}), make(chan struct{})
		f.hold, f.holding = hold, holding
		read := make(chan map[string]float64, 1)
		go func() {
			_, per := s.Read()
			read <- per
		}()
		<-holding
		closed := make(chan struct{})
		go func() {
			s.Close()
			close(closed)
		}()
		close(hold)
		<-closed
		if per := <-read; per != nil {
			t.Errorf("figures from a sampler closed before its first: %v", per)
		}
	})
	t.Run("never read", func(t *testing.T) {
		s, f := newFake(t, Config{}, "a")
		s.Close()
		if f.callCount() != 0 {
			t.Error("sampled without a reading")
		}
	})
}

// Concurrent readings share one sampler and see consistent figures (run
// with -race).
func TestSamplerConcurrentReads(t *testing.T) {
	s, _ := newFake(t, Config{Interval: time.Millisecond, IdleAfter: 5 * time.Millisecond}, "a", "b")
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 200; j++ {
				if _, per := s.Read(); len(per) != 2 {
					t.Errorf("figures %v", per)
					return
				}
				if j%50 == 0 {
					time.Sleep(20 * time.Millisecond) // let it go idle now and then
				}
			}
		}()
	}
	wg.Wait()
}

func running(s *Sampler) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running
}

func waitStopped(t *testing.T, s *Sampler) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for running(s) {
		if time.Now().After(deadline) {
			t.Fatal("still sampling long after the last reading")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

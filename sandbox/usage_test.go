package sandbox

import (
	"context"
	"sync"
	"testing"
	"time"

	"executor/sandbox/container"
	"executor/sandbox/protocol"
)

// cpuProc is a fake container with a CPU counter that grows 10 ms a read
// and can be held inside a read (the real counter is covered by
// sandbox/container's and the e2e health tests).
type cpuProc struct {
	*fakeProc
	c *cpuCounters
}

type cpuCounters struct {
	mu      sync.Mutex
	ns      uint64
	hold    chan struct{} // while non-nil, a read waits for it to close
	holding chan struct{} // closed when a read starts waiting on hold
}

func (p cpuProc) CPUUsage() (uint64, error) {
	p.c.mu.Lock()
	p.c.ns += 10e6
	ns := p.c.ns
	hold, holding := p.c.hold, p.c.holding
	p.c.hold, p.c.holding = nil, nil
	p.c.mu.Unlock()
	if hold != nil {
		close(holding)
		<-hold
	}
	return ns, nil
}

// Counters adds memory and pids figures to the CPU counter: 1 MB a read
// against a 128 MB limit, and 2 tasks.
func (p cpuProc) Counters() (container.Counters, error) {
	ns, err := p.CPUUsage()
	return container.Counters{CPU: ns, Memory: ns / 10e6 * 1e6, MemoryLimit: 128e6, PIDs: 2, HasMemory: true, HasPIDs: true}, err
}

func newUsageManager(t *testing.T) (*Manager, *fakeHost, *cpuCounters) {
	m, h := newTestManager(t)
	c := &cpuCounters{}
	m.assemble = func(ctx context.Context, r *Runtime, spec Spec) error {
		if err := h.assemble(ctx, r, spec); err != nil {
			return err
		}
		r.mu.Lock()
		r.ct = cpuProc{r.ct.(*fakeProc), c}
		r.mu.Unlock()
		return nil
	}
	return m, h, c
}

// Health lists the runtimes of the table as of the reading, with the latest
// sampled figures: one created since the sample reads 0, one deleted since
// is gone, a pending one is not listed yet.
func TestUsageListsTheTable(t *testing.T) {
	m, h, _ := newUsageManager(t)
	ctx := context.Background()
	if _, err := m.Create(ctx, Spec{RuntimeID: "a", Image: "img", Version: protocol.V5}); err != nil {
		t.Fatal(err)
	}
	if _, per := m.Usage(); len(per) != 1 || per["a"] <= 0 {
		t.Fatalf("usage %v, want a above 0", per)
	}
	if _, err := m.Create(ctx, Spec{RuntimeID: "b", Image: "img", Version: protocol.V5}); err != nil {
		t.Fatal(err)
	}
	if err := m.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	h.hold = make(chan struct{})
	created := make(chan error, 1)
	go func() {
		_, err := m.Create(ctx, Spec{RuntimeID: "pending", Image: "img", Version: protocol.V5})
		created <- err
	}()
	waitFor(t, "the pending creation", func() bool { return h.calls.Load() == 3 })
	_, per := m.Usage()
	if _, ok := per["b"]; len(per) != 1 || !ok {
		t.Errorf("usage %v, want only b", per)
	}
	close(h.hold)
	if err := <-created; err != nil {
		t.Fatal(err)
	}
}

// A cgroup read in progress holds up neither creations and deletions nor
// readings of the figures.
func TestUsageReadsHoldNothingUp(t *testing.T) {
	m, _, c := newUsageManager(t)
	ctx := context.Background()
	if _, err := m.Create(ctx, Spec{RuntimeID: "a", Image: "img", Version: protocol.V5}); err != nil {
		t.Fatal(err)
	}
	m.Usage()
	hold, holding := make(chan struct{}), make(chan struct{})
	c.mu.Lock()
	c.hold, c.holding = hold, holding
	c.mu.Unlock()
	defer close(hold)
	select {
	case <-holding: // the next background sample is stuck in a cgroup read
	case <-time.After(10 * time.Second):
		t.Fatal("no sample taken in the background")
	}
	done := make(chan error, 1)
	go func() {
		_, err := m.Create(ctx, Spec{RuntimeID: "b", Image: "img", Version: protocol.V5})
		if err == nil {
			err = m.Delete(ctx, "a")
		}
		if err == nil {
			if _, per := m.Usage(); len(per) != 1 {
				t.Errorf("usage %v, want b alone", per)
			}
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("creation, deletion or health waited on a cgroup read")
	}
}

// The runtime objects and the keyed health figures carry each ready
// runtime's memory and pids from the latest sample; a runtime the sampler
// cannot read (no cgroup counters) has 0 CPU and no memory or pids figures,
// a pending one no figures at all.
func TestUsageFigures(t *testing.T) {
	m, h, _ := newUsageManager(t)
	ctx := context.Background()
	if _, err := m.Create(ctx, Spec{RuntimeID: "a", Image: "img", Version: protocol.V5}); err != nil {
		t.Fatal(err)
	}
	fig := m.UsageFigures()
	a, ok := fig.Runtimes["a"]
	if len(fig.Runtimes) != 1 || !ok || !a.HasMemory || a.Memory == 0 || a.MemoryLimit != 128e6 || !a.HasPIDs || a.PIDs != 2 {
		t.Fatalf("figures %+v, want a's memory and pids", fig.Runtimes)
	}
	if !fig.HasMemory || fig.MemoryTotal == 0 {
		t.Errorf("host memory %+v, want /proc/meminfo's", fig)
	}
	info, err := m.Get("a")
	if err != nil {
		t.Fatal(err)
	}
	if u := info.Usage; u == nil || u.MemoryLimit != 128e6 || u.PIDs != 2 || u.Memory == 0 {
		t.Fatalf("Get: usage %+v, want a's figures", u)
	}
	// b has no cgroup counters at all (the fake container's CPUUsage says
	// so): it is listed with none.
	m.assemble = h.assemble
	if _, err := m.Create(ctx, Spec{RuntimeID: "b", Image: "img", Version: protocol.V5}); err != nil {
		t.Fatal(err)
	}
	h.hold = make(chan struct{})
	created := make(chan error, 1)
	go func() {
		_, err := m.Create(ctx, Spec{RuntimeID: "pending", Image: "img", Version: protocol.V5})
		created <- err
	}()
	waitFor(t, "the pending creation", func() bool { return h.calls.Load() == 3 })
	byID := map[string]*RuntimeUsage{}
	for _, info := range m.List() {
		byID[info.Name] = info.Usage
	}
	a2, b := byID[m.runtimeName("a")], byID[m.runtimeName("b")]
	if len(byID) != 3 || a2 == nil || !a2.HasMemory || b == nil || *b != (RuntimeUsage{}) || byID[m.runtimeName("pending")] != nil {
		t.Errorf("List: usage %+v, want a's figures, none for b and nothing for the pending one", byID)
	}
	if b, ok := m.UsageFigures().Runtimes["b"]; !ok || b.HasMemory || b.HasPIDs {
		t.Errorf("b in the health figures: %+v, %v; want listed without memory or pids", b, ok)
	}
	close(h.hold)
	if err := <-created; err != nil {
		t.Fatal(err)
	}
}

// cpuOnlyProc is a fake container with the CPU counter alone.
type cpuOnlyProc struct {
	*fakeProc
	c *cpuCounters
}

func (p cpuOnlyProc) CPUUsage() (uint64, error) { return cpuProc(p).CPUUsage() }

// A runtime whose container has a CPU counter but no memory or pids
// counters still has its CPU usage sampled.
func TestUsageOfACPUCounterAlone(t *testing.T) {
	m, h, c := newUsageManager(t)
	m.assemble = func(ctx context.Context, r *Runtime, spec Spec) error {
		if err := h.assemble(ctx, r, spec); err != nil {
			return err
		}
		r.mu.Lock()
		r.ct = cpuOnlyProc{r.ct.(*fakeProc), c}
		r.mu.Unlock()
		return nil
	}
	if _, err := m.Create(context.Background(), Spec{RuntimeID: "a", Image: "img", Version: protocol.V5}); err != nil {
		t.Fatal(err)
	}
	if _, per := m.Usage(); per["a"] <= 0 {
		t.Errorf("usage %v, want a above 0", per)
	}
	if a := m.UsageFigures().Runtimes["a"]; a.CPU <= 0 || a.HasMemory || a.HasPIDs {
		t.Errorf("figures %+v, want CPU alone", a)
	}
}

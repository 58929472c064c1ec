package sandbox

import (
	"context"
	"sync"
	"testing"
	"time"

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

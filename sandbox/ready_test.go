package sandbox

import (
	"context"
	"sync"
	"testing"
	"time"
)

// pollProc is a fakeProc that records when the readiness wait looks at it:
// once a poll.
type pollProc struct {
	*fakeProc
	mu    sync.Mutex
	polls []time.Time
}

func (p *pollProc) Exited() bool {
	p.mu.Lock()
	p.polls = append(p.polls, time.Now())
	p.mu.Unlock()
	return p.fakeProc.Exited()
}

// A runtime that does not listen yet is polled every millisecond for a
// second, then less often: every 4ms at most (a timer never fires early,
// so the bound holds on a loaded machine too).
func TestReadinessPollingBacksOff(t *testing.T) {
	m, h := newTestManager(t)
	h.addr = "127.0.0.1:1" // nothing listens
	var p *pollProc
	m.assemble = func(ctx context.Context, r *Runtime, spec Spec) error {
		if err := h.assemble(ctx, r, spec); err != nil {
			return err
		}
		p = &pollProc{fakeProc: r.ct.(*fakeProc)}
		r.mu.Lock()
		r.ct = p
		r.mu.Unlock()
		return nil
	}
	req := coldExec("slow")
	req.Timeout = 1500 * time.Millisecond
	if _, err := m.Execute(context.Background(), req); KindOf(err) != Timeout {
		t.Fatalf("Execute = %v, want a Timeout", err)
	}
	end := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.polls) == 0 {
		t.Fatal("never polled")
	}
	// 100ms past the first second of polling the delay has doubled
	// twice, to 4ms: from then on polls are 4ms apart at least, but for
	// the two doublings should they come late, and the timeout's look.
	from := p.polls[0].Add(1100 * time.Millisecond)
	window := end.Sub(from)
	if window < 100*time.Millisecond {
		t.Skipf("only %v of polling past the first second", window)
	}
	n := 0
	for _, at := range p.polls {
		if at.After(from) {
			n++
		}
	}
	if n > int(window/(4*time.Millisecond))+10 {
		t.Errorf("%d polls in the %v after the first second, want one per 4ms at most", n, window)
	}
}

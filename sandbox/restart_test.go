package sandbox

import (
	"context"
	"testing"
	"time"

	"executor/sandbox/protocol"
)

// restartProc is a fakeProc that says when it is restarted, with its
// successor.
type restartProc struct {
	*fakeProc
	restarted chan *restartProc
}

func (p *restartProc) Restart() (proc, error) {
	n := &restartProc{fakeProc: newFakeProc(p.restarts), restarted: p.restarted}
	p.restarted <- n
	return n, nil
}

// A main process that keeps exiting is restarted after a backoff that
// doubles from restartBackoff (100ms, then 200ms), as Docker's does.
func TestRestartBackoff(t *testing.T) {
	m, h := newTestManager(t)
	restarted := make(chan *restartProc, 1)
	m.assemble = func(ctx context.Context, r *Runtime, spec Spec) error {
		if err := h.assemble(ctx, r, spec); err != nil {
			return err
		}
		r.mu.Lock()
		r.ct = &restartProc{fakeProc: r.ct.(*fakeProc), restarted: restarted}
		r.mu.Unlock()
		return nil
	}
	if _, err := m.Create(context.Background(), Spec{RuntimeID: "crash", Image: "img", Version: protocol.V5, RestartPolicy: "always"}); err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	p := m.table["crash"].rt.current().(*restartProc)
	m.mu.Unlock()
	for i, want := range []time.Duration{restartBackoff, 2 * restartBackoff} {
		exited := time.Now()
		p.end(1)
		select {
		case p = <-restarted:
		case <-time.After(10 * time.Second):
			t.Fatalf("exit %d: no restart", i+1)
		}
		took := time.Since(exited)
		if took < want {
			t.Errorf("restart %d after %v, want a backoff of %v", i+1, took, want)
		}
		// The first restart must not wait as long as a later one
		// (4 x restartBackoff): the backoff starts at restartBackoff.
		if i == 0 && took >= 4*restartBackoff {
			t.Errorf("first restart after %v, want about %v", took, want)
		}
	}
}

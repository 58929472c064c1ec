package sandbox

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
)

// oomProc is a fakeProc with the container's OOM kill bookkeeping: kills
// counted in its cgroup, and those judged (survived by the main process).
type oomProc struct {
	*fakeProc
	mu            sync.Mutex
	kills, judged int
}

func (p *oomProc) kill() { p.mu.Lock(); p.kills++; p.mu.Unlock() }

func (p *oomProc) OOMKillsPending() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.kills > p.judged
}

func (p *oomProc) MarkOOM() oomMark {
	p.mu.Lock()
	defer p.mu.Unlock()
	return oomCount{p, p.kills}
}

type oomCount struct {
	p     *oomProc
	kills int
}

func (m oomCount) Survived() {
	m.p.mu.Lock()
	m.p.judged = max(m.p.judged, m.kills)
	m.p.mu.Unlock()
}

// An execution the runtime answered shows its main process outlived the
// OOM kills counted before it (a child was the victim): they can no longer
// explain a later failure. A kill during the execution stays open.
func TestAnsweredExecutionSettlesEarlierOOMKills(t *testing.T) {
	tests := []struct {
		name        string
		before      int
		during      bool
		wantPending bool
	}{
		{name: "no kill"},
		{name: "a kill before", before: 1},
		{name: "a kill during", during: true, wantPending: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var current atomic.Pointer[oomProc]
			m, h := newTestManagerServing(t, httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tt.during {
					current.Load().kill()
				}
				_, _ = io.WriteString(w, "ok")
			})))
			m.assemble = func(ctx context.Context, r *Runtime, spec Spec) error {
				if err := h.assemble(ctx, r, spec); err != nil {
					return err
				}
				p := &oomProc{fakeProc: r.ct.(*fakeProc), kills: tt.before}
				current.Store(p)
				r.mu.Lock()
				r.ct = p
				r.mu.Unlock()
				return nil
			}
			if _, err := m.Execute(context.Background(), coldExec("oom")); err != nil {
				t.Fatal(err)
			}
			if got := current.Load().OOMKillsPending(); got != tt.wantPending {
				t.Errorf("OOM kills pending after the execution: %v, want %v", got, tt.wantPending)
			}
		})
	}
}

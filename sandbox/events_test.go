package sandbox

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"executor/sandbox/container"
	"executor/sandbox/protocol"
)

// eventLog records the Observer events a Manager reports, as text.
type eventLog struct {
	NopObserver
	mu     sync.Mutex
	events []string
}

func (l *eventLog) add(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, fmt.Sprintf(format, args...))
}

func (l *eventLog) Stage(_ context.Context, name string, _ time.Time, _ time.Duration) {
	l.add("stage %s", name)
}

func (l *eventLog) Execution(_ context.Context, v protocol.Version, status int, _ time.Duration, err error) {
	l.add("execution %s %d %v", v, status, KindOf(err))
}

func (l *eventLog) Build(_ context.Context, _ time.Duration, err error) {
	l.add("build %v", KindOf(err))
}
func (l *eventLog) RuntimeExited(oom bool)       { l.add("exited oom=%v", oom) }
func (l *eventLog) RuntimeRestarted()            { l.add("restarted") }
func (l *eventLog) RuntimeRemoved(reason string) { l.add("removed %s", reason) }

func (l *eventLog) snapshot() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.events)
}

// waitFor waits until the log holds want (events of supervising goroutines
// come asynchronously).
func (l *eventLog) waitFor(t *testing.T, want []string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !slices.Equal(l.snapshot(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("events %q, want %q", l.snapshot(), want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestManagerReportsEvents(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		run  func(t *testing.T, m *Manager, h *fakeHost)
		want []string
	}{
		{"a cold execution waits for readiness, a warm one does not", func(t *testing.T, m *Manager, h *fakeHost) {
			for range 2 {
				if _, err := m.Execute(ctx, coldExec("a")); err != nil {
					t.Fatal(err)
				}
			}
		}, []string{"stage readiness", "execution v5 200 kind(0)", "execution v5 200 kind(0)"}},
		{"an execution of no runtime", func(t *testing.T, m *Manager, h *fakeHost) {
			if _, err := m.Execute(ctx, ExecRequest{RuntimeID: "none", Timeout: time.Second}); KindOf(err) != NotFound {
				t.Fatal(err)
			}
		}, []string{"execution  0 not found"}},
		{"a build, then its removal", func(t *testing.T, m *Manager, h *fakeHost) {
			if _, err := m.Create(ctx, Spec{RuntimeID: "b", Image: "img", Version: protocol.V5, Command: "true", Remove: true, Timeout: time.Second}); err != nil {
				t.Fatal(err)
			}
		}, []string{"build kind(0)", "removed deleted"}},
		{"a restart", func(t *testing.T, m *Manager, h *fakeHost) {
			if _, err := m.Create(ctx, Spec{RuntimeID: "r", Image: "img", Version: protocol.V5, RestartPolicy: "always"}); err != nil {
				t.Fatal(err)
			}
			h.proc(0).end(1)
		}, []string{"exited oom=false", "restarted"}},
		{"an exit for good", func(t *testing.T, m *Manager, h *fakeHost) {
			if _, err := m.Create(ctx, Spec{RuntimeID: "x", Image: "img", Version: protocol.V5, RestartPolicy: "no"}); err != nil {
				t.Fatal(err)
			}
			h.proc(0).end(1)
		}, []string{"exited oom=false", "removed exited"}},
		{"an exit for good by the OOM killer", func(t *testing.T, m *Manager, h *fakeHost) {
			if _, err := m.Create(ctx, Spec{RuntimeID: "x", Image: "img", Version: protocol.V5, RestartPolicy: "no"}); err != nil {
				t.Fatal(err)
			}
			h.proc(0).endWith(container.ExitStatus{Code: 137, Signal: "SIGKILL", OOMKilled: true})
		}, []string{"exited oom=true", "removed oom"}},
		{"maintenance and delete", func(t *testing.T, m *Manager, h *fakeHost) {
			for _, id := range []string{"idle", "del"} {
				if _, err := m.Create(ctx, Spec{RuntimeID: id, Image: "img", Version: protocol.V5}); err != nil {
					t.Fatal(err)
				}
			}
			if pending, ready := m.Count(); pending != 0 || ready != 2 {
				t.Errorf("Count = %d pending, %d ready; want 0, 2", pending, ready)
			}
			if err := m.Delete(ctx, "del"); err != nil {
				t.Fatal(err)
			}
			m.reapIdle(ctx, time.Now().Add(time.Hour))
			if pending, ready := m.Count(); pending != 0 || ready != 0 {
				t.Errorf("Count = %d pending, %d ready; want none", pending, ready)
			}
		}, []string{"removed deleted", "removed maintenance"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, h := newTestManager(t)
			l := &eventLog{}
			m.cfg.Observer = l
			tc.run(t, m, h)
			l.waitFor(t, tc.want)
		})
	}
}

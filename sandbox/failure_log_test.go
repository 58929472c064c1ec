package sandbox

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"executor/sandbox/protocol"
)

// logBuffer is what a Manager logs, as text lines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) lines(level string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range strings.Split(l.b.String(), "\n") {
		if strings.Contains(line, "level="+level+" ") {
			out = append(out, line)
		}
	}
	return out
}

// captureLog makes m log to the returned buffer, from Info up; it must be
// called before m makes any runtime (runtimes keep the logger they got).
func captureLog(m *Manager) *logBuffer {
	l := &logBuffer{}
	m.log = slog.New(slog.NewTextHandler(l, nil))
	return l
}

// Removals and cleanups log an error when they fail, and only then: an
// operator's error log holds real failures.
func TestRemovalsLogOnlyFailures(t *testing.T) {
	ctx := context.Background()
	spec := Spec{RuntimeID: "rt", Image: "img", Version: protocol.V5}
	tests := []struct {
		name       string
		destroyErr error
		dir        string // the runtime's directory, below a temporary one
		run        func(t *testing.T, m *Manager, h *fakeHost)
		want       []string // the error lines, in order, each by a part of it
		cause      string   // in each error line
	}{
		{name: "a built runtime removed", run: func(t *testing.T, m *Manager, h *fakeHost) {
			s := spec
			s.Command, s.Remove, s.Timeout = "make", true, time.Second
			if _, err := m.Create(ctx, s); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "a failed creation cleaned up", run: func(t *testing.T, m *Manager, h *fakeHost) {
			h.fail = errors.New("no image")
			if _, err := m.Create(ctx, spec); err == nil {
				t.Fatal("creation did not fail")
			}
		}},
		{name: "a failed build cleaned up", run: func(t *testing.T, m *Manager, h *fakeHost) {
			h.execCode = 2
			s := spec
			s.Command, s.Timeout = "make", time.Second
			if _, err := m.Create(ctx, s); KindOf(err) != BuildFailed {
				t.Fatalf("Create = %v, want BuildFailed", err)
			}
		}},
		{name: "a deleted runtime torn down", run: func(t *testing.T, m *Manager, h *fakeHost) {
			if _, err := m.Create(ctx, spec); err != nil {
				t.Fatal(err)
			}
			if err := m.Delete(ctx, "rt"); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "a deleted runtime's teardown failed", destroyErr: errors.New("device busy"), run: func(t *testing.T, m *Manager, h *fakeHost) {
			if _, err := m.Create(ctx, spec); err != nil {
				t.Fatal(err)
			}
			if err := m.Delete(ctx, "rt"); err != nil {
				t.Fatal(err)
			}
		}, want: []string{"runtime removal incomplete", "deleted runtime's teardown incomplete"}, cause: "device busy"},
		// os.RemoveAll refuses a path ending in "." (EINVAL), whoever runs it.
		{name: "a deleted runtime's directory not removed", dir: ".", run: func(t *testing.T, m *Manager, h *fakeHost) {
			if _, err := m.Create(ctx, spec); err != nil {
				t.Fatal(err)
			}
			if err := m.Delete(ctx, "rt"); err != nil {
				t.Fatal(err)
			}
		}, want: []string{"runtime removal incomplete", "deleted runtime's teardown incomplete"}, cause: "invalid argument"},
		{name: "a built runtime's removal failed", destroyErr: errors.New("device busy"), run: func(t *testing.T, m *Manager, h *fakeHost) {
			s := spec
			s.Command, s.Remove, s.Timeout = "make", true, time.Second
			if _, err := m.Create(ctx, s); err != nil {
				t.Fatal(err)
			}
		}, want: []string{"runtime removal incomplete", "remove built runtime"}, cause: "device busy"},
		{name: "an exited runtime removed", run: func(t *testing.T, m *Manager, h *fakeHost) {
			s := spec
			s.RestartPolicy = "no"
			if _, err := m.Create(ctx, s); err != nil {
				t.Fatal(err)
			}
			h.proc(0).end(1)
			waitFor(t, "the removal", h.proc(0).isDestroyed)
		}},
		{name: "an exited runtime's removal failed", destroyErr: errors.New("device busy"), run: func(t *testing.T, m *Manager, h *fakeHost) {
			s := spec
			s.RestartPolicy = "no"
			if _, err := m.Create(ctx, s); err != nil {
				t.Fatal(err)
			}
			h.proc(0).end(1)
			waitFor(t, "the exited runtime to leave the table", func() bool { _, err := m.Get("rt"); return err != nil })
		}, want: []string{"runtime removal incomplete", "remove exited runtime"}, cause: "device busy"},
		{name: "a failed build's cleanup failed", destroyErr: errors.New("device busy"), run: func(t *testing.T, m *Manager, h *fakeHost) {
			h.execCode = 2
			s := spec
			s.Command, s.Timeout = "make", time.Second
			if _, err := m.Create(ctx, s); KindOf(err) != BuildFailed {
				t.Fatalf("Create = %v, want BuildFailed", err)
			}
		}, want: []string{"cleanup after failed creation"}, cause: "device busy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, h := newTestManager(t)
			h.destroyErr = tt.destroyErr
			if tt.dir != "" {
				h.dir = t.TempDir() + "/" + tt.dir // not cleaned: "." stays
			}
			l := captureLog(m)
			tt.run(t, m, h)
			if err := m.Close(ctx); err != nil && tt.want == nil {
				t.Fatal(err)
			}
			// Removals in the background log when they end.
			waitFor(t, "the error lines", func() bool { return len(l.lines("ERROR")) >= len(tt.want) })
			got := l.lines("ERROR")
			ok := len(got) == len(tt.want)
			for i := 0; ok && i < len(got); i++ {
				ok = strings.Contains(got[i], tt.want[i]) && strings.Contains(got[i], tt.cause)
			}
			if !ok {
				t.Errorf("error lines:\n%s\nwant one each saying %q", strings.Join(got, "\n"), tt.want)
			}
		})
	}
}

// Maintenance says what it removed, and says nothing when nothing was
// idle.
func TestMaintenanceLogsRemovals(t *testing.T) {
	tests := []struct {
		name       string
		runtimes   int
		destroyErr error
		want       string // "": no line
	}{
		{name: "nothing idle", runtimes: 0},
		{name: "two removed", runtimes: 2, want: "removed=2 candidates=2"},
		{name: "a removal failed", runtimes: 1, destroyErr: errors.New("device busy"), want: "removed=0 candidates=1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, h := newTestManager(t)
			h.destroyErr = tt.destroyErr
			l := captureLog(m)
			for i := range tt.runtimes {
				if _, err := m.Create(context.Background(), Spec{RuntimeID: string(rune('a' + i)), Image: "img", Version: protocol.V5}); err != nil {
					t.Fatal(err)
				}
			}
			m.reapIdle(context.Background(), time.Now().Add(time.Hour))
			var got []string
			for _, line := range l.lines("INFO") {
				if strings.Contains(line, "maintenance removed") {
					got = append(got, line)
				}
			}
			switch {
			case tt.want == "" && len(got) != 0:
				t.Errorf("maintenance logged %q with nothing to remove", got)
			case tt.want != "" && (len(got) != 1 || !strings.Contains(got[0], tt.want)):
				t.Errorf("maintenance logged %q, want one line saying %q", got, tt.want)
			}
		})
	}
}

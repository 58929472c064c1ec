package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"executor/sandbox/container"
	"executor/sandbox/protocol"
)

// The table's tests run without root: runtimes are assembled by a fake that
// points them at an HTTP server in the test and gives them a fake container.

// fakeProc is a container whose main process ends when the test says so.
type fakeProc struct {
	mu        sync.Mutex
	done      chan struct{}
	exit      container.ExitStatus
	destroyed bool
	restarts  *atomic.Int32
	execCode  int
	execOut   string
	out       string // what the main process printed
	// destroyGate, when set, holds Destroy until it is closed;
	// destroying counts the Destroy calls it holds.
	destroyGate chan struct{}
	destroying  *atomic.Int32
	destroyErr  error // what Destroy returns
}

func newFakeProc(restarts *atomic.Int32) *fakeProc {
	return &fakeProc{done: make(chan struct{}), restarts: restarts}
}

// end makes the main process exit with code.
func (p *fakeProc) end(code int) { p.endWith(container.ExitStatus{Code: code}) }

// endWith makes the main process exit with st.
func (p *fakeProc) endWith(st container.ExitStatus) {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.done:
	default:
		p.exit = st
		close(p.done)
	}
}

func (p *fakeProc) Done() <-chan struct{} { return p.done }
func (p *fakeProc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}
func (p *fakeProc) Exit() container.ExitStatus { p.mu.Lock(); defer p.mu.Unlock(); return p.exit }
func (p *fakeProc) Output() string             { return p.out }
func (p *fakeProc) Stop(time.Duration)         { p.end(137) }
func (p *fakeProc) Destroy() error {
	p.mu.Lock()
	gate, n := p.destroyGate, p.destroying
	p.mu.Unlock()
	if gate != nil {
		if n != nil {
			n.Add(1)
			defer n.Add(-1)
		}
		<-gate
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.destroyed = true
	return p.destroyErr
}
func (p *fakeProc) isDestroyed() bool { p.mu.Lock(); defer p.mu.Unlock(); return p.destroyed }
func (p *fakeProc) Restart() (proc, error) {
	p.restarts.Add(1)
	return newFakeProc(p.restarts), nil
}
func (p *fakeProc) Exec(_ context.Context, _ []string, stdout, _ io.Writer) (int, error) {
	// In pipe-sized chunks, as a process's output arrives.
	for out := p.execOut; len(out) > 0; {
		n := min(len(out), 64<<10)
		_, _ = io.WriteString(stdout, out[:n])
		out = out[n:]
	}
	return p.execCode, nil
}
func (p *fakeProc) CPUUsage() (uint64, error) { return 0, container.ErrNoCPUCounter }
func (p *fakeProc) OOMKillsPending() bool     { return false }
func (p *fakeProc) MarkOOM() oomMark          { return noMark{} }

type noMark struct{}

func (noMark) Survived() {}

// fakeHost assembles runtimes for a test.
type fakeHost struct {
	t        *testing.T
	addr     string
	calls    atomic.Int32
	restarts atomic.Int32
	// hold, when set, blocks assembly until it is closed or ctx ends.
	hold    chan struct{}
	entered chan struct{}
	fail    error
	// out is what each main process has printed.
	out string
	// execOut and execCode are what each process's commands print and
	// exit with (a build's among them); destroyErr is what its Destroy
	// returns.
	execOut    string
	execCode   int
	destroyErr error
	// dir, when set, is each runtime's directory.
	dir string
	// coldDone, when set, is each runtime's end of its cold start, as the
	// prewarm pool's take gives it.
	coldDone func()

	mu    sync.Mutex
	procs []*fakeProc
}

func (h *fakeHost) assemble(ctx context.Context, r *Runtime, spec Spec) error {
	h.calls.Add(1)
	if h.entered != nil {
		h.entered <- struct{}{}
	}
	if h.hold != nil {
		select {
		case <-h.hold:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if h.fail != nil {
		return h.fail
	}
	p := newFakeProc(&h.restarts)
	p.out, p.execOut, p.execCode, p.destroyErr = h.out, h.execOut, h.execCode, h.destroyErr
	h.mu.Lock()
	h.procs = append(h.procs, p)
	h.mu.Unlock()
	r.mu.Lock()
	r.addr, r.ct = h.addr, p
	if h.coldDone != nil {
		r.coldDone = h.coldDone
	}
	r.mu.Unlock()
	if h.dir != "" {
		r.Dir = h.dir
	}
	// What process() would run for an image without entrypoint or cmd.
	r.command = spec.Version.Command(nil, nil, spec.RuntimeEntrypoint, "sh", spec.Command != "")
	return nil
}

func (h *fakeHost) proc(i int) *fakeProc {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.procs[i]
}

// newTestManager is a Manager whose runtimes answer every v5 execution with
// 200 and the body "ok".
func newTestManager(t *testing.T) (*Manager, *fakeHost) {
	t.Helper()
	return newTestManagerServing(t, httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("x-open-runtimes-secret") == "" {
			http.Error(w, "no secret", http.StatusUnauthorized)
			return
		}
		_, _ = io.WriteString(w, "ok")
	})))
}

// newTestManagerServing is newTestManager with srv as every runtime's
// server; it closes srv when the test ends.
func newTestManagerServing(t *testing.T, srv *httptest.Server) (*Manager, *fakeHost) {
	t.Helper()
	t.Cleanup(srv.Close)
	m := newManager(Config{
		Hostname:      "test",
		RetryAttempts: 1,
		RetryDelay:    time.Millisecond,
		Logger:        slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	h := &fakeHost{t: t, addr: strings.TrimPrefix(srv.URL, "http://")}
	m.assemble = h.assemble
	t.Cleanup(func() { _ = m.Close(context.Background()) })
	return m, h
}

func coldExec(id string) ExecRequest {
	return ExecRequest{
		RuntimeID: id,
		Cold:      &Spec{Image: "img", Version: protocol.V5, RestartPolicy: "no"},
		Method:    http.MethodGet,
		Path:      "/",
		Timeout:   5 * time.Second,
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// Concurrent executions of a missing runtime create it once and all run.
func TestExecutionsShareOneCreation(t *testing.T) {
	m, h := newTestManager(t)
	h.hold = make(chan struct{})
	const n = 8
	errs := make(chan error, n)
	for range n {
		go func() {
			res, err := m.Execute(context.Background(), coldExec("one"))
			if err == nil && string(res.Body) != "ok" {
				err = fmt.Errorf("body %q", res.Body)
			}
			errs <- err
		}()
	}
	waitFor(t, "the creation", func() bool { return h.calls.Load() == 1 })
	time.Sleep(20 * time.Millisecond) // the others find the pending row
	close(h.hold)
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got := h.calls.Load(); got != 1 {
		t.Fatalf("runtime assembled %d times, want 1", got)
	}
	if got := len(m.List()); got != 1 {
		t.Fatalf("%d runtimes in the table, want 1", got)
	}
}

// Delete during a creation cancels it: the creation's waiters fail, nothing
// stays in the table, and the id can be created again.
func TestDeleteDuringCreation(t *testing.T) {
	m, h := newTestManager(t)
	h.hold = make(chan struct{}) // never closed: only cancellation ends assembly
	h.entered = make(chan struct{}, 1)
	done := make(chan error, 1)
	go func() {
		_, err := m.Create(context.Background(), Spec{RuntimeID: "del", Image: "img", Version: protocol.V5})
		done <- err
	}()
	<-h.entered
	if info, err := m.Get("del"); err != nil || info.Status != "pending" {
		t.Fatalf("Get during creation = %+v, %v; want pending", info, err)
	}
	if err := m.Delete(context.Background(), "del"); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Create = %v, want cancelled", err)
	}
	if _, err := m.Get("del"); KindOf(err) != NotFound {
		t.Fatalf("Get after delete = %v, want NotFound", err)
	}
	h.hold, h.entered = nil, nil
	if _, err := m.Create(context.Background(), Spec{RuntimeID: "del", Image: "img", Version: protocol.V5}); err != nil {
		t.Fatalf("create again: %v", err)
	}
}

// A failed creation leaves the table, every waiter gets its error, and the
// next request creates anew.
func TestFailedCreationSettles(t *testing.T) {
	m, h := newTestManager(t)
	boom := errors.New("boom")
	h.fail = boom
	h.hold = make(chan struct{})
	errs := make(chan error, 3)
	for range 3 {
		go func() {
			_, err := m.Execute(context.Background(), coldExec("bad"))
			errs <- err
		}()
	}
	waitFor(t, "the creation", func() bool { return h.calls.Load() == 1 })
	time.Sleep(20 * time.Millisecond)
	close(h.hold)
	for range 3 {
		if err := <-errs; !errors.Is(err, boom) {
			t.Fatalf("Execute = %v, want %v", err, boom)
		}
	}
	if got := len(m.List()); got != 0 {
		t.Fatalf("%d runtimes left in the table", got)
	}
	h.fail, h.hold = nil, nil
	if _, err := m.Execute(context.Background(), coldExec("bad")); err != nil {
		t.Fatal(err)
	}
	if got := h.calls.Load(); got != 2 {
		t.Fatalf("assembled %d times, want 2", got)
	}
}

// A creation's id is taken while pending and once ready; a closing
// executor creates nothing.
func TestInsertRefusals(t *testing.T) {
	m, h := newTestManager(t)
	h.hold = make(chan struct{})
	h.entered = make(chan struct{}, 1)
	spec := Spec{RuntimeID: "dup", Image: "img", Version: protocol.V5}
	done := make(chan error, 1)
	go func() { _, err := m.Create(context.Background(), spec); done <- err }()
	<-h.entered
	if _, err := m.Create(context.Background(), spec); KindOf(err) != Creating {
		t.Fatalf("Create while pending = %v, want Creating", err)
	}
	close(h.hold)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := m.Create(context.Background(), spec); KindOf(err) != Exists {
		t.Fatalf("Create when ready = %v, want Exists", err)
	}
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	spec.RuntimeID = "late"
	if _, err := m.Create(context.Background(), spec); KindOf(err) != ShuttingDown {
		t.Fatalf("Create after Close = %v, want ShuttingDown", err)
	}
	if !h.proc(0).isDestroyed() {
		t.Fatal("Close left a container")
	}
}

// Maintenance never removes a runtime with work in flight; it removes it
// once the work ended and the runtime has been idle long enough.
func TestClaimHoldsOffMaintenance(t *testing.T) {
	m, h := newTestManager(t)
	if _, err := m.Create(context.Background(), Spec{RuntimeID: "idle", Image: "img", Version: protocol.V5}); err != nil {
		t.Fatal(err)
	}
	e, _, err := m.ensure(context.Background(), ExecRequest{RuntimeID: "idle"}, time.Now().Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	m.reapIdle(context.Background(), time.Now().Add(time.Hour))
	if _, err := m.Get("idle"); err != nil {
		t.Fatalf("maintenance removed a runtime in use: %v", err)
	}
	e.rt.end()
	m.reapIdle(context.Background(), time.Now().Add(-time.Hour))
	if _, err := m.Get("idle"); err != nil {
		t.Fatalf("maintenance removed a runtime used within the threshold: %v", err)
	}
	m.reapIdle(context.Background(), time.Now().Add(time.Hour))
	if _, err := m.Get("idle"); KindOf(err) != NotFound {
		t.Fatalf("idle runtime still there: %v", err)
	}
	if !h.proc(0).isDestroyed() {
		t.Fatal("maintenance left the container")
	}
}

// The restart policy decides whether an exited main process comes back or
// the runtime leaves the table.
func TestRestartPolicy(t *testing.T) {
	tests := []struct {
		policy  string
		code    int
		restart bool
	}{
		{"no", 0, false},
		{"no", 1, false},
		{"", 1, false},
		{"always", 0, true},
		{"always", 1, true},
		{"unless-stopped", 0, true},
		{"on-failure", 0, false},
		{"on-failure", 3, true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%d", tt.policy, tt.code), func(t *testing.T) {
			m, h := newTestManager(t)
			spec := Spec{RuntimeID: "rp", Image: "img", Version: protocol.V5, RestartPolicy: tt.policy}
			if _, err := m.Create(context.Background(), spec); err != nil {
				t.Fatal(err)
			}
			h.proc(0).end(tt.code)
			if tt.restart {
				waitFor(t, "the restart", func() bool { return h.restarts.Load() == 1 })
				if _, err := m.Get("rp"); err != nil {
					t.Fatalf("restarted runtime left the table: %v", err)
				}
				return
			}
			waitFor(t, "the removal", func() bool { _, err := m.Get("rp"); return err != nil })
			waitFor(t, "the container's removal", h.proc(0).isDestroyed)
			if got := h.restarts.Load(); got != 0 {
				t.Fatalf("restarted %d times", got)
			}
		})
	}
}

// A main process that ended for good before listening fails the execution
// at once, with its exit status, rather than at the deadline.
func TestExitBeforeListening(t *testing.T) {
	m, h := newTestManager(t)
	h.addr = "127.0.0.1:1" // nothing listens
	if _, err := m.Create(context.Background(), Spec{RuntimeID: "dead", Image: "img", Version: protocol.V5, RestartPolicy: "no"}); err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	r := m.table["dead"].rt
	m.mu.Unlock()
	r.mu.Lock()
	r.onExit = func(*Runtime) {} // keep it in the table for the execution
	r.mu.Unlock()
	h.proc(0).end(2)
	start := time.Now()
	_, err := m.Execute(context.Background(), ExecRequest{RuntimeID: "dead", Timeout: 5 * time.Second})
	if KindOf(err) != RuntimeFailed || !strings.Contains(err.Error(), "exit code 2") {
		t.Fatalf("Execute = %v, want RuntimeFailed naming exit code 2", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("took %v: waited for the deadline", took)
	}
}

// A command runs in the runtime's shell and a failing one is CommandFailed.
func TestCommand(t *testing.T) {
	m, h := newTestManager(t)
	if _, err := m.Create(context.Background(), Spec{RuntimeID: "cmd", Image: "img", Version: protocol.V5}); err != nil {
		t.Fatal(err)
	}
	p := h.proc(0)
	p.execOut = "hello\n"
	out, err := m.Command(context.Background(), "cmd", "echo hello", time.Second)
	if err != nil || out != "hello\n" {
		t.Fatalf("Command = %q, %v", out, err)
	}
	p.execCode = 1
	if _, err := m.Command(context.Background(), "cmd", "false", time.Second); KindOf(err) != CommandFailed {
		t.Fatalf("failing command = %v, want CommandFailed", err)
	}
	if _, err := m.Command(context.Background(), "nope", "true", time.Second); KindOf(err) != NotFound {
		t.Fatalf("command in a missing runtime = %v, want NotFound", err)
	}
}

// A runtime that never listens times out with what it runs and last printed,
// and, when it was given nothing to run, why it only idles.
func TestNotReadySaysWhy(t *testing.T) {
	var many []string
	for i := 1; i <= 15; i++ {
		many = append(many, fmt.Sprintf("line %d", i))
	}
	tests := []struct {
		name              string
		version           protocol.Version
		runtimeEntrypoint string
		out               string
		want, notWant     []string
	}{
		{
			name:    "v5 without runtimeEntrypoint idles",
			version: protocol.V5,
			want: []string{"Timed out waiting for runtime: nothing accepted connections on port 3000 within the 300ms timeout",
				"Its command: tail -f /dev/null (running)",
				"No runtimeEntrypoint was given and protocol v5 does not run the image's own entrypoint or cmd", "It printed nothing."},
		},
		{
			name:    "v2 image without a cmd idles",
			version: protocol.V2,
			want:    []string{"tail -f /dev/null", "No runtimeEntrypoint was given and the image has no entrypoint or cmd"},
			notWant: []string{"protocol v2 does not"},
		},
		{
			name:              "a server on the wrong port says so",
			version:           protocol.V5,
			runtimeEntrypoint: "echo 'listening on 8080'; sleep 30",
			out:               "listening on 8080\n",
			want:              []string{`Its command: sh -c 'echo '\''listening on 8080'\''; sleep 30'`, "Last output:\nlistening on 8080"},
			notWant:           []string{"No runtimeEntrypoint", "printed nothing"},
		},
		{
			name:              "only the last lines, each cut short",
			version:           protocol.V5,
			runtimeEntrypoint: "chatty",
			out:               strings.Join(many, "\n") + "\n" + strings.Repeat("x", 1000) + "\n",
			want:              []string{"Last output:\nline 7\n", "line 15\n" + strings.Repeat("x", outputTailLineBytes) + "..."},
			notWant:           []string{"line 6\n", strings.Repeat("x", outputTailLineBytes+1)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, h := newTestManager(t)
			h.addr = "127.0.0.1:1" // nothing listens
			h.out = tt.out
			req := coldExec("never")
			req.Cold.Version, req.Cold.RuntimeEntrypoint = tt.version, tt.runtimeEntrypoint
			req.Timeout = 300 * time.Millisecond
			start := time.Now()
			_, err := m.Execute(context.Background(), req)
			if took := time.Since(start); took > 2*time.Second {
				t.Fatalf("took %v past a 300ms timeout", took)
			}
			var se *Error
			if !errors.As(err, &se) || se.Kind != Timeout {
				t.Fatalf("Execute = %v, want a Timeout", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(se.Message, w) {
					t.Errorf("message lacks %q:\n%s", w, se.Message)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(se.Message, w) {
					t.Errorf("message has %q:\n%s", w, se.Message)
				}
			}
		})
	}
}

// An execution whose runtime is still being created at its deadline says
// so, and the abandoned creation leaves the table.
func TestCreationTimeoutSaysWhy(t *testing.T) {
	m, h := newTestManager(t)
	h.hold = make(chan struct{}) // never closed: assembly outlasts the deadline
	req := coldExec("slow-pull")
	req.Timeout = 200 * time.Millisecond
	_, err := m.Execute(context.Background(), req)
	var se *Error
	if !errors.As(err, &se) || se.Kind != Timeout || !strings.Contains(se.Message, "still being created") ||
		!strings.Contains(se.Message, "OPR_EXECUTOR_IMAGES") {
		t.Fatalf("Execute = %v, want a Timeout saying the runtime was still being created", err)
	}
	// How long it waited, to a tenth of a second.
	if !regexp.MustCompile(`\) \d+(\.\d)?m?s after it began`).MatchString(se.Message) {
		t.Errorf("message does not say how long the creation ran, rounded: %s", se.Message)
	}
	waitFor(t, "the abandoned creation to leave the table", func() bool { return len(m.List()) == 0 })
}

// Delete answers once the runtime has left the table, without waiting for
// its teardown; the id can be created again at once, and Close waits for
// the teardown still under way.
func TestDeleteTearsDownInTheBackground(t *testing.T) {
	m, h := newTestManager(t)
	ctx := context.Background()
	if _, err := m.Create(ctx, Spec{RuntimeID: "bg", Image: "img", Version: protocol.V5}); err != nil {
		t.Fatal(err)
	}
	p := h.proc(0)
	gate := make(chan struct{})
	p.mu.Lock()
	p.destroyGate = gate
	p.mu.Unlock()
	deleted := make(chan error, 1)
	go func() { deleted <- m.Delete(ctx, "bg") }()
	select {
	case err := <-deleted:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		close(gate)
		t.Fatal("Delete waited for the container's teardown")
	}
	if _, err := m.Get("bg"); KindOf(err) != NotFound {
		t.Fatalf("Get after delete = %v, want NotFound", err)
	}
	if _, err := m.Create(ctx, Spec{RuntimeID: "bg", Image: "img", Version: protocol.V5}); err != nil {
		t.Fatalf("create the id again while the old runtime is torn down: %v", err)
	}
	closed := make(chan error, 1)
	go func() { closed <- m.Close(ctx) }()
	select {
	case <-closed:
		t.Fatal("Close returned while a deleted runtime was still being torn down")
	case <-time.After(100 * time.Millisecond):
	}
	close(gate)
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return after the teardown ended")
	}
	if !p.isDestroyed() {
		t.Error("the deleted runtime's container was never destroyed")
	}
}

// A burst of deletes kills every deleted runtime's processes at once, but
// tears down at most teardownSlots of them at a time: the rest of the
// work waits, so that requests still being served keep the CPUs.
func TestDeleteBoundsTeardowns(t *testing.T) {
	m, h := newTestManager(t)
	m.teardownSlots = make(chan struct{}, 1)
	ctx := context.Background()
	gate := make(chan struct{})
	open := sync.OnceFunc(func() { close(gate) })
	defer open() // a failed check must not leave Close waiting on the gate
	var destroying atomic.Int32
	var procs []*fakeProc
	for i := range 3 {
		id := fmt.Sprintf("burst-%d", i)
		if _, err := m.Create(ctx, Spec{RuntimeID: id, Image: "img", Version: protocol.V5}); err != nil {
			t.Fatal(err)
		}
		p := h.proc(i)
		p.mu.Lock()
		p.destroyGate, p.destroying = gate, &destroying
		p.mu.Unlock()
		procs = append(procs, p)
	}
	for i := range procs {
		if err := m.Delete(ctx, fmt.Sprintf("burst-%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	for i, p := range procs {
		select {
		case <-p.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("runtime %d still runs while an earlier teardown holds the slot", i)
		}
	}
	// One teardown holds the slot, blocked in Destroy; the others wait
	// for it and have not begun theirs.
	deadline := time.Now().Add(10 * time.Second)
	for destroying.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // room for a wrong second teardown to start
	if got := destroying.Load(); got != 1 {
		t.Fatalf("%d teardowns under way at once, want 1 (one slot)", got)
	}
	open()
	if err := m.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for i, p := range procs {
		if !p.isDestroyed() {
			t.Errorf("runtime %d was never destroyed", i)
		}
	}
}

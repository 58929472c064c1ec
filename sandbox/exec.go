package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"time"

	"executor/sandbox/protocol"
	"executor/storage/safefs"
)

// Execute forwards one execution to its runtime, creating the runtime first
// when it does not exist and the request says how. Concurrent executions of a
// runtime being created share that one creation. req.Timeout must be set.
func (m *Manager) Execute(ctx context.Context, req ExecRequest) (res *ExecResult, err error) {
	began := time.Now()
	deadline := began.Add(req.Timeout)
	var version protocol.Version // the runtime's, once known; a cold request's until then
	if req.Cold != nil {
		version = req.Cold.Version
	}
	defer func() {
		status := 0
		if res != nil {
			status = res.StatusCode
		}
		m.cfg.Observer.Execution(ctx, version, status, time.Since(began), err)
	}()
	e, created, err := m.ensure(ctx, req, deadline)
	if err != nil {
		return nil, err
	}
	rt := e.rt // claimed by ensure
	defer rt.end()
	version = rt.Version

	start := time.Now() // billable time starts before the readiness wait, as in the reference
	err = rt.waitReady(ctx, deadline, req.Timeout)
	// The cold start ends with its execution's reply, not at readiness:
	// the pool's refill, a container start of CPU, would otherwise run
	// while the runtime answers.
	defer rt.coldOver()
	wait := time.Since(start)
	if created {
		// The last stage of the cold start this execution asked for.
		m.cfg.Observer.Stage(ctx, "readiness", start, wait)
	}
	if err != nil {
		return nil, err
	}
	if wait > time.Millisecond {
		m.log.Debug("runtime ready", "runtime", rt.ID, "waited", wait.Round(10*time.Microsecond))
	}
	res, err = rt.forward(ctx, req, time.Until(deadline))
	if err != nil {
		return nil, err
	}
	res.StartTime = start
	res.Duration = time.Since(start)
	return res, nil
}

// forward sends the execution to the runtime over its protocol. A failed
// exchange explained by the main process's death from the OOM killer is
// reported as that.
func (r *Runtime) forward(ctx context.Context, req ExecRequest, remaining time.Duration) (*ExecResult, error) {
	t := protocol.Target{Addr: r.Addr(), Secret: r.Secret, Version: r.Version}
	var files *logFiles
	if r.Version.LogsDir() != "" {
		// The files of the executions answered before this one go first:
		// the runtime may reuse their log id.
		r.logs.removePending(r.Dir, r.warnLogRemoval)
		files = &logFiles{r: r}
		// A log id the caller names is passed on instead, as the
		// reference executor passes it: the runtime appends to its files.
		if req.Logging && !namesLogID(req.Headers) {
			files.lent = r.logs.lend()
			t.LogID = files.lent
		}
		t.Logs = files
	}
	var oom oomMark
	if ct := r.current(); ct != nil {
		oom = ct.MarkOOM()
	}
	start := time.Now()
	resp, err := r.client.Execute(ctx, t, protocol.Request{
		Method:    req.Method,
		Path:      req.Path,
		Headers:   req.Headers,
		Body:      req.Body,
		Logging:   req.Logging,
		Variables: req.Variables,
		Timeout:   remaining,
		// The runtime answered: it outlived the OOM kills counted
		// before the request, so they cannot explain a later death.
		Answered: func() {
			if oom != nil {
				oom.Survived()
			}
		},
		Failed: func(te *protocol.TransportError) error {
			r.settleDeath(te)
			state, out := "no container", ""
			if ct := r.current(); ct != nil {
				state, out = "running", lastLines(ct.Output(), 10)
				if ct.Exited() {
					state = ct.Exit().String()
				}
			}
			r.log.Warn("execution forwarding failed", "runtime", r.ID, "addr", t.Addr, "err", te.Err, "attempts", te.Attempts,
				"elapsed", time.Since(start).Round(time.Millisecond), "main", state, "output", out)
			return r.outOfMemory()
		},
	})
	if files != nil && files.lent != "" {
		if err == nil && files.taken == 2 {
			r.logs.giveBack(files.lent)
		} else {
			r.logs.retire(r.Dir, files.lent, r.warnLogRemoval)
		}
	}
	if err != nil {
		return nil, err
	}
	return &ExecResult{StatusCode: resp.StatusCode, Headers: resp.Headers, Body: resp.Body, Logs: resp.Logs, Errors: resp.Errors}, nil
}

// namesLogID tells whether the caller's headers name a log id.
func namesLogID(h map[string]string) bool {
	for k := range h {
		if strings.EqualFold(k, "x-open-runtimes-log-id") {
			return true
		}
	}
	return false
}

// deathWait bounds how long a dropped exchange waits to see whether the main
// process is dying.
const deathWait = 250 * time.Millisecond

// settleDeath follows an exchange the runtime dropped (the connection closed
// or reset with no answer): most often its main process is exiting, and
// until the exit is seen the next execution would be sent to a listening
// socket about to vanish and be reset. Once the exit is seen the runtime is
// no longer listening, so the next execution waits for the restarted
// process (or learns there is none) instead.
func (r *Runtime) settleDeath(te *protocol.TransportError) {
	ct := r.current()
	if ct == nil || (te.Curl != protocol.CurlGotNothing && te.Curl != protocol.CurlRecvError) {
		return
	}
	select {
	case <-ct.Done():
	case <-time.After(deathWait):
		return
	}
	r.mu.Lock()
	if r.ct == ct {
		r.listening = false
	}
	r.mu.Unlock()
}

// logFiles are the runtime's execution log files for one execution, in
// logs/ of its directory, read through safefs (see rtdir.go) and the
// runtime's logDir.
type logFiles struct {
	r     *Runtime
	lent  string // the log id lent to the execution, "" for none
	taken int    // how many of the lent id's files were taken cleanly
}

// Take empties the files of the lent id in place, for the id's next
// execution, and has any other name removed off the execution's path, on a
// goroutine, or by the next execution before it is sent (see logDir).
func (l *logFiles) Take(name string, limit int64) (data []byte, size int64, err error) {
	lent := l.lent != "" && (name == l.lent+"_logs.log" || name == l.lent+"_errors.log")
	err = l.r.logs.do(l.r.Dir, func(d *safefs.Dir) error {
		if lent {
			data, size, err = d.Drain(name, limit)
			// A file the daemon may read but not write (a rootless
			// daemon's, made by a runtime user other than the mapped
			// root) is read and removed instead, its id retired.
			if !errors.Is(err, fs.ErrPermission) {
				return err
			}
			lent = false
		}
		data, size, err = d.ReadFile(name, limit)
		return err
	})
	switch {
	case !lent:
		l.r.logs.removeLater(l.r.Dir, name, l.r.warnLogRemoval)
	case err == nil || errors.Is(err, fs.ErrNotExist):
		l.taken++
	}
	return data, size, err
}

func (r *Runtime) warnLogRemoval(name string, err error) {
	r.log.Warn("cannot remove execution log file", "runtime", r.ID, "file", name, "err", err)
}

var _ protocol.LogFiles = (*logFiles)(nil)

// waitReady waits until the runtime accepts connections on its port, by
// connecting: nothing tells when a socket starts listening. The connection
// that succeeds carries the execution (protocol.Client.Probe). Every poll
// wakes the daemon while the runtime boots, and the wakes, not the refused
// connects, are what slows the boot (readyPollInterval): the runtime is
// polled every millisecond, and every 4 ms after a second. timeout is the
// request's, for the message when the deadline passes.
func (r *Runtime) waitReady(ctx context.Context, deadline time.Time, timeout time.Duration) error {
	r.mu.Lock()
	listening := r.listening
	r.mu.Unlock()
	if listening {
		return nil
	}
	wctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	ft, err := newFineTimer()
	if err != nil {
		r.log.Debug("readiness polled with Go's timers", "runtime", r.ID, "err", err)
	} else {
		defer ft.close()
	}
	began := time.Now()
	for {
		if err := r.client.Probe(wctx, r.Addr()); err == nil {
			r.mu.Lock()
			r.listening = true
			r.mu.Unlock()
			return nil
		}
		if ct := r.current(); ct != nil && ct.Exited() && !shouldRestart(r.spec.RestartPolicy, ct.Exit().Code) {
			return newError(RuntimeFailed, fmt.Sprintf("Runtime exited before it started listening (%s). Last output:\n%s", ct.Exit(), lastLines(ct.Output(), 20)), nil)
		}
		wait := readyPollInterval(time.Since(began))
		if ft != nil {
			if err := ft.sleep(wctx, wait); err != nil && wctx.Err() == nil {
				r.log.Debug("readiness polled with Go's timers", "runtime", r.ID, "err", err)
				ft = nil // closed by the deferred close
			}
		} else {
			select {
			case <-wctx.Done():
			case <-time.After(wait):
			}
		}
		if wctx.Err() != nil {
			return r.notReady(timeout, wctx.Err())
		}
	}
}

// readyPollInterval is how long waitReady waits before the next connect,
// waited so far into a runtime's boot. Finer polls notice a listening
// runtime sooner but wake the daemon more often on the CPUs the boot runs
// on. Measured on the 2-core VM (prewarmed cold starts of a runtime that
// boots in ~33 ms, 30 a run, alternating builds): the executor's share was
// 5.4 ms p50 polling every 200 µs rising to 1 ms, 3.5 every 1 ms, 2.7 every
// 2 ms, 5.3 every 500 µs; waking every 250 µs but connecting only every
// 2 ms read 6.5, as bad as connecting at every wake. A millisecond keeps a
// listening runtime waiting at most that long.
func readyPollInterval(waited time.Duration) time.Duration {
	if waited > time.Second {
		return 4 * time.Millisecond
	}
	return time.Millisecond
}

// notReady is the timeout of a runtime that never listened. A bare timeout
// leaves the client guessing; what the main process runs and last said is
// nearly always the answer (an image started without its runtimeEntrypoint
// idles; a server on the wrong port or crashing says so on its output).
func (r *Runtime) notReady(timeout time.Duration, err error) error {
	state, out := "no container", ""
	if ct := r.current(); ct != nil {
		state, out = "running", ct.Output()
		if ct.Exited() {
			state = ct.Exit().String() + ", restarting"
		}
	}
	tail := outputTail(out)
	r.log.Warn("runtime did not listen in time", "runtime", r.ID, "addr", r.Addr(), "timeout", timeout,
		"command", shellJoin(r.command), "main", state, "output", tail)
	msg := fmt.Sprintf("Timed out waiting for runtime: nothing accepted connections on port %d within the %s timeout. Its command: %s (%s).",
		protocol.Port, timeout, shellJoin(r.command), state)
	if hint := r.idleHint(); hint != "" {
		msg += " " + hint
	}
	if tail == "" {
		msg += " It printed nothing."
	} else {
		msg += " Last output:\n" + tail
	}
	return newError(Timeout, msg, err)
}

// idleHint explains a runtime that was given nothing to run: protocols after
// v2 start a runtime with runtimeEntrypoint only, and without one the main
// process idles until a build or command uses it.
func (r *Runtime) idleHint() string {
	v, spec := r.Version, r.spec
	if spec.RuntimeEntrypoint != "" || !slices.Equal(r.command, v.Command(nil, nil, "", "", spec.Command != "")) {
		return ""
	}
	// Command runs an image's own argv exactly when the version does so.
	var why string
	switch {
	case slices.Equal(v.Command([]string{"x"}, nil, "", "", spec.Command != ""), []string{"x"}):
		why = "the image has no entrypoint or cmd"
	case slices.Equal(v.Command([]string{"x"}, nil, "", "", false), []string{"x"}):
		why = fmt.Sprintf("protocol %s does not run the image's entrypoint or cmd when a build command is given", v)
	default:
		why = fmt.Sprintf("protocol %s does not run the image's own entrypoint or cmd", v)
	}
	return fmt.Sprintf("No runtimeEntrypoint was given and %s, so the runtime only idles: set runtimeEntrypoint to the command that starts its server on port %d.",
		why, protocol.Port)
}

// outputTail is the end of a main process's output as an error message
// quotes it: its last lines, each cut short, so a chatty runtime cannot make
// the reply large.
func outputTail(out string) string {
	out = strings.TrimRight(out, "\n")
	if strings.TrimSpace(out) == "" {
		return ""
	}
	lines := strings.Split(lastLines(out, outputTailLines), "\n")
	for i, l := range lines {
		if len(l) > outputTailLineBytes {
			lines[i] = truncateUTF8(l, outputTailLineBytes) + "..."
		}
	}
	return strings.Join(lines, "\n")
}

const (
	outputTailLines     = 10
	outputTailLineBytes = 300
)

// shellJoin renders argv as a shell would take it, so the message can be
// pasted back: words with anything but safe characters are quoted.
func shellJoin(argv []string) string {
	if len(argv) == 0 {
		return "(none)"
	}
	words := make([]string, len(argv))
	for i, a := range argv {
		if a != "" && strings.Trim(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,+@%") == "" {
			words[i] = a
			continue
		}
		words[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(words, " ")
}

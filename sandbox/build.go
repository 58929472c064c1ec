package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"

	"executor/storage"
)

// maxBuildOutput is the reference's cap on build output, in bytes.
const maxBuildOutput = 1_000_000

const buildTruncatedNotice = "Logs truncated due to size exceeding 5.00MB."

// outputLog collects a command's output as chunks stamped with the time they
// were read from the pipe, up to maxBuildOutput bytes.
type outputLog struct {
	mu        sync.Mutex
	entries   []LogEntry
	size      int
	truncated bool
}

func (o *outputLog) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.truncated || len(p) == 0 {
		return len(p), nil
	}
	chunk := p
	if room := maxBuildOutput - o.size; len(chunk) > room {
		chunk = chunk[:room]
	}
	o.size += len(chunk)
	o.entries = append(o.entries, LogEntry{Timestamp: time.Now().UTC(), Content: string(chunk)})
	if o.size >= maxBuildOutput {
		o.truncated = true
		o.entries = append(o.entries, LogEntry{Timestamp: time.Now().UTC(), Content: buildTruncatedNotice})
	}
	return len(p), nil
}

func (o *outputLog) add(content string) {
	o.mu.Lock()
	o.entries = append(o.entries, LogEntry{Timestamp: time.Now().UTC(), Content: content})
	o.mu.Unlock()
}

// snapshot returns the entries with contents made valid UTF-8.
func (o *outputLog) snapshot() []LogEntry {
	o.mu.Lock()
	defer o.mu.Unlock()
	out := make([]LogEntry, len(o.entries))
	for i, e := range o.entries {
		out[i] = LogEntry{Timestamp: e.Timestamp, Content: strings.ToValidUTF8(e.Content, "\uFFFD")}
	}
	return out
}

func (o *outputLog) text() string {
	var b strings.Builder
	for _, e := range o.snapshot() {
		b.WriteString(e.Content)
	}
	return b.String()
}

// exec runs command in the runtime with its output on w. It returns the exit
// code; ctx ending kills the command.
func (r *Runtime) exec(ctx context.Context, command string, w io.Writer) (int, error) {
	ct := r.current()
	if ct == nil || ct.exited() {
		return -1, errors.New("runtime is not running")
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		return -1, err
	}
	p := &libcontainer.Process{
		Args:             []string{r.shell, "-c", command},
		Env:              r.proc.Env,
		Cwd:              r.proc.Cwd,
		UID:              r.proc.UID,
		GID:              r.proc.GID,
		AdditionalGroups: r.proc.Sgid,
		Stdout:           pw,
		Stderr:           pw,
	}
	if err := ct.c.Run(p); err != nil {
		pr.Close()
		pw.Close()
		return -1, fmt.Errorf("start command: %w", err)
	}
	pw.Close()
	copied := make(chan struct{})
	go func() {
		_, _ = io.Copy(w, pr)
		pr.Close()
		close(copied)
	}()
	waited := make(chan struct{})
	var st *os.ProcessState
	var werr error
	go func() {
		st, werr = p.Wait()
		close(waited)
	}()
	select {
	case <-waited:
	case <-ctx.Done():
		_ = p.Signal(unix.SIGKILL)
		<-waited
	}
	// Children the command left running may hold the pipe open: do not wait
	// for them longer than a moment.
	select {
	case <-copied:
	case <-time.After(time.Second):
		pr.Close()
	}
	if ctx.Err() != nil {
		return -1, ctx.Err()
	}
	if st == nil {
		return -1, werr
	}
	return toExitStatus(st, nil).code, nil
}

// build runs the build command and uploads the artifact.
func (m *Manager) build(ctx context.Context, r *Runtime, spec Spec, res *BuildResult) error {
	r.begin()
	defer r.end()
	timeout := spec.Timeout
	if timeout <= 0 {
		timeout = 600 * time.Second
	}
	bctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	out := &outputLog{}
	code, err := r.exec(bctx, spec.Command, out)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return &Error{Type: ErrRuntimeFailed, Message: fmt.Sprintf("Operation timed out after %d milliseconds: build command did not finish within %s.", timeout.Milliseconds(), timeout), Err: err}
		}
		return &Error{Type: ErrBuildFailed, Message: "Build command failed: " + err.Error(), Err: err}
	}
	if code != 0 {
		out.add(fmt.Sprintf("Build command exited with code %d.", code))
		msg := strings.TrimSpace(truncateUTF8(out.text(), maxBuildOutput))
		if msg == "" {
			msg = "Build command failed."
		}
		return &Error{Type: ErrBuildFailed, Message: msg}
	}
	res.Output = out.snapshot()
	if spec.Destination != "" {
		path, size, err := m.upload(ctx, r, spec.Destination)
		if err != nil {
			return err
		}
		res.HasArtifact, res.Path, res.Size = true, path, size
	}
	return nil
}

// upload moves builds/code.tar.gz to the destination device as <uniqid>.gz.
func (m *Manager) upload(ctx context.Context, r *Runtime, destination string) (string, int64, error) {
	artifact := filepath.Join(r.Dir, "builds", "code.tar.gz")
	f, err := os.Open(artifact)
	if err != nil {
		return "", 0, &Error{Type: ErrRuntimeFailed, Code: 500, Message: "Something went wrong when starting runtime.", Err: err}
	}
	defer f.Close()
	dev, err := storage.Open(m.cfg.Storage, destination)
	if err != nil {
		return "", 0, err
	}
	path := strings.TrimRight(dev.Root(), "/") + "/" + m.uniqid() + ".gz"
	size, err := dev.Write(ctx, path, f)
	if err != nil {
		return "", 0, &Error{Type: ErrRuntimeFailed, Code: 500, Message: "Failed to move built code to storage", Err: err}
	}
	return path, size, nil
}

// uniqid mimics PHP's uniqid(): 13 hex characters from the clock (seconds and
// microseconds). Values are strictly increasing within this process, so two
// builds finishing in the same microsecond still get different names.
func (m *Manager) uniqid() string {
	m.uniqMu.Lock()
	defer m.uniqMu.Unlock()
	us := time.Now().UnixMicro()
	if us <= m.lastUniq {
		us = m.lastUniq + 1
	}
	m.lastUniq = us
	return fmt.Sprintf("%08x%05x", us/1_000_000, us%1_000_000)
}

func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// A rune cut in half at the end becomes invalid bytes, which go.
	return strings.ToValidUTF8(s[:n], "")
}

package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"

	"executor/storage"
	"executor/storage/safefs"
)

// maxBuildOutput is the reference's cap on build output, in bytes.
const maxBuildOutput = 1_000_000

const buildTruncatedNotice = "Logs truncated due to size exceeding 5.00MB."

// outputLog collects a command's output as chunks stamped with the time they
// were read from the pipe, up to maxBuildOutput bytes. Followers wait on
// changed, which is closed and replaced at every change.
type outputLog struct {
	mu        sync.Mutex
	entries   []LogEntry
	size      int
	truncated bool
	finished  bool
	changed   chan struct{}
}

func newOutputLog() *outputLog { return &outputLog{changed: make(chan struct{})} }

// notify wakes followers; o.mu must be held.
func (o *outputLog) notify() {
	close(o.changed)
	o.changed = make(chan struct{})
}

// finish marks the end of the output: followers drain what is left and stop.
func (o *outputLog) finish() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.finished {
		o.finished = true
		o.notify()
	}
}

// since returns the entries from index i on, whether the log is finished,
// and a channel closed at the next change.
func (o *outputLog) since(i int) ([]LogEntry, bool, <-chan struct{}) {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []LogEntry
	if i < len(o.entries) {
		out = make([]LogEntry, len(o.entries)-i)
		for k, e := range o.entries[i:] {
			out[k] = LogEntry{Timestamp: e.Timestamp, Content: strings.ToValidUTF8(e.Content, "\uFFFD")}
		}
	}
	return out, o.finished, o.changed
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
	o.notify()
	return len(p), nil
}

func (o *outputLog) add(content string) {
	o.mu.Lock()
	o.entries = append(o.entries, LogEntry{Timestamp: time.Now().UTC(), Content: content})
	o.notify()
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

func entriesText(entries []LogEntry) string {
	var b strings.Builder
	for _, e := range entries {
		b.WriteString(e.Content)
	}
	return b.String()
}

// withWarnings puts the build-cache warnings before the output (after it for
// v2, as the reference does).
func (r *Runtime) withWarnings(spec Spec, entries []LogEntry) []LogEntry {
	r.mu.Lock()
	warnings := append([]LogEntry(nil), r.cacheWarnings...)
	r.mu.Unlock()
	if len(warnings) == 0 {
		return entries
	}
	if spec.Version == "v2" {
		return append(entries, warnings...)
	}
	return append(warnings, entries...)
}

// exec runs command in the runtime with stdout and stderr both on w, in the
// order they were written. It returns the exit code; ctx ending kills it.
func (r *Runtime) exec(ctx context.Context, command string, w io.Writer) (int, error) {
	return r.execSplit(ctx, command, w, nil)
}

// execSplit runs command with its stdout on stdout and its stderr on stderr
// (on stdout too when stderr is nil).
func (r *Runtime) execSplit(ctx context.Context, command string, stdout, stderr io.Writer) (int, error) {
	ct := r.current()
	if ct == nil || ct.exited() {
		return -1, errors.New("runtime is not running")
	}
	type stream struct {
		r, w *os.File
		dst  io.Writer
	}
	var streams []stream
	closeAll := func() {
		for _, s := range streams {
			s.r.Close()
			s.w.Close()
		}
	}
	for _, dst := range []io.Writer{stdout, stderr} {
		if dst == nil {
			continue
		}
		pr, pw, err := os.Pipe()
		if err != nil {
			closeAll()
			return -1, err
		}
		streams = append(streams, stream{pr, pw, dst})
	}
	errW := streams[0].w
	if len(streams) > 1 {
		errW = streams[1].w
	}
	p := &libcontainer.Process{
		Args:             []string{r.shell, "-c", command},
		Env:              r.proc.Env,
		Cwd:              r.proc.Cwd,
		UID:              r.proc.UID,
		GID:              r.proc.GID,
		AdditionalGroups: r.proc.Sgid,
		Stdout:           streams[0].w,
		Stderr:           errW,
	}
	if err := ct.c.Run(p); err != nil {
		closeAll()
		return -1, fmt.Errorf("start command: %w", err)
	}
	var copies sync.WaitGroup
	for _, s := range streams {
		s.w.Close()
		copies.Add(1)
		go func() {
			defer copies.Done()
			_, _ = io.Copy(s.dst, s.r)
		}()
	}
	copied := make(chan struct{})
	go func() {
		copies.Wait()
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
	// Children the command left running may hold the pipes open: do not
	// wait for them longer than a moment.
	select {
	case <-copied:
	case <-time.After(time.Second):
	}
	for _, s := range streams {
		s.r.Close()
	}
	if ctx.Err() != nil {
		return -1, ctx.Err()
	}
	if st == nil {
		return -1, werr
	}
	return toExitStatus(st, nil).code, nil
}

// build runs the build command with its output in out, saves the build
// cache and uploads the artifact.
func (m *Manager) build(ctx context.Context, r *Runtime, spec Spec, res *BuildResult, out *outputLog) error {
	r.begin()
	defer r.end()
	timeout := spec.Timeout
	if timeout <= 0 {
		timeout = 600 * time.Second
	}
	bctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	code, err := r.exec(bctx, spec.Command, out)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return &Error{Type: ErrRuntimeFailed, Message: fmt.Sprintf("Operation timed out after %d milliseconds: build command did not finish within %s.", timeout.Milliseconds(), timeout), Err: err}
		}
		return &Error{Type: ErrBuildFailed, Message: "Build command failed: " + err.Error(), Err: err}
	}
	if code != 0 {
		out.add(fmt.Sprintf("Build command exited with code %d.", code))
		msg := strings.TrimSpace(truncateUTF8(entriesText(r.withWarnings(spec, out.snapshot())), maxBuildOutput))
		if msg == "" {
			msg = "Build command failed."
		}
		return &Error{Type: ErrBuildFailed, Message: msg}
	}
	if cacheEnabled(spec) {
		m.saveCache(ctx, r, spec.CacheKey)
	}
	res.Output = r.withWarnings(spec, out.snapshot())
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
// The artifact is the runtime's: it must be a regular file of at most
// BuildSizeLimit bytes, reached without a link.
func (m *Manager) upload(ctx context.Context, r *Runtime, destination string) (string, int64, error) {
	d, err := r.openDir()
	if err != nil {
		return "", 0, &Error{Type: ErrRuntimeFailed, Code: 500, Message: "Something went wrong when starting runtime.", Err: err}
	}
	defer d.Close()
	f, st, err := d.Open("builds/" + artifactName)
	if errors.Is(err, fs.ErrNotExist) {
		// The reference's answer when no artifact was produced.
		return "", 0, &Error{Type: ErrRuntimeFailed, Code: 500, Message: "Something went wrong when starting runtime.", Err: err}
	}
	if err != nil {
		return "", 0, &Error{Type: ErrBuildFailed, Message: fmt.Sprintf("Build artifact %s was refused: %s.", r.artifactPath(), refusal(err)), Err: err}
	}
	defer f.Close()
	limit := m.cfg.BuildSizeLimit
	tooLarge := &Error{Type: ErrBuildFailed, Message: fmt.Sprintf("Build artifact %s is larger than the build size limit of %d bytes (OPR_EXECUTOR_BUILD_SIZE_LIMIT).", r.artifactPath(), limit)}
	if st.Size() > limit {
		return "", 0, tooLarge
	}
	dev, err := m.sources.Open(destination)
	if err != nil {
		return "", 0, &Error{Type: ErrBuildFailed, Code: 400, Message: "Failed to move built code to storage: " + err.Error(), Err: err}
	}
	path := strings.TrimRight(dev.Root(), "/") + "/" + m.uniqid() + ".gz"
	// The file may still grow while it is copied: the cap holds for
	// what is read, not only for the size seen at open.
	size, err := dev.Write(ctx, path, safefs.Reader(ctx, f, limit))
	if errors.Is(err, safefs.ErrTooLarge) || errors.Is(err, storage.ErrTooLarge) {
		return "", 0, tooLarge
	}
	if errors.Is(err, storage.ErrOutsideRoots) {
		// A link beneath the root that leads out of it.
		return "", 0, &Error{Type: ErrBuildFailed, Code: 400, Message: "Failed to move built code to storage: " + err.Error(), Err: err}
	}
	if err != nil {
		return "", 0, &Error{Type: ErrRuntimeFailed, Code: 500, Message: "Failed to move built code to storage", Err: err}
	}
	return path, size, nil
}

// artifactName is the file a build leaves in its code directory.
const artifactName = "code.tar.gz"

// artifactPath is where the runtime sees its artifact.
func (r *Runtime) artifactPath() string {
	if r.Version == "v2" {
		return "/usr/code/" + artifactName
	}
	return "/mnt/code/" + artifactName
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

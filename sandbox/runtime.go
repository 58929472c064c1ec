package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"executor/netns"
	"executor/sandbox/container"
	"executor/sandbox/disk"
	"executor/sandbox/protocol"
)

// Runtime is one runtime: a container, its root, its network endpoint and its
// directories. Its identity fields never change after creation; the rest is
// guarded by mu.
//
// A Runtime owns what it holds: the handles below are recorded as each part is
// acquired, and destroy releases them, so nothing outside it needs to know
// what a runtime is made of.
type Runtime struct {
	ID       string // the client's runtime id
	Name     string // <executor hostname>-<id>
	CID      string // container id and directory name (safe characters only)
	Hostname string
	Secret   string
	Image    string
	Version  protocol.Version
	Dir      string // "" until assembly makes it
	Created  time.Time
	spec     Spec
	log      *slog.Logger
	httpc    *http.Client
	client   protocol.Client
	shell    string
	// command is the main process's argv (without the init), set once by
	// assembly: a runtime that never listens is explained by what it ran.
	command []string
	// main is the container's main process and layers the image layers of
	// its root, set once by assembly: live restore records them.
	main   container.Process
	layers []string

	// onExit is told when the main process has ended for good (no restart
	// follows), so the table can drop the runtime.
	onExit func(*Runtime)
	// forget removes the runtime's live-restore record (nil: none kept).
	forget func(*Runtime)
	// obs is the manager's Observer (exits, restarts).
	obs Observer

	mu sync.Mutex
	// Release handles, each set once its part exists.
	addr        string // host:port of the runtime's HTTP server
	network     *netns.Network
	endpoint    *netns.Endpoint
	disk        *disk.Disk // the runtime's directory is its mount point
	unmountRoot func(dir string) error
	ct          proc
	logs        logDir // its own lock

	updated   time.Time
	status    string
	listening bool
	// coldDone tells the prewarm pool this runtime's cold start is over
	// (ready or failed); nil when no pool counted it.
	coldDone    func()
	initialised bool
	inflight    int
	stopped     bool // set once destroy starts: no restarts after it
	restarts    int
	supervising sync.WaitGroup
	destroyOnce sync.Once
	destroyErr  error
	// cacheWarnings are build-cache problems, reported with the build output.
	cacheWarnings []LogEntry
}

// proc is the runtime's running container: a *container.Container, behind
// an interface so that the table's tests can run without root.
type proc interface {
	Done() <-chan struct{}
	Exited() bool
	Exit() container.ExitStatus
	Output() string
	Stop(grace time.Duration)
	Destroy() error
	Restart() (proc, error)
	Exec(ctx context.Context, args []string, stdout, stderr io.Writer) (int, error)
	CPUUsage() (uint64, error)
	OOMKillsPending() bool
	MarkOOM() oomMark
}

// oomMark is the container's OOM kill count before an exchange.
type oomMark interface{ Survived() }

// Addr is host:port of the runtime's HTTP server.
func (r *Runtime) Addr() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.addr
}

// Info returns the API view of the runtime.
func (r *Runtime) Info() Info {
	r.mu.Lock()
	defer r.mu.Unlock()
	return Info{
		Version:     r.Version,
		Created:     r.Created,
		Updated:     r.updated,
		Name:        r.Name,
		Hostname:    r.Hostname,
		Status:      r.status,
		Key:         r.Secret,
		Listening:   r.listening,
		Image:       r.Image,
		Initialised: r.initialised,
	}
}

// begin and end bracket work in flight (executions, builds, commands), which
// maintenance never interrupts.
func (r *Runtime) begin() {
	r.mu.Lock()
	r.inflight++
	r.updated = time.Now()
	r.mu.Unlock()
}

func (r *Runtime) end() {
	r.mu.Lock()
	r.inflight--
	r.updated = time.Now()
	r.mu.Unlock()
}

func (r *Runtime) idleSince() (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.updated, r.inflight == 0 && r.initialised
}

func (r *Runtime) markUp(d time.Duration) {
	r.mu.Lock()
	r.status = "Up " + strconv.FormatFloat(math.Round(d.Seconds()*100)/100, 'f', -1, 64) + "s"
	r.initialised = true
	r.updated = time.Now()
	r.mu.Unlock()
}

func (r *Runtime) current() proc {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ct
}

// outOfMemory returns the error to report when a failed exchange is
// explained by the main process's death from the OOM killer, nil otherwise.
// A kill counted since the last verdict may have the main process as its
// victim still on its way out: give it a moment then. Without such a kill
// the main process cannot be dying of one (the kernel counts a kill before
// it signals), so there is nothing to wait for.
func (r *Runtime) outOfMemory() error {
	ct := r.current()
	if ct == nil {
		return nil
	}
	if !ct.Exited() && ct.OOMKillsPending() {
		select {
		case <-ct.Done():
		case <-time.After(oomDeathWait):
		}
	}
	if !ct.Exited() || !ct.Exit().OOMKilled {
		return nil
	}
	return newError(OutOfMemory, fmt.Sprintf("Runtime ran out of memory: the kernel killed it at its limit of %d MB. Raise `memory` or use less.", r.spec.MemoryMB), nil)
}

// oomDeathWait bounds how long a failed exchange waits for the main process
// to be reaped after an OOM kill; only a surviving main process (the victim
// was one of its children) makes it wait this long.
const oomDeathWait = 2 * time.Second

// supervise restarts the main process when it exits, as restartPolicy asks.
func (r *Runtime) supervise() {
	defer r.supervising.Done()
	for {
		ct := r.current()
		<-ct.Done()
		r.mu.Lock()
		stopped := r.stopped
		r.mu.Unlock()
		if stopped {
			return
		}
		r.log.Info("runtime main process exited", "runtime", r.ID, "status", ct.Exit().String(), "output", lastLines(ct.Output(), 5))
		r.observer().RuntimeExited(ct.Exit().OOMKilled)
		// Until a restarted process listens, executions wait for it.
		r.mu.Lock()
		r.listening = false
		r.mu.Unlock()
		// Connections kept alive to the old process are dead.
		r.httpc.CloseIdleConnections()
		if !shouldRestart(r.spec.RestartPolicy, ct.Exit().Code) {
			// A runtime that will not come back leaves the table, so the
			// next execution with cold-start parameters creates a new one.
			go r.onExit(r)
			return
		}
		// A crash loop must not spin: back off like Docker does, doubling
		// from 100 ms, capped at 10 s.
		r.mu.Lock()
		r.restarts++
		delay := time.Duration(math.Min(float64(restartBackoff)*math.Pow(2, float64(r.restarts-1)), float64(10*time.Second)))
		r.mu.Unlock()
		time.Sleep(delay)
		restarted, err := r.restart()
		if err != nil {
			r.log.Error("runtime restart failed", "runtime", r.ID, "err", err)
			go r.onExit(r)
			return
		}
		if restarted {
			r.observer().RuntimeRestarted()
		}
	}
}

// observer is obs, or one observing nothing when r was made without one.
func (r *Runtime) observer() Observer {
	if r.obs == nil {
		return NopObserver{}
	}
	return r.obs
}

// restartBackoff is the wait before the first restart of a main process.
const restartBackoff = 100 * time.Millisecond

func shouldRestart(policy string, code int) bool {
	switch policy {
	case "always", "unless-stopped":
		return true
	case "on-failure":
		return code != 0
	default:
		return false
	}
}

// restart starts the main process again, unless r is being stopped.
func (r *Runtime) restart() (restarted bool, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return false, nil
	}
	ct, err := r.ct.Restart()
	if err != nil {
		return false, err
	}
	r.ct = ct
	r.listening = false
	return true, nil
}

// destroy stops the runtime and releases everything it holds. It is safe to
// call on a partially created runtime, and more than once: only the first
// call does the work, so nothing (an address above all) is released twice.
func (r *Runtime) destroy(ctx context.Context, grace time.Duration) error {
	r.coldOver()
	r.destroyOnce.Do(func() { r.destroyErr = r.doDestroy(ctx, grace) })
	return r.destroyErr
}

// coldOver reports the end of r's cold start to the pool that counted it.
func (r *Runtime) coldOver() {
	r.mu.Lock()
	done := r.coldDone
	r.coldDone = nil
	r.mu.Unlock()
	if done != nil {
		done()
	}
}

// halt kills r's processes for good, without yet releasing anything.
func (r *Runtime) halt() {
	r.mu.Lock()
	r.stopped = true
	ct := r.ct
	r.mu.Unlock()
	if ct != nil {
		ct.Stop(0)
	}
}

func (r *Runtime) doDestroy(ctx context.Context, grace time.Duration) error {
	if r.forget != nil {
		r.forget(r)
	}
	r.mu.Lock()
	r.stopped = true
	ct := r.ct
	r.mu.Unlock()
	var errs []error
	if ct != nil {
		ct.Stop(grace)
		r.supervising.Wait()
		ct = r.current() // a restart may have raced with stopped being set
		ct.Stop(0)
		if err := ct.Destroy(); err != nil {
			errs = append(errs, fmt.Errorf("destroy container: %w", err))
		}
	}
	if r.httpc != nil {
		r.httpc.CloseIdleConnections()
	}
	errs = append(errs, r.release(ctx)...)
	return errors.Join(errs...)
}

// detachNetwork gives up the runtime's network endpoint, once: the first
// call detaches it, later ones do nothing.
func (r *Runtime) detachNetwork(ctx context.Context) error {
	r.mu.Lock()
	network, ep := r.network, r.endpoint
	r.endpoint = nil
	r.mu.Unlock()
	if ep == nil {
		return nil
	}
	return network.Detach(ctx, ep)
}

// release frees what the runtime holds besides its container: its network
// endpoint, root, disk and directory. The directory goes only once what is
// mounted beneath it is gone: never remove files through a mount.
func (r *Runtime) release(ctx context.Context) []error {
	var errs []error
	if err := r.detachNetwork(ctx); err != nil {
		errs = append(errs, err)
	}
	r.mu.Lock()
	dk, unmountRoot := r.disk, r.unmountRoot
	r.mu.Unlock()
	r.logs.release()
	if r.Dir == "" {
		return errs
	}
	if unmountRoot != nil {
		if err := unmountRoot(r.rootDir()); err != nil {
			return append(errs, err)
		}
	}
	if dk != nil {
		if err := dk.Unmount(); err != nil {
			return append(errs, err)
		}
	}
	if err := os.RemoveAll(r.Dir); err != nil {
		errs = append(errs, err)
	}
	return errs
}

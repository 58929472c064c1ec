package sandbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"

	"executor/netns"
	"executor/sandbox/disk"
)

// Runtime is one runtime: a container, its root, its network endpoint and its
// directories. Its identity fields never change after creation; the rest is
// guarded by mu.
type Runtime struct {
	ID       string // the client's runtime id
	Name     string // <executor hostname>-<id>
	CID      string // container id and directory name (safe characters only)
	Hostname string
	Secret   string
	Image    string
	Version  string
	Dir      string
	Created  time.Time
	spec     Spec

	endpoint *netns.Endpoint
	disk     *disk.Disk // the runtime's directory is its mount point
	network  *netns.Network
	cfg      *configs.Config
	proc     processSpec
	shell    string
	log      *slog.Logger
	httpc    *http.Client
	dns      []netip.Addr
	init     string // host path of executor-init, or ""

	mu          sync.Mutex
	ct          *container
	updated     time.Time
	status      string
	listening   bool
	initialised bool
	inflight    int
	stopped     bool // set once destroy starts: no restarts after it
	restarts    int
	supervising sync.WaitGroup
	destroyOnce sync.Once
	destroyErr  error
	// cacheWarnings are build-cache problems, reported before the build output.
	cacheWarnings []LogEntry
}

func (r *Runtime) client() *http.Client { return r.httpc }

// Addr is host:port of the runtime's HTTP server.
func (r *Runtime) Addr() string {
	return r.endpoint.Addr.String() + ":3000"
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

func (r *Runtime) current() *container {
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
	if !ct.exited() && ct.oomKillsPending() {
		select {
		case <-ct.done:
		case <-time.After(oomDeathWait):
		}
	}
	if !ct.exited() || !ct.exit.oomKilled {
		return nil
	}
	return &Error{Type: ErrRuntimeFailed, Code: 500, Message: fmt.Sprintf("Runtime ran out of memory: the kernel killed it at its limit of %d MB. Raise `memory` or use less.", r.spec.MemoryMB)}
}

// oomDeathWait bounds how long a failed exchange waits for the main process
// to be reaped after an OOM kill; only a surviving main process (the victim
// was one of its children) makes it wait this long.
const oomDeathWait = 2 * time.Second

// supervise restarts the main process when it exits, as restartPolicy asks.
func (r *Runtime) supervise(m *Manager) {
	defer r.supervising.Done()
	for {
		ct := r.current()
		<-ct.done
		r.mu.Lock()
		stopped := r.stopped
		r.mu.Unlock()
		if stopped {
			return
		}
		r.log.Info("runtime main process exited", "runtime", r.ID, "status", ct.exit.String(), "output", lastLines(ct.out.String(), 5))
		// Connections kept alive to the old process are dead.
		r.httpc.CloseIdleConnections()
		if !shouldRestart(r.spec.RestartPolicy, ct.exit.code) {
			// A runtime that will not come back leaves the table, so the
			// next execution with cold-start parameters creates a new one.
			go m.removeDead(r)
			return
		}
		// A crash loop must not spin: back off like Docker does, doubling
		// from 100 ms, capped at 10 s.
		r.mu.Lock()
		r.restarts++
		delay := time.Duration(math.Min(float64(100*time.Millisecond)*math.Pow(2, float64(r.restarts-1)), float64(10*time.Second)))
		r.mu.Unlock()
		time.Sleep(delay)
		if err := r.restart(m); err != nil {
			r.log.Error("runtime restart failed", "runtime", r.ID, "err", err)
			go m.removeDead(r)
			return
		}
	}
}

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

func (r *Runtime) restart(m *Manager) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		return nil
	}
	if err := r.ct.destroy(); err != nil {
		return fmt.Errorf("destroy exited container: %w", err)
	}
	lc, err := libcontainer.Create(m.stateRoot, r.CID, r.cfg)
	if err != nil {
		return fmt.Errorf("re-create container: %w", err)
	}
	ct, err := runMain(lc, r.proc)
	if err != nil {
		_ = lc.Destroy()
		return err
	}
	r.ct = ct
	r.listening = false
	return nil
}

// destroy stops the runtime and releases everything it holds. It is safe to
// call on a partially created runtime, and more than once: only the first
// call does the work, so nothing (an address above all) is released twice.
func (r *Runtime) destroy(ctx context.Context, m *Manager, grace time.Duration) error {
	r.destroyOnce.Do(func() { r.destroyErr = r.doDestroy(ctx, m, grace) })
	return r.destroyErr
}

func (r *Runtime) doDestroy(ctx context.Context, m *Manager, grace time.Duration) error {
	r.mu.Lock()
	r.stopped = true
	ct := r.ct
	r.mu.Unlock()
	var errs []error
	if ct != nil {
		ct.stop(grace)
		r.supervising.Wait()
		r.mu.Lock()
		ct = r.ct // a restart may have raced with stopped being set
		r.mu.Unlock()
		ct.stop(0)
		if err := ct.destroy(); err != nil {
			errs = append(errs, fmt.Errorf("destroy container: %w", err))
		}
	}
	if r.httpc != nil {
		r.httpc.CloseIdleConnections()
	}
	errs = append(errs, m.release(ctx, r)...)
	return errors.Join(errs...)
}

package container

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"
)

// outputTail is how much of the main process's output a Container keeps.
const outputTail = 64 << 10

// ErrNotRunning is returned for work that needs the main process alive.
var ErrNotRunning = errors.New("container: not running")

// Container is one libcontainer container and its main process, whose stdout
// and stderr are drained into a bounded tail buffer so the runtime never
// blocks on a full pipe.
type Container struct {
	id string
	// c is the libcontainer container this process started or adopted;
	// nil for one the spawner started (see lc).
	c *libcontainer.Container
	// proc is the main process as this daemon started it; nil for an
	// adopted container (see Adopt), whose main process is not our child.
	proc *libcontainer.Process
	// pidfd is an adopted container's pidfd of its main process, closed
	// once it has exited; nil for a started container.
	pidfd   *os.File
	main    Process
	cfg     *configs.Config // kept for Restart
	runner  *Runner         // which Restart starts it again with
	out     *tailBuffer
	outR    *os.File      // the output FIFO's read end, nil when there is none
	done    chan struct{} // closed when the main process has exited and its output is drained
	exit    ExitStatus    // written before done is closed
	cgPaths map[string]string

	// oomJudged is the cgroup's OOM kill count at the last verdict: the
	// kills up to it were either the main process's death or survived by
	// it (a later exchange succeeded), so none of them can explain a death
	// after it. The counter covers every process of the cgroup over its
	// lifetime; only a rise past this mark can be about the main process.
	oomMu     sync.Mutex
	oomJudged int

	// counters holds the cgroup's counter files open (see Counters and
	// oomKills).
	counters counterFiles

	// park is the write end of a parked executor-init's command pipe
	// (StartParked), nil once unparked or for a container started with
	// its command.
	park *os.File
}

// ExitStatus is how a main process ended.
type ExitStatus struct {
	// Code is the exit code, 128+n for a death by signal n (as a shell
	// reports it), -1 when waiting failed or the process was not this
	// daemon's child (an adopted container's: Err wraps ErrExitUnknown).
	Code int
	// Signal is the name of the signal that killed the process ("SIGKILL"),
	// or "".
	Signal string
	// Err is why the status is unknown.
	Err error
	// OOMKilled says the kernel's OOM killer ended the main process (see
	// the package documentation for how that is judged).
	OOMKilled bool
}

func (e ExitStatus) String() string {
	switch {
	case e.OOMKilled && e.Code < 0:
		// An adopted container's: the code is unknown.
		return "killed: out of memory"
	case e.OOMKilled:
		return fmt.Sprintf("killed: out of memory (exit code %d)", e.Code)
	case e.Err != nil:
		return e.Err.Error()
	case e.Signal != "":
		return "killed by " + e.Signal
	default:
		return fmt.Sprintf("exit code %d", e.Code)
	}
}

// runMain starts p as the init process of lc, with its output on a FIFO
// (see fifo.go), from spawn when it is not nil.
func runMain(r *Runner, spawn *spawnNS, lc *libcontainer.Container, cfg *configs.Config, p Process) (*Container, error) {
	lp, outR, exR, err := startMain(lc, r.cfg.StateDir, p, false, func(lp *libcontainer.Process) error {
		return spawn.run(cfg, func() error { return lc.Run(lp) })
	})
	if err != nil {
		return nil, err
	}
	closeAll(exR)
	c := newContainer(r, lc, cfg, p)
	c.proc = lp
	drained := c.drain(outR)
	go func() {
		// Waits in the poller: an idle runtime holds no OS thread.
		st, err := waitProcess(context.Background(), lp)
		<-drained
		c.exit = toExitStatus(st, err)
		c.exit.OOMKilled = c.diedOfOOM(c.exit)
		close(c.done)
	}()
	return c, nil
}

// startMain starts p as the init process of lc through run (lc.Run, or
// what wraps it), its stdout and stderr the write end of the output FIFO,
// and returns the process and the FIFOs' read ends: exR, the exit FIFO's,
// is nil unless p reports its exit and keepExitR is set.
func startMain(lc *libcontainer.Container, stateDir string, p Process, keepExitR bool, run func(*libcontainer.Process) error) (lp *libcontainer.Process, outR, exR *os.File, err error) {
	outR, outW, err := makeFIFO(fifoPath(stateDir, lc.ID(), outputFIFO))
	if err != nil {
		return nil, nil, nil, err
	}
	args, files := p.Args, p.extraFiles
	if p.ReportsExit && len(args) > 0 {
		var exW *os.File
		exR, exW, err = makeFIFO(fifoPath(stateDir, lc.ID(), exitFIFO))
		if err != nil {
			closeAll(outR, outW)
			return nil, nil, nil, err
		}
		// Ours go once the process holds its end: a reader opens the
		// FIFO again (a daemon that adopts the container) or keeps the
		// read end it was given.
		defer exW.Close()
		if !keepExitR {
			defer exR.Close()
			exR = nil
		}
		args = slices.Concat(args[:1], []string{ExitFDFlag, strconv.Itoa(3 + len(files))}, args[1:])
		files = append(slices.Clip(files), exW)
	}
	lp = &libcontainer.Process{
		Args:             args,
		Env:              p.Env,
		Cwd:              p.Cwd,
		UID:              p.UID,
		GID:              p.GID,
		AdditionalGroups: p.Groups,
		Stdout:           outW,
		Stderr:           outW,
		ExtraFiles:       files,
		Init:             true,
	}
	if err := run(lp); err != nil {
		closeAll(outR, outW, exR)
		return nil, nil, nil, fmt.Errorf("start container: %w", err)
	}
	// Our copy of the write end must go, or the reader never sees EOF.
	outW.Close()
	return lp, outR, exR, nil
}

// newContainer is the Container of lc, whose main process p has started,
// before its output is drained and its exit awaited.
func newContainer(r *Runner, lc *libcontainer.Container, cfg *configs.Config, p Process) *Container {
	var paths map[string]string
	if st, err := lc.State(); err == nil {
		// A copy: the state's map is the cgroup manager's own, from which
		// Destroy deletes while the usage sampler reads ours (a data race
		// make race found).
		paths = maps.Clone(st.CgroupPaths)
	}
	c := newContainerOf(r, lc.ID(), paths, cfg, p)
	c.c = lc
	return c
}

// newContainerOf is a Container without its libcontainer container (one
// the spawner started): lc loads it when something needs it.
func newContainerOf(r *Runner, id string, cgPaths map[string]string, cfg *configs.Config, p Process) *Container {
	c := &Container{
		id:      id,
		main:    p,
		cfg:     cfg,
		runner:  r,
		cgPaths: cgPaths,
		out:     newTailBuffer(outputTail),
		done:    make(chan struct{}),
	}
	// Kills counted before this process started (a cgroup left behind and
	// reused) are not about it.
	c.oomJudged = c.oomKills()
	return c
}

// drain copies the main process's output from r into the tail until every
// writer is gone (the container's processes have all exited), then closes
// r and the channel it returns.
func (c *Container) drain(r *os.File) <-chan struct{} {
	c.outR = r
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		_, _ = io.Copy(c.out, r)
		r.Close()
	}()
	return drained
}

func toExitStatus(st *os.ProcessState, err error) ExitStatus {
	if st == nil {
		if err == nil {
			err = errors.New("unknown exit status")
		}
		return ExitStatus{Code: -1, Err: err}
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return ExitStatus{Code: 128 + int(ws.Signal()), Signal: unix.SignalName(ws.Signal())}
	}
	return ExitStatus{Code: st.ExitCode()}
}

// ID is the container's id.
func (c *Container) ID() string { return c.id }

// lc is the libcontainer container: the one this process started or
// adopted, or, for one the spawner started, one loaded anew from its state
// (kept, a loaded container would hold its own parsed copy of the
// configuration, seccomp rules and all, where the runner's configurations
// share one profile: 40 KiB more per runtime at 1,000).
func (c *Container) lc() (*libcontainer.Container, error) {
	if c.c != nil {
		return c.c, nil
	}
	return libcontainer.Load(c.runner.cfg.StateDir, c.id)
}

// Done is closed when the main process has exited and its output is drained.
func (c *Container) Done() <-chan struct{} { return c.done }

// Exited reports whether the main process has ended (Done is closed).
func (c *Container) Exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// Exit is how the main process ended. Until Done is closed it is the zero
// ExitStatus, which says nothing.
func (c *Container) Exit() ExitStatus {
	if !c.Exited() {
		return ExitStatus{}
	}
	return c.exit
}

// Output is the tail of the main process's stdout and stderr, interleaved
// as written, up to 64 KiB. An adopted container's begins with the tail its
// earlier daemon kept (Adopt's output) and goes on with what the runtime
// wrote since the adoption; what it wrote while no daemon read is lost.
func (c *Container) Output() string { return c.out.String() }

// Stop asks the main process to end with SIGTERM and kills the container after
// grace (at once when grace is 0). PID 1 of a container ignores signals it does
// not handle, so SIGKILL is what usually ends a runtime. Stop returns once
// Done is closed, or 10 s after the SIGKILL.
func (c *Container) Stop(grace time.Duration) {
	c.closePark()
	if c.Exited() {
		return
	}
	if grace > 0 {
		_ = c.signalMain(unix.SIGTERM)
		select {
		case <-c.done:
			return
		case <-time.After(grace):
		}
	}
	if c.pidfd != nil {
		// The main process is PID 1 of the container's own PID
		// namespace: its death ends every process in it. Through the
		// pidfd rather than libcontainer, whose Signal on a container it
		// did not start opens a pidfd of its own (os.FindProcess) and
		// leaves it for the garbage collector to close.
		_ = c.signalMain(unix.SIGKILL)
	} else {
		_ = c.c.Signal(unix.SIGKILL)
	}
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
	}
}

// Destroy removes the container's state and cgroups. The main process must
// have been stopped. Destroying a destroyed container does nothing.
func (c *Container) Destroy() error {
	c.closePark()
	c.counters.close()
	lc, err := c.lc()
	if errors.Is(err, libcontainer.ErrNotExist) {
		return nil // destroyed already
	}
	if err != nil {
		return err
	}
	return lc.Destroy()
}

// Restart destroys this container, whose main process must have exited, and
// creates and runs a new one with the same id, configuration and main
// process. This Container keeps answering about the old main process.
func (c *Container) Restart() (*Container, error) {
	if !c.Exited() {
		return nil, fmt.Errorf("container: restart %s: main process still running", c.ID())
	}
	if err := c.Destroy(); err != nil {
		return nil, fmt.Errorf("destroy exited container: %w", err)
	}
	return c.runner.create(c.ID(), c.cfg, c.main)
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func newTailBuffer(max int) *tailBuffer { return &tailBuffer{max: max} }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - t.max; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

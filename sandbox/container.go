package sandbox

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"
)

// container is one libcontainer container and its main process, whose stdout
// and stderr are drained into a bounded tail buffer so the runtime never
// blocks on a full pipe.
type container struct {
	c       *libcontainer.Container
	proc    *libcontainer.Process
	out     *tailBuffer
	done    chan struct{} // closed when the main process has exited and its pipes are drained
	exit    exitStatus
	cgPaths map[string]string

	// oomJudged is the cgroup's OOM kill count at the last verdict: the
	// kills up to it were either the main process's death or survived by
	// it (a later exchange succeeded), so none of them can explain a death
	// after it. The counter covers every process of the cgroup over its
	// lifetime; only a rise past this mark can be about the main process.
	oomMu     sync.Mutex
	oomJudged int
}

type exitStatus struct {
	code      int
	signal    string
	err       error
	oomKilled bool
}

func (e exitStatus) String() string {
	switch {
	case e.oomKilled:
		return fmt.Sprintf("killed: out of memory (exit code %d)", e.code)
	case e.err != nil:
		return e.err.Error()
	case e.signal != "":
		return "killed by " + e.signal
	default:
		return fmt.Sprintf("exit code %d", e.code)
	}
}

// processSpec is the main process of a container.
type processSpec struct {
	Args []string
	Env  []string
	Cwd  string
	UID  int
	GID  int
	Sgid []int
}

// startContainer creates the container and runs its main process.
func startContainer(stateRoot, id string, cfg *configs.Config, ps processSpec) (*container, error) {
	lc, err := libcontainer.Create(stateRoot, id, cfg)
	if err != nil {
		return nil, fmt.Errorf("create container: %w", err)
	}
	ct, err := runMain(lc, ps)
	if err != nil {
		_ = lc.Destroy()
		return nil, err
	}
	return ct, nil
}

// runMain starts ps as the init process of lc, with its output on pipes.
func runMain(lc *libcontainer.Container, ps processSpec) (*container, error) {
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	p := &libcontainer.Process{
		Args:             ps.Args,
		Env:              ps.Env,
		Cwd:              ps.Cwd,
		UID:              ps.UID,
		GID:              ps.GID,
		AdditionalGroups: ps.Sgid,
		Stdout:           outW,
		Stderr:           outW,
		Init:             true,
	}
	if err := lc.Run(p); err != nil {
		outR.Close()
		outW.Close()
		return nil, fmt.Errorf("start container: %w", err)
	}
	// Our copy of the write end must go, or the reader never sees EOF.
	outW.Close()
	ct := &container{c: lc, proc: p, out: newTailBuffer(64 << 10), done: make(chan struct{})}
	if st, err := lc.State(); err == nil {
		ct.cgPaths = st.CgroupPaths
	}
	// Kills counted before this process started (a cgroup left behind and
	// reused) are not about it.
	ct.oomJudged = ct.oomKills()
	var drained sync.WaitGroup
	drained.Add(1)
	go func() {
		defer drained.Done()
		_, _ = io.Copy(ct.out, outR)
		outR.Close()
	}()
	go func() {
		st, err := p.Wait()
		drained.Wait()
		ct.exit = toExitStatus(st, err)
		ct.exit.oomKilled = ct.diedOfOOM(ct.exit)
		close(ct.done)
	}()
	return ct, nil
}

func toExitStatus(st *os.ProcessState, err error) exitStatus {
	if st == nil {
		if err == nil {
			err = errors.New("unknown exit status")
		}
		return exitStatus{code: -1, err: err}
	}
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return exitStatus{code: 128 + int(ws.Signal()), signal: unix.SignalName(ws.Signal())}
	}
	return exitStatus{code: st.ExitCode()}
}

// oomKills is how many processes of the container the kernel killed for
// want of memory, from the cgroup's own counters (memory.events on v2,
// memory.oom_control on v1): OOM notifications are not reliable on v2.
func (ct *container) oomKills() int {
	// A v1 memory hierarchy wins: on hybrid hosts "" is the unified
	// hierarchy, which has no memory controller there.
	var file string
	if p := ct.cgPaths["memory"]; p != "" {
		file = filepath.Join(p, "memory.oom_control")
	} else if p := ct.cgPaths[""]; p != "" {
		file = filepath.Join(p, "memory.events")
	} else {
		return 0
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "oom_kill" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}

// diedOfOOM is the verdict on the main process's death: the kernel's OOM
// killer only ever sends SIGKILL, and it counts a kill before it sends it, so
// an OOM death is a death by SIGKILL with the counter above the last verdict.
// A kill by SIGKILL shows as exit code 137 whether the main process took it
// itself or passed on its child's (executor-init, a shell), which is what
// runtimes' start scripts usually are. An ordinary exit is never an OOM
// death, however many other processes of the cgroup the kernel killed.
func (ct *container) diedOfOOM(e exitStatus) bool {
	if e.err != nil || e.code != 128+int(unix.SIGKILL) {
		return false
	}
	n := ct.oomKills()
	ct.oomMu.Lock()
	defer ct.oomMu.Unlock()
	if n <= ct.oomJudged {
		return false
	}
	ct.oomJudged = n
	return true
}

// oomKillsPending reports whether the kernel killed a process of the
// container for want of memory since the last verdict: only then can the
// main process be dying of it.
func (ct *container) oomKillsPending() bool {
	n := ct.oomKills()
	ct.oomMu.Lock()
	defer ct.oomMu.Unlock()
	return n > ct.oomJudged
}

// oomMark is the OOM kill count before an exchange with the runtime.
type oomMark struct {
	ct    *container
	kills int
}

func (ct *container) markOOM() oomMark {
	if ct == nil {
		return oomMark{}
	}
	return oomMark{ct: ct, kills: ct.oomKills()}
}

// survived records that the main process outlived every kill counted before
// the mark: an exchange that began after them succeeded. Kills during the
// exchange stay open, as the main process may be their victim yet.
func (m oomMark) survived() {
	if m.ct == nil {
		return
	}
	m.ct.oomMu.Lock()
	m.ct.oomJudged = max(m.ct.oomJudged, m.kills)
	m.ct.oomMu.Unlock()
}

// exited reports whether the main process has ended.
func (ct *container) exited() bool {
	select {
	case <-ct.done:
		return true
	default:
		return false
	}
}

// stop asks the main process to end with SIGTERM and kills the container after
// grace. PID 1 of a container ignores signals it does not handle, so SIGKILL
// is what usually ends a runtime.
func (ct *container) stop(grace time.Duration) {
	if ct.exited() {
		return
	}
	if grace > 0 {
		_ = ct.proc.Signal(unix.SIGTERM)
		select {
		case <-ct.done:
			return
		case <-time.After(grace):
		}
	}
	_ = ct.c.Signal(unix.SIGKILL)
	select {
	case <-ct.done:
	case <-time.After(10 * time.Second):
	}
}

// destroy removes the container's state and cgroups. The main process must
// have been stopped.
func (ct *container) destroy() error {
	return ct.c.Destroy()
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

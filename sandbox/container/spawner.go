package container

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"sync"
	"time"

	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"
)

// libcontainer makes a container's init by re-executing the binary of the
// process that calls Run (/proc/self/exe, sealed) as "init": the Go
// runtime starts and every package of the binary runs its init before
// libcontainer.Init takes over. The daemon's binary is large (the image
// store, S3, Prometheus, the API: some 350 packages, 44 MB), and its start
// was most of what separated a runtime's container start from a bare
// libcontainer start: 8.2 ms to start it against 2.3 ms for a binary of
// this package alone, and 33 -> 44 ms for a container start when the
// benchmark's binary was given the daemon's packages (measured on the
// 2-core VM, BenchmarkContainerStart/seccomp+userns).
//
// So the runner starts containers through the spawner: executor-spawn
// (cmd/executor-spawn), a small binary of this package, run as the
// runner's child for as long as the runner lives. It is started from the
// spawn namespace and stays in it. For each start the runner sends the
// container's configuration and main process, with the process's files and
// the clones of the mounts the start needs (see spawn.go) as descriptors;
// the spawner creates the container, places the clones, runs it and
// answers with a pidfd of the main process and the read ends of its FIFOs.
// The runner then loads the container from its state directory, as it
// loads one it adopts, and holds it as its own: stop, exec, limits, stats
// and destroy go through libcontainer in the daemon as before. The main
// process is the spawner's child: the spawner waits for it and reports how
// it ended.
//
// Should the spawner die, starts in flight fail, the next one starts a new
// spawner, and the containers it started live on: their exits are found as
// an adopted container's are, through the pidfd and executor-init's exit
// report. When the runner closes, the spawner exits and leaves its
// containers running, as the daemon does.

// errSpawnerGone is the error of a start that the spawner did not answer:
// it died, or the runner closed.
var errSpawnerGone = errors.New("container: the spawner exited")

// spawner starts containers through executor-spawn processes, one at a
// time, starting another when the last one died.
type spawner struct {
	path  string
	spawn *spawnNS

	mu     sync.Mutex
	proc   *spawnerProc // nil before the first start and after Close
	closed bool
}

// newSpawner starts executor-spawn at path, from spawn when it is not nil.
func newSpawner(path string, spawn *spawnNS) (*spawner, error) {
	s := &spawner{path: path, spawn: spawn}
	p, err := startSpawnerProc(path, spawn)
	if err != nil {
		return nil, err
	}
	s.proc = p
	return s, nil
}

// current is the live spawner process, started anew when the last one
// died.
func (s *spawner) current() (*spawnerProc, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errSpawnerGone
	}
	if s.proc != nil && !s.proc.ended() {
		return s.proc, nil
	}
	p, err := startSpawnerProc(s.path, s.spawn)
	if err != nil {
		return nil, err
	}
	s.proc = p
	return p, nil
}

// pid is the live spawner process's pid, 0 when there is none.
func (s *spawner) pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil || s.proc.ended() {
		return 0
	}
	return s.proc.cmd.Process.Pid
}

// close ends the spawner process: it exits once it reads the end of its
// socket, and leaves the containers it started running.
func (s *spawner) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.proc == nil {
		s.closed = true
		return nil
	}
	s.closed = true
	return s.proc.close()
}

// create creates and starts container id of r through the spawner, as
// r.create does in this process.
func (s *spawner) create(r *Runner, id string, cfg *configs.Config, p Process) (*Container, error) {
	proc, err := s.current()
	if err != nil {
		return nil, fmt.Errorf("start container: %w", err)
	}
	carry, clones, err := s.spawn.carry(cfg)
	if err != nil {
		return nil, err
	}
	defer closeAll(clones...)
	req := &spawnRequest{
		StateDir: r.cfg.StateDir,
		ID:       id,
		Config:   cfg,
		Process: spawnProcess{
			Args: p.Args, Env: p.Env, Cwd: p.Cwd, UID: p.UID, GID: p.GID, Groups: p.Groups,
			ReportsExit: p.ReportsExit,
		},
		Files: len(p.extraFiles),
		Carry: carry,
	}
	req.Config, req.Seccomp = proc.sendable(cfg, r.seccomp)
	rep, files, exits, err := proc.start(req, append(slices.Clip(p.extraFiles), clones...))
	if err != nil {
		return nil, fmt.Errorf("start container: %w", err)
	}
	// The spawner's answer: a pidfd of the main process, the output
	// FIFO's read end and, when it reports its exit, the exit FIFO's.
	if len(files) < 2 || len(files) > 3 {
		closeAll(files...)
		return nil, fmt.Errorf("start container: the spawner answered with %d descriptors", len(files))
	}
	pidfd, outR := files[0], files[1]
	var exR *os.File
	if len(files) == 3 {
		exR = files[2]
	}
	// Not loaded from its state here (~1 ms, libcontainer.Load): most
	// starts never need the libcontainer container, and what does
	// (Destroy, Exec) loads it then (Container.lc).
	c := newContainerOf(r, id, rep.CgroupPaths, cfg, p)
	c.pidfd = pidfd
	drained := c.drain(outR)
	go func() {
		exit, reported, werr := proc.exitOf(exits, pidfd)
		if !reported {
			// The exit is found as an adopted container's is.
			exit = adoptedExit(exR, werr)
			exR = nil
		}
		closeAll(exR, pidfd)
		<-drained
		c.exit = exit
		c.exit.OOMKilled = c.diedOfOOM(c.exit)
		close(c.done)
	}()
	return c, nil
}

// exec starts a command in container id of r through the spawner, with its
// stdout and stderr on the files given, and returns how to wait for its exit
// code (see Container.startCommand).
func (s *spawner) exec(r *Runner, id string, cfg *configs.Config, p spawnProcess, stdout, stderr *os.File, extra []*os.File) (func(context.Context) (int, error), error) {
	proc, err := s.current()
	if err != nil {
		return nil, err
	}
	// runc starts the command's init in the container's root directory
	// before it joins the container's namespaces: the spawn namespace
	// needs the root (and so the rest a start carries) for that moment.
	carry, clones, err := s.spawn.carry(cfg)
	if err != nil {
		return nil, err
	}
	defer closeAll(clones...)
	req := &spawnRequest{Op: spawnOpExec, StateDir: r.cfg.StateDir, ID: id, Process: p, Files: 2 + len(extra), Carry: carry}
	_, files, exits, err := proc.start(req, slices.Concat([]*os.File{stdout, stderr}, extra, clones))
	if err != nil {
		return nil, err
	}
	if len(files) != 1 {
		closeAll(files...)
		return nil, fmt.Errorf("the spawner answered with %d descriptors", len(files))
	}
	pidfd := files[0]
	return func(ctx context.Context) (int, error) {
		defer pidfd.Close()
		stop := context.AfterFunc(ctx, func() { _ = pidfdSignal(pidfd, unix.SIGKILL) })
		defer stop()
		exit, reported, _ := proc.exitOf(exits, pidfd)
		if !reported {
			return -1, fmt.Errorf("%w before it reported how the command ended", errSpawnerGone)
		}
		if exit.Err != nil {
			return -1, exit.Err
		}
		return exit.Code, nil
	}, nil
}

// spawnerProc is one executor-spawn process and the starts it answers.
type spawnerProc struct {
	conn *net.UnixConn
	cmd  *exec.Cmd
	gone chan struct{} // closed once its socket closed: it exited, or close
	// seccomp is the digest of the spawner's default seccomp profile, as
	// it greeted; empty when it has none.
	seccomp string

	mu      sync.Mutex
	next    uint64
	answers map[uint64]chan spawnAnswer
	exits   map[uint64]chan ExitStatus
}

// spawnAnswer is the spawner's answer to a start, with its descriptors.
type spawnAnswer struct {
	reply spawnReply
	files []*os.File
}

// startSpawnerProc starts executor-spawn at path with its end of the
// socket as fd 3, from spawn when it is not nil, and reads its answers.
func startSpawnerProc(path string, spawn *spawnNS) (*spawnerProc, error) {
	conn, theirs, err := spawnPair()
	if err != nil {
		return nil, fmt.Errorf("container: spawner: %w", err)
	}
	defer theirs.Close()
	cmd := exec.Command(path)
	cmd.ExtraFiles = []*os.File{theirs}
	// libcontainer's own messages (logrus) go where the daemon's go.
	cmd.Stderr = os.Stderr
	if err := spawn.within(cmd.Start); err != nil {
		conn.Close()
		return nil, fmt.Errorf("container: start the spawner %s: %w", path, err)
	}
	// Its end is the spawner's alone now: its death reads as the end of
	// the socket.
	theirs.Close()
	hello, err := greeted(conn)
	if err != nil {
		conn.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("container: start the spawner %s: %w", path, err)
	}
	p := &spawnerProc{
		conn:    conn,
		cmd:     cmd,
		seccomp: hello.Seccomp,
		gone:    make(chan struct{}),
		answers: map[uint64]chan spawnAnswer{},
		exits:   map[uint64]chan ExitStatus{},
	}
	go p.read()
	go func() { _ = cmd.Wait() }()
	return p, nil
}

// spawnerGreeting bounds the wait for a new spawner's first message.
const spawnerGreeting = 30 * time.Second

// greeted reads a new spawner's first message, which says the protocol it
// speaks and the seccomp profile it holds: a spawner that dies at once (not
// executable here, a wrong architecture) or speaks another protocol (left
// from another build) is found before any start depends on it.
func greeted(conn *net.UnixConn) (spawnReply, error) {
	var hello spawnReply
	if err := conn.SetReadDeadline(time.Now().Add(spawnerGreeting)); err != nil {
		return hello, err
	}
	defer conn.SetReadDeadline(time.Time{})
	files, err := recvSpawnMsg(conn, make([]byte, 4096), &hello)
	closeAll(files...)
	if err != nil {
		return hello, fmt.Errorf("no greeting: %w", err)
	}
	if hello.Protocol != spawnProtocol {
		return hello, fmt.Errorf("it speaks protocol %d and this executor %d: install the executor-spawn built with this executor beside it", hello.Protocol, spawnProtocol)
	}
	return hello, nil
}

// sendable is cfg as a start's message carries it, and the digest that
// stands for its seccomp rules: when they are profile's, the runner's
// default, and the spawner greeted with profile's digest, a copy of cfg
// without them (see profile.go); else cfg itself and no digest.
func (p *spawnerProc) sendable(cfg *configs.Config, profile seccompProfile) (*configs.Config, string) {
	if cfg.Seccomp == nil || cfg.Seccomp != profile.rules || p.seccomp == "" || p.seccomp != profile.digest {
		return cfg, ""
	}
	sent := *cfg
	sent.Seccomp = nil
	return &sent, profile.digest
}

// ended reports whether the process's socket closed.
func (p *spawnerProc) ended() bool {
	select {
	case <-p.gone:
		return true
	default:
		return false
	}
}

// close closes the runner's end of the socket: the spawner exits.
func (p *spawnerProc) close() error { return p.conn.Close() }

// start sends req with files and returns the answer's descriptors and the
// channel its exit report will come on.
func (p *spawnerProc) start(req *spawnRequest, files []*os.File) (spawnReply, []*os.File, <-chan ExitStatus, error) {
	answer := make(chan spawnAnswer, 1)
	exit := make(chan ExitStatus, 1)
	p.mu.Lock()
	p.next++
	req.Tag = p.next
	p.answers[req.Tag], p.exits[req.Tag] = answer, exit
	p.mu.Unlock()
	forget := func() {
		p.mu.Lock()
		delete(p.answers, req.Tag)
		delete(p.exits, req.Tag)
		p.mu.Unlock()
	}
	if err := sendSpawnMsg(p.conn, req, files); err != nil {
		forget()
		return spawnReply{}, nil, nil, fmt.Errorf("ask the spawner: %w", err)
	}
	select {
	case a := <-answer:
		if a.reply.Err != "" {
			forget()
			closeAll(a.files...)
			return spawnReply{}, nil, nil, errors.New(a.reply.Err)
		}
		return a.reply, a.files, exit, nil
	case <-p.gone:
		forget()
		// It may have answered just before it died.
		select {
		case a := <-answer:
			closeAll(a.files...)
		default:
		}
		return spawnReply{}, nil, nil, errSpawnerGone
	}
}

// read hands each of the spawner's messages to whoever waits for it, until
// its socket closes.
func (p *spawnerProc) read() {
	defer close(p.gone)
	buf := make([]byte, 64<<10)
	for {
		var rep spawnReply
		files, err := recvSpawnMsg(p.conn, buf, &rep)
		if err != nil {
			return
		}
		p.mu.Lock()
		var delivered bool
		if rep.Exit {
			if ch, ok := p.exits[rep.Tag]; ok {
				delete(p.exits, rep.Tag)
				ch <- spawnedExit(rep)
				delivered = true
			}
		} else if ch, ok := p.answers[rep.Tag]; ok {
			delete(p.answers, rep.Tag)
			ch <- spawnAnswer{reply: rep, files: files}
			delivered = true
		}
		p.mu.Unlock()
		if !delivered || rep.Exit {
			closeAll(files...)
		}
	}
}

// exitOf waits for the exit report that comes on exits, for the process
// of pidfd. Should the spawner die first without one, it waits for the
// process through pidfd instead and says the exit was not reported, with
// that wait's error.
func (p *spawnerProc) exitOf(exits <-chan ExitStatus, pidfd *os.File) (exit ExitStatus, reported bool, werr error) {
	select {
	case exit = <-exits:
		return exit, true, nil
	case <-p.gone:
	}
	// It may have reported just before it died.
	select {
	case exit = <-exits:
		return exit, true, nil
	default:
		return ExitStatus{}, false, awaitReadable(pidfd)
	}
}

// spawnedExit is the ExitStatus an exit report describes.
func spawnedExit(rep spawnReply) ExitStatus {
	e := ExitStatus{Code: rep.Code, Signal: rep.Signal}
	if rep.ExitErr != "" {
		e.Err = errors.New(rep.ExitErr)
	}
	return e
}

// pidfdSignal sends sig to the process of pidfd.
func pidfdSignal(pidfd *os.File, sig unix.Signal) error {
	rc, err := pidfd.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.PidfdSendSignal(int(fd), sig, nil, 0) }); err != nil {
		return err
	}
	return serr
}

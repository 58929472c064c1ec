package container

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/opencontainers/runc/libcontainer"
	"golang.org/x/sys/unix"
)

// ServeSpawner is executor-spawn's work (see spawner.go): on conn, its end
// of the socket its runner gave it, it starts the containers the runner
// asks for and reports how their main processes ended, until the runner
// closes its end. The containers it started keep running when it returns.
func ServeSpawner(conn *net.UnixConn) error {
	// Without its own profile it is sent the rules with every start.
	profile, _ := defaultSeccompProfile()
	if err := sendSpawnMsg(conn, spawnReply{Protocol: spawnProtocol, Seccomp: profile.digest}, nil); err != nil {
		return fmt.Errorf("greet the executor: %w", err)
	}
	buf := make([]byte, maxSpawnMsg)
	for {
		var req spawnRequest
		files, err := recvSpawnMsg(conn, buf, &req)
		if errors.Is(err, errSpawnEOF) || errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		go serveStart(conn, &req, files, profile)
	}
}

// serveStart starts req's container, answers, and once its main process
// ended, reports how. profile is the spawner's default seccomp profile.
func serveStart(conn *net.UnixConn, req *spawnRequest, files []*os.File, profile seccompProfile) {
	// The runner gone, nobody is left to tell: the send errors are the
	// socket's end, which ServeSpawner sees too.
	answer := func(rep spawnReply, fds ...*os.File) { _ = sendSpawnMsg(conn, rep, fds) }
	start := spawnStart
	if req.Op == spawnOpExec {
		start = spawnExec
	}
	tag := req.Tag
	if err := req.withProfile(profile); err != nil {
		closeAll(files...)
		answer(spawnReply{Tag: tag, Err: err.Error()})
		return
	}
	lp, paths, fds, err := start(req, files)
	if err != nil {
		answer(spawnReply{Tag: tag, Err: err.Error()})
		return
	}
	pid, _ := lp.Pid()
	answer(spawnReply{Tag: tag, Pid: pid, CgroupPaths: paths}, fds...)
	closeAll(fds...)
	// Neither req nor lp is used from here on, so that neither stays
	// alive while the process runs: they hold the container's parsed
	// configuration, which would cost the spawner that much per runtime
	// (the profile's rules, the most of it once parsed, some 100 KB, are
	// shared when the runner sent their digest). The process is waited
	// for by pid; what is left of it is this goroutine.
	exit := reap(pid)
	rep := spawnReply{Tag: tag, Exit: true, Code: exit.Code, Signal: exit.Signal}
	if exit.Err != nil {
		rep.ExitErr = exit.Err.Error()
	}
	answer(rep)
}

// withProfile gives req's configuration the spawner's profile when req
// names it by its digest. A digest that is not the profile's is refused:
// the container would otherwise run with another filter than the runner
// asked for (or none).
func (req *spawnRequest) withProfile(profile seccompProfile) error {
	if req.Seccomp == "" {
		return nil
	}
	if req.Config == nil || req.Config.Seccomp != nil {
		return errors.New("spawner: a seccomp digest with no configuration for it, or with rules of its own")
	}
	if profile.rules == nil || req.Seccomp != profile.digest {
		return fmt.Errorf("spawner: seccomp profile %q asked for, and this spawner's is %q", req.Seccomp, profile.digest)
	}
	// Shared by every start: libcontainer reads a configuration's
	// profile and never writes it.
	req.Config.Seccomp = profile.rules
	return nil
}

// reap waits for pid, a child of this process, to exit, and reaps it. The
// wait is in the poller (see awaitExit); where it cannot be, wait4 blocks a
// thread instead.
func reap(pid int) ExitStatus {
	_ = awaitExit(pid)
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(pid, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return ExitStatus{Code: -1, Err: fmt.Errorf("wait for process %d: %w", pid, err)}
		}
		break
	}
	if ws.Signaled() {
		return ExitStatus{Code: 128 + int(ws.Signal()), Signal: unix.SignalName(ws.Signal())}
	}
	return ExitStatus{Code: ws.ExitStatus()}
}

// spawnStart creates and starts req's container with the mounts it carries
// placed, and returns its main process, its cgroups and what the runner is
// handed: a pidfd of the process and the read ends of its FIFOs. files are
// req's descriptors, closed before it returns.
func spawnStart(req *spawnRequest, files []*os.File) (*libcontainer.Process, map[string]string, []*os.File, error) {
	defer closeAll(files...)
	if req.Files < 0 || req.Files+len(req.Carry) != len(files) {
		return nil, nil, nil, fmt.Errorf("spawner: %d descriptors for %d files and %d mounts", len(files), req.Files, len(req.Carry))
	}
	extra, clones := files[:req.Files], files[req.Files:]
	placed, err := placeMounts(req.Carry, clones)
	// The container has its own copies by now (or never will).
	defer unplaceMounts(placed)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("container: spawn namespace: %w", err)
	}
	lc, err := libcontainer.Create(req.StateDir, req.ID, req.Config)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("create container: %w", err)
	}
	rp := req.Process
	p := Process{
		Args: rp.Args, Env: rp.Env, Cwd: rp.Cwd, UID: rp.UID, GID: rp.GID, Groups: rp.Groups,
		ReportsExit: rp.ReportsExit, extraFiles: extra,
	}
	lp, outR, exR, err := startMain(lc, req.StateDir, p, true, lc.Run)
	if err != nil {
		return nil, nil, nil, errors.Join(err, lc.Destroy())
	}
	pidfd, err := processPidfd(lp)
	if err != nil {
		// Without a pidfd the runner could not tell this process from
		// another that took its pid: it does not run.
		_ = lp.Signal(unix.SIGKILL)
		_, _ = lp.Wait()
		closeAll(outR, exR)
		return nil, nil, nil, errors.Join(fmt.Errorf("start container: %w", err), lc.Destroy())
	}
	out := []*os.File{pidfd, outR}
	if exR != nil {
		out = append(out, exR)
	}
	var paths map[string]string
	if st, err := lc.State(); err == nil {
		paths = st.CgroupPaths
	}
	return lp, paths, out, nil
}

// spawnExec starts req's command in its running container, with the mounts
// it carries placed while it starts, and returns the process, no cgroups
// (the container's are known) and a pidfd of it, as spawnStart answers.
// files are the command's stdout and stderr, its extra files (fds 3 and up:
// the seccomp filter, see filter.go) and the clones, closed before it
// returns.
func spawnExec(req *spawnRequest, files []*os.File) (*libcontainer.Process, map[string]string, []*os.File, error) {
	defer closeAll(files...)
	if req.Files < 2 || len(files) != req.Files+len(req.Carry) {
		return nil, nil, nil, fmt.Errorf("spawner: %d descriptors for a command's stdout, stderr, %d more files and %d mounts", len(files), max(req.Files-2, 0), len(req.Carry))
	}
	placed, err := placeMounts(req.Carry, files[req.Files:])
	defer unplaceMounts(placed)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("container: spawn namespace: %w", err)
	}
	lc, err := libcontainer.Load(req.StateDir, req.ID)
	if err != nil {
		return nil, nil, nil, err
	}
	rp := req.Process
	lp := &libcontainer.Process{
		Args: rp.Args, Env: rp.Env, Cwd: rp.Cwd, UID: rp.UID, GID: rp.GID, AdditionalGroups: rp.Groups,
		Stdout: files[0], Stderr: files[1], ExtraFiles: files[2:req.Files],
	}
	if err := lc.Run(lp); err != nil {
		return nil, nil, nil, err
	}
	pidfd, err := processPidfd(lp)
	if err != nil {
		_ = lp.Signal(unix.SIGKILL)
		_, _ = lp.Wait()
		return nil, nil, nil, err
	}
	return lp, nil, []*os.File{pidfd}, nil
}

// processPidfd is a pidfd of lp, a child of this process not reaped yet.
func processPidfd(lp *libcontainer.Process) (*os.File, error) {
	pid, err := lp.Pid()
	if err != nil {
		return nil, err
	}
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("pidfd of process %d: %w", pid, os.NewSyscallError("pidfd_open", err))
	}
	return os.NewFile(uintptr(fd), fmt.Sprintf("pidfd:%d", pid)), nil
}

// ServeSpawnerFD is ServeSpawner on the socket at descriptor fd, which must
// be a SOCK_SEQPACKET unix socket (what the runner hands executor-spawn).
func ServeSpawnerFD(fd int) error {
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return fmt.Errorf("descriptor %d: not the executor's socket: %w", fd, err)
	}
	if typ != unix.SOCK_SEQPACKET {
		return fmt.Errorf("descriptor %d: not the executor's socket (type %d)", fd, typ)
	}
	f := os.NewFile(uintptr(fd), "spawn-socket")
	conn, err := fileConn(f)
	f.Close()
	if err != nil {
		return err
	}
	defer conn.Close()
	return ServeSpawner(conn)
}

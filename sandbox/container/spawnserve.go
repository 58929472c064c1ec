package container

import (
	"context"
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
	if err := sendSpawnMsg(conn, spawnReply{Protocol: spawnProtocol}, nil); err != nil {
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
		go serveStart(conn, &req, files)
	}
}

// serveStart starts req's container, answers, and once its main process
// ended, reports how.
func serveStart(conn *net.UnixConn, req *spawnRequest, files []*os.File) {
	// The runner gone, nobody is left to tell: the send errors are the
	// socket's end, which ServeSpawner sees too.
	answer := func(rep spawnReply, fds ...*os.File) { _ = sendSpawnMsg(conn, rep, fds) }
	lp, fds, err := spawnStart(req, files)
	if err != nil {
		answer(spawnReply{Tag: req.Tag, Err: err.Error()})
		return
	}
	pid, _ := lp.Pid()
	answer(spawnReply{Tag: req.Tag, Pid: pid}, fds...)
	closeAll(fds...)
	st, err := waitProcess(context.Background(), lp)
	exit := toExitStatus(st, err)
	rep := spawnReply{Tag: req.Tag, Exit: true, Code: exit.Code, Signal: exit.Signal}
	if exit.Err != nil {
		rep.ExitErr = exit.Err.Error()
	}
	answer(rep)
}

// spawnStart creates and starts req's container with the mounts it carries
// placed, and returns its main process and what the runner is handed: a
// pidfd of the process and the read ends of its FIFOs. files are req's
// descriptors, closed before it returns.
func spawnStart(req *spawnRequest, files []*os.File) (*libcontainer.Process, []*os.File, error) {
	defer closeAll(files...)
	if req.Files < 0 || req.Files+len(req.Carry) != len(files) {
		return nil, nil, fmt.Errorf("spawner: %d descriptors for %d files and %d mounts", len(files), req.Files, len(req.Carry))
	}
	extra, clones := files[:req.Files], files[req.Files:]
	placed, err := placeMounts(req.Carry, clones)
	// The container has its own copies by now (or never will).
	defer unplaceMounts(placed)
	if err != nil {
		return nil, nil, fmt.Errorf("container: spawn namespace: %w", err)
	}
	lc, err := libcontainer.Create(req.StateDir, req.ID, req.Config)
	if err != nil {
		return nil, nil, fmt.Errorf("create container: %w", err)
	}
	rp := req.Process
	p := Process{
		Args: rp.Args, Env: rp.Env, Cwd: rp.Cwd, UID: rp.UID, GID: rp.GID, Groups: rp.Groups,
		ReportsExit: rp.ReportsExit, extraFiles: extra,
	}
	lp, outR, exR, err := startMain(lc, req.StateDir, p, true, lc.Run)
	if err != nil {
		return nil, nil, errors.Join(err, lc.Destroy())
	}
	pid, err := lp.Pid()
	var fd int
	if err == nil {
		fd, err = unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	}
	if err != nil {
		// Without a pidfd the runner could not tell this process from
		// another that took its pid: it does not run.
		_ = lp.Signal(unix.SIGKILL)
		_, _ = lp.Wait()
		closeAll(outR, exR)
		return nil, nil, errors.Join(fmt.Errorf("start container: pidfd of its main process: %w", err), lc.Destroy())
	}
	out := []*os.File{os.NewFile(uintptr(fd), fmt.Sprintf("pidfd:%d", pid)), outR}
	if exR != nil {
		out = append(out, exR)
	}
	return lp, out, nil
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

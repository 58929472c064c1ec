package container

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/opencontainers/runc/libcontainer"
)

// pipeLinger bounds how long Exec waits, after the command exited, for its
// output pipes to close.
const pipeLinger = time.Second

// Exec runs args in the container as its main process's user, with its
// environment and working directory, and returns the exit code (128+n for a
// death by signal n). The command's stdout goes to stdout and its stderr to
// stderr, or to stdout too, in the order written, when stderr is nil; a nil
// stdout discards. ctx ending kills the command and Exec returns ctx's error.
//
// Children the command leaves running may hold its output open: Exec waits
// for them at most a second after the command exits, and what they write
// later is lost. Exec returns once its last write to stdout or stderr has
// returned, so the writers may be read as soon as it does.
func (c *Container) Exec(ctx context.Context, args []string, stdout, stderr io.Writer) (int, error) {
	if c.Exited() {
		return -1, ErrNotRunning
	}
	if err := ctx.Err(); err != nil {
		return -1, err
	}
	if stdout == nil {
		stdout = io.Discard
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
	wait, err := c.startCommand(args, streams[0].w, errW)
	if err != nil {
		closeAll()
		return -1, fmt.Errorf("start command: %w", err)
	}
	var copies sync.WaitGroup
	for _, s := range streams {
		// Our copy of the write end must go, or the reader never sees EOF.
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
	// ctx ending kills the command; it is reaped all the same.
	code, werr := wait(ctx)
	// Children the command left running may hold the pipes open: do not
	// wait for them longer than a moment.
	select {
	case <-copied:
	case <-time.After(pipeLinger):
	}
	for _, s := range streams {
		s.r.Close()
	}
	// Closing the read ends ends the copies; wait for them so no write to
	// the caller's writers happens after Exec returns.
	<-copied
	if err := ctx.Err(); err != nil {
		return -1, err
	}
	if werr != nil {
		return -1, fmt.Errorf("wait for command: %w", werr)
	}
	return code, nil
}

// startCommand starts args in the container as its main process's user,
// with its environment and directory, its stdout and stderr on the files
// given, and returns how to wait for it: the wait's ctx ending kills it.
// Through the spawner when the runner has one (see spawner.go): runc's init
// for the command is then the spawner's small binary rather than the
// daemon's.
func (c *Container) startCommand(args []string, stdout, stderr *os.File) (wait func(context.Context) (int, error), err error) {
	args, extra, err := c.execFiltered(args)
	if err != nil {
		return nil, err
	}
	if s := c.runner.spawner; s != nil {
		return s.exec(c.runner, c.id, c.cfg, spawnProcess{
			Args: args, Env: c.main.Env, Cwd: c.main.Cwd, UID: c.main.UID, GID: c.main.GID, Groups: c.main.Groups,
		}, stdout, stderr, extra)
	}
	p := &libcontainer.Process{
		Args:             args,
		Env:              c.main.Env,
		Cwd:              c.main.Cwd,
		UID:              c.main.UID,
		GID:              c.main.GID,
		AdditionalGroups: c.main.Groups,
		Stdout:           stdout,
		Stderr:           stderr,
		ExtraFiles:       extra,
	}
	lc, err := c.lc()
	if err != nil {
		return nil, err
	}
	if err := lc.Run(p); err != nil {
		return nil, err
	}
	return func(ctx context.Context) (int, error) {
		st, err := waitProcess(ctx, p)
		if st == nil {
			return -1, err
		}
		return toExitStatus(st, nil).Code, nil
	}, nil
}

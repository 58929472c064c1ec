package main

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"time"

	"golang.org/x/sys/unix"
)

// behaveShell runs the request body with sh -c before answering and answers
// with its output. It is function code at its most hostile: the executor's
// attacker tests use it to plant links, FIFOs, sockets and sparse files where
// the executor reads (LOG_ID names this request's log files in LOGS_DIR), to
// fill the disk and to fork.
//
// ?logid=ID answers with that log id instead of this request's own, the way a
// runtime can point the executor at files it planted earlier (or at a name
// that climbs out of the logs directory).
func behaveShell(ctx context.Context, inv *invocation) (response, error) {
	id := ""
	if fs, ok := inv.log.(*fileSink); ok {
		id = fs.id
		if answer := inv.req.URL.Query().Get("logid"); answer != "" {
			fs.answerAs(answer)
		}
	}
	cmd := exec.CommandContext(ctx, "sh", "-c", string(inv.body))
	cmd.Env = append(inv.srv.cfg.Environ(), "LOG_ID="+id, "LOGS_DIR="+inv.srv.cfg.LogsDir)
	// Background processes the script leaves (a swap loop racing the
	// executor) may keep the output pipe open: the answer must not wait.
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		out = append(out, fmt.Sprintf("shell: %v\n", err)...)
	}
	return textResponse(http.StatusOK, string(out)), nil
}

// makeSocket leaves a unix socket file at path. busybox has no way to make
// one, and the attacker tests plant sockets where the executor reads.
func makeSocket(path string) error {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	// The file stays after the fd is closed: nothing unlinks it.
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		return fmt.Errorf("bind %s: %w", path, err)
	}
	return nil
}

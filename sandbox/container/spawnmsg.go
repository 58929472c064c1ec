package container

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"
)

// The daemon and executor-spawn talk over a SOCK_SEQPACKET socket pair:
// one message is one JSON value, with the descriptors it hands over as
// SCM_RIGHTS. Messages keep their boundaries, so no framing is needed, and
// the descriptors arrive with the message that names them.

// spawnProtocol is the version of the messages below. executor-spawn says
// its own first (a spawnReply with Protocol set, and Seccomp); a runner
// refuses one that speaks another, such as an executor-spawn left from an
// older install.
const spawnProtocol = 1

// maxSpawnMsg bounds a message: a start carries the container's whole
// configuration, the seccomp profile's rules the most of it when the
// spawner does not hold them (see profile.go).
const maxSpawnMsg = 1 << 20

// maxSpawnFDs bounds the descriptors a message hands over (the kernel's
// SCM_MAX_FD is 253).
const maxSpawnFDs = 64

// spawnOpExec is a spawnRequest's Op for a command in a running container
// (Container.Exec); an empty Op creates and starts a container.
const spawnOpExec = "exec"

// spawnRequest asks executor-spawn to create and start a container, or to
// start a command in one (Op spawnOpExec: Config and Carry unused, and the
// descriptors are the command's stdout and stderr).
type spawnRequest struct {
	Op       string          `json:"op,omitempty"`
	Tag      uint64          `json:"tag"`
	StateDir string          `json:"stateDir"`
	ID       string          `json:"id"`
	Config   *configs.Config `json:"config"`
	Process  spawnProcess    `json:"process"`
	// Files is how many of the descriptors are the process's extra
	// files (fd 3 on), in order; the rest are the clones of Carry's
	// mounts, one each.
	Files int      `json:"files"`
	Carry []string `json:"carry,omitempty"`
	// Seccomp, when set, is the digest of the spawner's own default
	// profile (the one it greeted with), which Config is to get: Config's
	// Seccomp is nil then (see profile.go).
	Seccomp string `json:"seccomp,omitempty"`
}

// spawnProcess is a Process as it travels: its files are descriptors.
type spawnProcess struct {
	Args        []string `json:"args"`
	Env         []string `json:"env"`
	Cwd         string   `json:"cwd"`
	UID         int      `json:"uid"`
	GID         int      `json:"gid"`
	Groups      []int    `json:"groups,omitempty"`
	ReportsExit bool     `json:"reportsExit,omitempty"`
}

// spawnReply answers a request (Exit false) or reports, later, how the main
// process it started ended (Exit true). The first message executor-spawn
// sends is none of these: it has Protocol and Seccomp set, and nothing else.
type spawnReply struct {
	Protocol int `json:"protocol,omitempty"`
	// Seccomp is, in the greeting, the digest of the spawner's default
	// seccomp profile; empty when it has none.
	Seccomp string `json:"seccomp,omitempty"`
	Tag     uint64 `json:"tag"`
	// Err is why the start failed; the container is gone then.
	Err string `json:"err,omitempty"`
	// A start's answer: the main process's pid, and as descriptors a
	// pidfd of it, the output FIFO's read end and, when it reports its
	// exit, the exit FIFO's. A command's: its pid and a pidfd of it.
	Pid int `json:"pid,omitempty"`
	// CgroupPaths are a started container's cgroups (libcontainer's
	// State), so that the runner need not load the container's state to
	// know them.
	CgroupPaths map[string]string `json:"cgroupPaths,omitempty"`
	// An exit report.
	Exit    bool   `json:"exit,omitempty"`
	Code    int    `json:"code,omitempty"`
	Signal  string `json:"signal,omitempty"`
	ExitErr string `json:"exitErr,omitempty"`
}

// sendSpawnMsg sends v with files' descriptors.
func sendSpawnMsg(conn *net.UnixConn, v any, files []*os.File) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if len(b) > maxSpawnMsg {
		return fmt.Errorf("spawn message of %d bytes, more than %d", len(b), maxSpawnMsg)
	}
	if len(files) > maxSpawnFDs {
		return fmt.Errorf("spawn message with %d descriptors, more than %d", len(files), maxSpawnFDs)
	}
	var oob []byte
	if len(files) > 0 {
		fds := make([]int, len(files))
		for i, f := range files {
			fds[i] = int(f.Fd())
		}
		oob = unix.UnixRights(fds...)
	}
	n, oobn, err := conn.WriteMsgUnix(b, oob, nil)
	if err != nil {
		return err
	}
	if n != len(b) || oobn != len(oob) {
		return fmt.Errorf("spawn message cut short: %d of %d bytes, %d of %d control bytes", n, len(b), oobn, len(oob))
	}
	return nil
}

// recvSpawnMsg reads one message into v, with the descriptors it handed
// over as files (close-on-exec, as Go's net package receives them). buf
// holds the message while it is decoded; it must have room for
// maxSpawnMsg bytes.
func recvSpawnMsg(conn *net.UnixConn, buf []byte, v any) ([]*os.File, error) {
	oob := make([]byte, unix.CmsgSpace(maxSpawnFDs*4))
	n, oobn, flags, _, err := conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, err
	}
	files, ferr := rightsFiles(oob[:oobn])
	fail := func(err error) ([]*os.File, error) {
		closeAll(files...)
		return nil, err
	}
	if ferr != nil {
		return fail(ferr)
	}
	if n == 0 && oobn == 0 {
		// A zero-length datagram is how the peer's shutdown reads.
		return fail(errSpawnEOF)
	}
	if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
		return fail(errors.New("spawn message truncated"))
	}
	if err := json.Unmarshal(buf[:n], v); err != nil {
		return fail(fmt.Errorf("spawn message: %w", err))
	}
	return files, nil
}

// errSpawnEOF is the end of the conversation: the peer closed its end.
var errSpawnEOF = errors.New("spawn socket closed")

// rightsFiles is the descriptors of the SCM_RIGHTS messages in oob.
func rightsFiles(oob []byte) ([]*os.File, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("spawn message: control: %w", err)
	}
	var files []*os.File
	var perr error
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			perr = errors.Join(perr, err)
			continue
		}
		for _, fd := range fds {
			files = append(files, os.NewFile(uintptr(fd), fmt.Sprintf("spawn-fd:%d", fd)))
		}
	}
	if perr != nil {
		closeAll(files...)
		return nil, fmt.Errorf("spawn message: rights: %w", perr)
	}
	return files, nil
}

// spawnPair is a connected SOCK_SEQPACKET pair, close-on-exec: the first
// end as a connection, the second as a file for the child.
func spawnPair() (*net.UnixConn, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, os.NewSyscallError("socketpair", err)
	}
	ours := os.NewFile(uintptr(fds[0]), "spawn-socket")
	theirs := os.NewFile(uintptr(fds[1]), "spawn-socket")
	conn, err := fileConn(ours)
	ours.Close()
	if err != nil {
		theirs.Close()
		return nil, nil, err
	}
	// A datagram larger than the send buffer is refused (EMSGSIZE): a
	// start's configuration is some 30 KB, the default buffer 208 KiB;
	// more room where the host allows it (net.core.wmem_max) is cheap.
	_ = conn.SetWriteBuffer(maxSpawnMsg)
	return conn, theirs, nil
}

// fileConn is f, a SOCK_SEQPACKET socket, as a connection of its own (f
// may be closed after).
func fileConn(f *os.File) (*net.UnixConn, error) {
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("spawn socket: %w", err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, fmt.Errorf("spawn socket: a %T, not a unix socket", c)
	}
	return uc, nil
}

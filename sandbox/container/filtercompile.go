package container

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
	"unsafe"

	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/seccomp"
	"golang.org/x/sys/unix"
)

// The program is libcontainer's own: a child process (executor-spawn
// FilterExportArg) runs seccomp.InitSeccomp on the profile, as a container's
// init does, and catches the seccomp(2) call that loads the result. Its main
// thread first installs a filter of its own that hands every seccomp(2) call
// to a listener (SECCOMP_RET_USER_NOTIF); another thread of the process
// reads the load's program and flags from the process's own memory and lets
// every call go on (SECCOMP_USER_NOTIF_FLAG_CONTINUE), so the load succeeds
// as it would in a container, or the compile fails as it would there. Nothing
// of runc's compiler is copied, and it works where reading a loaded filter
// back (PTRACE_SECCOMP_GET_FILTER) does not: under systemd's LockPersonality=
// and RestrictAddressFamilies= (filters of their own, which rule that out)
// and rootless (no CAP_SYS_ADMIN on the host). Linux 5.5 or newer.

// filterExportTimeout bounds how long the runner waits for the filter:
// some 50 ms on a host, seconds in an emulated guest.
const filterExportTimeout = 30 * time.Second

// knownLoadFlags are the seccomp(2) flags executor-init loads a program
// with; a compile that used others (a listener) is not taken.
const knownLoadFlags = unix.SECCOMP_FILTER_FLAG_LOG | unix.SECCOMP_FILTER_FLAG_SPEC_ALLOW

// exportedFilter is what executor-spawn FilterExportArg prints.
type exportedFilter struct {
	// Digest is the profile's (seccompProfile.digest).
	Digest string `json:"digest"`
	// Flags are the seccomp(2) flags libcontainer loaded it with.
	Flags uint `json:"flags"`
	// Program is the struct sock_filter array loaded.
	Program []byte `json:"program"`
}

// The kernel's struct seccomp_data, seccomp_notif and seccomp_notif_resp
// (x/sys/unix has their ioctls, not their types).
type (
	seccompData struct {
		Nr   int32
		Arch uint32
		IP   uint64
		Args [6]uint64
	}
	seccompNotif struct {
		ID    uint64
		Pid   uint32
		Flags uint32
		Data  seccompData
	}
	seccompNotifResp struct {
		ID    uint64
		Val   int64
		Error int32
		Flags uint32
	}
)

// precompilable says why rules cannot be compiled once and installed by
// executor-init, or nil: a filter with a notify action has a listener,
// which only libcontainer's own load makes.
func precompilable(rules *configs.Seccomp) error {
	if rules == nil {
		return errors.New("no seccomp profile")
	}
	if rules.DefaultAction == configs.Notify || rules.ListenerPath != "" {
		return errors.New("the profile notifies a listener")
	}
	for _, s := range rules.Syscalls {
		if s != nil && s.Action == configs.Notify {
			return errors.New("the profile notifies a listener")
		}
	}
	return nil
}

// compileFilter has the executor-spawn at spawner compile profile with
// libcontainer's code and returns the program it loaded.
func compileFilter(spawner string, profile seccompProfile) (*initFilter, error) {
	if err := precompilable(profile.rules); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), filterExportTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, spawner, FilterExportArg)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s %s: %w: %s", spawner, FilterExportArg, err, strings.TrimSpace(stderr.String()))
	}
	var ex exportedFilter
	if err := json.Unmarshal(stdout.Bytes(), &ex); err != nil {
		return nil, fmt.Errorf("%s %s: %w", spawner, FilterExportArg, err)
	}
	if ex.Digest != profile.digest {
		return nil, fmt.Errorf("%s compiled profile %q, the runner's is %q (another build)", spawner, ex.Digest, profile.digest)
	}
	if ex.Flags&^knownLoadFlags != 0 {
		return nil, fmt.Errorf("libcontainer loads the profile with flags %#x, executor-init only %#x", ex.Flags, knownLoadFlags)
	}
	const size = int(unsafe.Sizeof(unix.SockFilter{}))
	n := len(ex.Program) / size
	if n == 0 || n > unix.BPF_MAXINSNS || len(ex.Program)%size != 0 {
		return nil, fmt.Errorf("%s %s: a program of %d bytes", spawner, FilterExportArg, len(ex.Program))
	}
	prog := make([]unix.SockFilter, n)
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&prog[0])), len(ex.Program)), ex.Program)
	f, err := newInitFilter(prog)
	if err != nil {
		return nil, err
	}
	f.flags = ex.Flags
	return f, nil
}

// ServeFilterExport is executor-spawn's FilterExportArg mode: it compiles
// and loads the default profile with libcontainer's InitSeccomp on the
// calling thread, which must be locked to it and is left filtered, catches
// the load, and prints it (an exportedFilter, JSON) on stdout.
func ServeFilterExport() error {
	profile, err := defaultSeccompProfile()
	if err != nil {
		return err
	}
	if err := precompilable(profile.rules); err != nil {
		return err
	}
	loads, err := catchFilterLoads()
	if err != nil {
		return err
	}
	if _, err := seccomp.InitSeccomp(profile.rules); err != nil {
		return fmt.Errorf("libcontainer: %w", err)
	}
	var ex exportedFilter
	select {
	case l := <-loads:
		if l.err != nil {
			return l.err
		}
		ex = exportedFilter{Digest: profile.digest, Flags: l.flags, Program: l.program}
	default:
		return errors.New("libcontainer loaded no filter")
	}
	return json.NewEncoder(os.Stdout).Encode(ex)
}

// filterLoad is a seccomp(SECCOMP_SET_MODE_FILTER) call caught.
type filterLoad struct {
	flags   uint
	program []byte
	err     error
}

// catchFilterLoads installs, on the calling thread, a filter that hands its
// seccomp(2) calls to a listener served by a thread of its own, and returns
// the filter loads that listener sees, the first of them once its call goes
// on. Every call goes on as it would have.
func catchFilterLoads() (<-chan filterLoad, error) {
	// The listener's thread exists before the filter: a thread made
	// later might be a clone of this one, with the filter, and wait on
	// itself.
	started := make(chan struct{})
	listener := make(chan int)
	loads := make(chan filterLoad, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread goes with the process
		close(started)
		fd := <-listener
		if fd >= 0 {
			serveFilterLoads(fd, loads)
		}
	}()
	<-started
	// Without it, only CAP_SYS_ADMIN may install a filter (rootless has
	// it in its own namespace only; the unit's NoNewPrivileges has set it
	// already).
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		listener <- -1
		return nil, fmt.Errorf("no_new_privs: %w", err)
	}
	prog := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 0}, // seccomp_data.nr
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jf: 1, K: unix.SYS_SECCOMP},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_USER_NOTIF},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW},
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	fd, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_NEW_LISTENER, uintptr(unsafe.Pointer(&fprog)))
	runtime.KeepAlive(prog)
	if errno != 0 {
		listener <- -1
		return nil, fmt.Errorf("seccomp listener: %w", os.NewSyscallError("seccomp", errno))
	}
	listener <- int(fd)
	return loads, nil
}

// serveFilterLoads answers the notifications on listener fd: each call goes
// on; a filter load's flags and program, read from this process's memory
// while its caller waits, go to loads first. Should it stop, it closes the
// listener: the calls waiting on it, and any later, then fail (ENOSYS)
// rather than wait for ever.
func serveFilterLoads(fd int, loads chan<- filterLoad) {
	defer unix.Close(fd)
	mem, err := os.Open("/proc/self/mem")
	if err != nil {
		loads <- filterLoad{err: err}
		return
	}
	defer mem.Close()
	for {
		var req seccompNotif
		if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SECCOMP_IOCTL_NOTIF_RECV, uintptr(unsafe.Pointer(&req))); errno != 0 {
			// ENOENT: the call was interrupted by a signal (the Go
			// runtime's preemption signal, SIGURG, is one) before it
			// was received; it is made again, and notified again.
			// Once a hang in 21 of 30 exports with SIGURG sent to the
			// main thread without pause.
			if errno == unix.EINTR || errno == unix.ENOENT {
				continue
			}
			return
		}
		if req.Data.Args[0] == unix.SECCOMP_SET_MODE_FILTER && req.Data.Args[2] != 0 {
			prog, err := readFprog(mem, req.Data.Args[2])
			select {
			case loads <- filterLoad{flags: uint(req.Data.Args[1]), program: prog, err: err}:
			default: // only the first
			}
		}
		resp := seccompNotifResp{ID: req.ID, Flags: unix.SECCOMP_USER_NOTIF_FLAG_CONTINUE}
		if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SECCOMP_IOCTL_NOTIF_SEND, uintptr(unsafe.Pointer(&resp))); errno != 0 && errno != unix.ENOENT {
			return
		}
	}
}

// readFprog reads the struct sock_fprog at addr in mem, and its program.
func readFprog(mem io.ReaderAt, addr uint64) ([]byte, error) {
	// unsigned short len; (padding); struct sock_filter *filter: a 64-bit
	// layout, the only one the executor is built for.
	var fprog [16]byte
	if _, err := mem.ReadAt(fprog[:], int64(addr)); err != nil {
		return nil, fmt.Errorf("read the filter's header: %w", err)
	}
	n := int(binary.NativeEndian.Uint16(fprog[0:]))
	filter := binary.NativeEndian.Uint64(fprog[8:])
	if n == 0 || n > unix.BPF_MAXINSNS {
		return nil, fmt.Errorf("a filter of %d instructions", n)
	}
	prog := make([]byte, n*int(unsafe.Sizeof(unix.SockFilter{})))
	if _, err := mem.ReadAt(prog, int64(filter)); err != nil {
		return nil, fmt.Errorf("read the filter: %w", err)
	}
	return prog, nil
}

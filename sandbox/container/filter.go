package container

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/seccomp"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// libcontainer compiles a container's seccomp profile in the container's
// init, at every start and for every exec: with the default profile (404
// rules) 4.5-4.8 ms of libseccomp and runc's ENOSYS patch, measured alone on
// the 2-core VM, of a ~30 ms container start. The profile is the same for
// every runtime, so the runner compiles it once: with libcontainer's own
// code (seccomp.InitSeccomp), in a process that loads the filter into
// itself and from which the runner then reads the loaded program back
// (PTRACE_SECCOMP_GET_FILTER), so the program is libcontainer's to the
// instruction, and nothing of runc's compiler is copied here.
//
// A container whose main process is executor-init then has no seccomp
// profile in its libcontainer configuration but filterLabel; executor-init
// installs the program, handed to it on a descriptor (SeccompFDFlag), on
// itself as the first thing it does, before it parks or runs anything. A
// command exec'd into such a container runs through executor-init too
// (ExecFlag). Reading a filter back needs CAP_SYS_ADMIN on the host: a
// rootless daemon, or one that cannot read it, leaves the profile to
// libcontainer, as before (Runner.FilterErr says why).

// SeccompFDFlag is executor-init's argument naming the descriptor its
// seccomp filter is on.
const SeccompFDFlag = "--seccomp-fd"

// SeccompFlagsFlag is executor-init's argument giving its filter's load
// flags, a decimal number.
const SeccompFlagsFlag = "--seccomp-flags"

// ExecFlag makes executor-init install its filter and then become the
// command that follows.
const ExecFlag = "--exec"

// FilterExportArg is executor-spawn's argument for the process the runner
// reads the compiled filter from (see ServeFilterExport).
const FilterExportArg = "seccomp-filter"

// filterLabel marks a container whose filter executor-init installs. A
// label, as it is kept in the container's state with the rest of its
// configuration, and so known to a daemon that adopts it.
const filterLabel = "executor.seccomp=executor-init"

// filterExportTimeout bounds how long the runner waits for the filter.
const filterExportTimeout = 10 * time.Second

// initFilter is the default profile compiled: a sealed memfd holding the
// program, opened read-only, handed to every executor-init.
type initFilter struct {
	file *os.File
	// insns is the program's length in instructions.
	insns int
	// flags are the load flags libcontainer gives the profile (see
	// loadFlags).
	flags uint
}

// precompilable says why rules cannot be compiled once and installed by
// executor-init, or nil: a filter with a notify action has a listener,
// which only libcontainer's own load makes, and flags other than those
// loadFlags knows are libcontainer's to apply.
func precompilable(rules *configs.Seccomp) error {
	if rules == nil {
		return errors.New("no seccomp profile")
	}
	if _, err := loadFlags(rules); err != nil {
		return err
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

// loadFlags are the seccomp(2) flags libcontainer loads rules with: the
// program read back has none of them, so executor-init is given them. A
// filter libcontainer compiled (ServeFilterExport) had them applied, or
// its load failed: libseccomp below API level 3 (LOG) or 4 (SPEC_ALLOW)
// refuses them. TSYNC libcontainer never passes on.
func loadFlags(rules *configs.Seccomp) (uint, error) {
	var flags uint
	for _, f := range rules.Flags {
		switch f {
		case specs.LinuxSeccompFlagSpecAllow:
			flags |= unix.SECCOMP_FILTER_FLAG_SPEC_ALLOW
		case specs.LinuxSeccompFlagLog:
			flags |= unix.SECCOMP_FILTER_FLAG_LOG
		case "SECCOMP_FILTER_FLAG_TSYNC":
		default:
			return 0, fmt.Errorf("the profile has flag %s", f)
		}
	}
	return flags, nil
}

// ServeFilterExport is executor-spawn's FilterExportArg mode: it loads the
// default profile into the calling thread, which must be the main thread
// (the runner reads the filter of the process's pid), with libcontainer's
// InitSeccomp, prints the profile's digest, and waits for its stdin to end.
func ServeFilterExport() error {
	profile, err := defaultSeccompProfile()
	if err != nil {
		return err
	}
	if err := precompilable(profile.rules); err != nil {
		return err
	}
	if _, err := seccomp.InitSeccomp(profile.rules); err != nil {
		return err
	}
	if _, err := fmt.Println(profile.digest); err != nil {
		return err
	}
	// The runner reads the filter while this waits, then kills it.
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	return nil
}

// compileFilter compiles profile with libcontainer's code in a child
// process, the executor-spawn at spawner, and returns the program it loaded.
func compileFilter(spawner string, profile seccompProfile) (*initFilter, error) {
	if err := precompilable(profile.rules); err != nil {
		return nil, err
	}
	cmd := exec.Command(spawner, FilterExportArg)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	defer func() {
		_ = cmd.Process.Kill()
		stdin.Close()
		_ = cmd.Wait()
	}()
	if f, ok := stdout.(*os.File); ok {
		_ = f.SetReadDeadline(time.Now().Add(filterExportTimeout))
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w: %s", spawner, FilterExportArg, err, strings.TrimSpace(stderr.String()))
	}
	if got := strings.TrimSpace(line); got != profile.digest {
		return nil, fmt.Errorf("%s compiled profile %q, the runner's is %q (another build)", spawner, got, profile.digest)
	}
	prog, err := loadedFilter(cmd.Process.Pid)
	if err != nil {
		return nil, err
	}
	f, err := newInitFilter(prog)
	if err != nil {
		return nil, err
	}
	f.flags, _ = loadFlags(profile.rules) // checked by precompilable
	return f, nil
}

// loadedFilter is the seccomp program loaded into thread pid, which must
// have exactly one: it is read through ptrace, which needs CAP_SYS_ADMIN
// and a kernel with CONFIG_CHECKPOINT_RESTORE.
func loadedFilter(pid int) ([]unix.SockFilter, error) {
	// Every ptrace request must come from the thread that attached.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.PtraceSeize(pid); err != nil {
		return nil, fmt.Errorf("read the compiled seccomp filter: %w", os.NewSyscallError("ptrace", err))
	}
	defer func() { _ = unix.PtraceDetach(pid) }()
	if err := unix.PtraceInterrupt(pid); err != nil {
		return nil, fmt.Errorf("read the compiled seccomp filter: %w", os.NewSyscallError("ptrace", err))
	}
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(pid, &ws, unix.WALL, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read the compiled seccomp filter: %w", os.NewSyscallError("wait4", err))
		}
		break
	}
	if !ws.Stopped() {
		return nil, fmt.Errorf("read the compiled seccomp filter: process %d ended (%v)", pid, ws)
	}
	get := func(index int, prog []unix.SockFilter) (int, error) {
		var p uintptr
		if len(prog) > 0 {
			p = uintptr(unsafe.Pointer(&prog[0]))
		}
		n, _, errno := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SECCOMP_GET_FILTER, uintptr(pid), uintptr(index), p, 0, 0)
		if errno != 0 {
			return 0, errno
		}
		return int(n), nil
	}
	n, err := get(0, nil)
	if err != nil {
		return nil, fmt.Errorf("read the compiled seccomp filter: %w", os.NewSyscallError("ptrace", err))
	}
	if n <= 0 || n > unix.BPF_MAXINSNS {
		return nil, fmt.Errorf("read the compiled seccomp filter: %d instructions", n)
	}
	prog := make([]unix.SockFilter, n)
	if got, err := get(0, prog); err != nil || got != n {
		return nil, fmt.Errorf("read the compiled seccomp filter: %d of %d instructions: %w", got, n, err)
	}
	// One filter, or the program read is not all of what applies.
	if _, err := get(1, nil); !errors.Is(err, unix.ENOENT) {
		return nil, fmt.Errorf("read the compiled seccomp filter: process %d has more than one filter (%v)", pid, err)
	}
	return prog, nil
}

// newInitFilter puts prog on a sealed memfd, opened again read-only: no
// container that holds it could change what the others install.
func newInitFilter(prog []unix.SockFilter) (*initFilter, error) {
	fd, err := unix.MemfdCreate("executor-seccomp-filter", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("seccomp filter: %w", os.NewSyscallError("memfd_create", err))
	}
	rw := os.NewFile(uintptr(fd), "seccomp-filter")
	defer rw.Close()
	raw := unsafe.Slice((*byte)(unsafe.Pointer(&prog[0])), len(prog)*int(unsafe.Sizeof(prog[0])))
	if _, err := rw.Write(raw); err != nil {
		return nil, fmt.Errorf("seccomp filter: %w", err)
	}
	seals := unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, seals); err != nil {
		return nil, fmt.Errorf("seccomp filter: %w", os.NewSyscallError("fcntl", err))
	}
	ro, err := os.OpenFile("/proc/self/fd/"+strconv.Itoa(fd), os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("seccomp filter: %w", err)
	}
	return &initFilter{file: ro, insns: len(prog)}, nil
}

// args are executor-init's arguments for the filter on descriptor fd.
func (f *initFilter) args(fd int) []string {
	return []string{SeccompFDFlag, strconv.Itoa(fd), SeccompFlagsFlag, strconv.FormatUint(uint64(f.flags), 10)}
}

// close releases the filter's descriptor; closing it again is no error,
// as closing a Runner again is none.
func (f *initFilter) close() error {
	if f == nil {
		return nil
	}
	if err := f.file.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
		return err
	}
	return nil
}

// filteredByInit reports whether executor-init installs cfg's filter.
func filteredByInit(cfg *configs.Config) bool {
	return cfg != nil && cfg.Seccomp == nil && slices.Contains(cfg.Labels, filterLabel)
}

// filterByInit leaves cfg's filter to executor-init: cfg is a runner's
// configuration with its profile, which the runner's compiled filter is.
func filterByInit(cfg *configs.Config) {
	cfg.Seccomp = nil
	cfg.Labels = append(slices.Clip(cfg.Labels), filterLabel)
}

// launchable is what create starts for cfg and p. When executor-init
// installs cfg's filter, p's command line names the filter's descriptor,
// which p carries after its own. A runner without a compiled filter (one
// that could not compile it, after a restart) starts such a container with
// the profile in its configuration, for libcontainer to compile: it never
// starts without a filter one that had it.
func (r *Runner) launchable(cfg *configs.Config, p Process) (*configs.Config, Process, error) {
	if !filteredByInit(cfg) {
		return cfg, p, nil
	}
	if r.filter == nil || len(p.Args) == 0 {
		rules := r.seccomp.rules
		if rules == nil {
			profile, err := defaultSeccompProfile()
			if err != nil {
				return nil, p, fmt.Errorf("container: %w", err)
			}
			rules = profile.rules
		}
		c := *cfg
		c.Seccomp = rules
		c.Labels = slices.DeleteFunc(slices.Clone(cfg.Labels), func(l string) bool { return l == filterLabel })
		return &c, p, nil
	}
	p.Args = slices.Concat(p.Args[:1], r.filter.args(3+len(p.extraFiles)), p.Args[1:])
	p.extraFiles = append(slices.Clip(p.extraFiles), r.filter.file)
	return cfg, p, nil
}

// initMountPoint checks that name (executor-init's path in the container)
// is, in rootfs, a file or nothing (runc makes it), with no symbolic link on
// the way. runc follows a link at a mount's destination (within the root):
// executor-init would be mounted at the link's target, and the link, left
// in the runtime's writable root, would be the runtime's to point at a
// binary of its own, which a later exec or restart then runs in
// executor-init's place, trusted to install the filter. A file the mount
// covers the runtime can neither unlink, rename over nor write (EBUSY, a
// read-only mount).
func initMountPoint(rootfs, name string) error {
	dir, err := unix.Open(rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("root %s: %w", rootfs, os.NewSyscallError("open", err))
	}
	defer func() { unix.Close(dir) }()
	parts := strings.Split(strings.Trim(path.Clean("/"+name), "/"), "/")
	for i, part := range parts {
		var st unix.Stat_t
		err := unix.Fstatat(dir, part, &st, unix.AT_SYMLINK_NOFOLLOW)
		if errors.Is(err, unix.ENOENT) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("executor-init's mount point %s: %w", name, os.NewSyscallError("fstatat", err))
		}
		kind := st.Mode & unix.S_IFMT
		if i == len(parts)-1 {
			if kind != unix.S_IFREG {
				return fmt.Errorf("executor-init's mount point %s in the runtime's root is not a file (mode %#o)", name, kind)
			}
			return nil
		}
		if kind != unix.S_IFDIR {
			return fmt.Errorf("executor-init's mount point %s: /%s in the runtime's root is not a directory (mode %#o)", name, path.Join(parts[:i+1]...), kind)
		}
		next, err := unix.Openat(dir, part, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("executor-init's mount point %s: %w", name, os.NewSyscallError("openat", err))
		}
		unix.Close(dir)
		dir = next
	}
	return nil
}

// execFiltered is args as c runs them when executor-init installs its
// filter: under executor-init, with the filter's descriptor as fd 3.
func (c *Container) execFiltered(args []string) ([]string, []*os.File, error) {
	if !filteredByInit(c.cfg) {
		return args, nil, nil
	}
	r := c.runner
	if r.filter == nil || !c.main.ReportsExit || len(c.main.Args) == 0 {
		// Its configuration has no profile for libcontainer to apply:
		// the command would run unfiltered.
		return nil, nil, fmt.Errorf("container: %s: its seccomp filter is installed by executor-init, and this daemon has none compiled (%v)", c.id, r.filterErr)
	}
	return slices.Concat(c.main.Args[:1], r.filter.args(3), []string{ExecFlag, "--"}, args), []*os.File{r.filter.file}, nil
}

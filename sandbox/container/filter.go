package container

import (
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"unsafe"

	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"
)

// libcontainer compiles a container's seccomp profile in the container's
// init, at every start and for every exec: with the default profile (404
// rules) 4.5-4.8 ms of libseccomp and runc's ENOSYS patch, measured alone on
// the 2-core VM, of a ~30 ms container start. The profile is the same for
// every runtime, so the runner has libcontainer compile it once (see
// filtercompile.go) and keeps the program.
//
// A container whose main process is executor-init then has no seccomp
// profile in its libcontainer configuration but filterLabel; executor-init
// installs the program, handed to it on a descriptor (SeccompFDFlag), on
// itself as the first thing it does, before it parks or runs anything. A
// command exec'd into such a container runs through executor-init too
// (ExecFlag). A runner that could not compile it leaves the profile to
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

// initFilter is the default profile compiled: a sealed memfd holding the
// program, opened read-only, handed to every executor-init.
type initFilter struct {
	file *os.File
	// insns is the program's length in instructions.
	insns int
	// flags are the seccomp(2) flags libcontainer loaded it with.
	flags uint
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

// InitMountPointError is create's answer for a root where executor-init
// cannot be mounted: something other than a file, or a symbolic link, at
// its path or on the way. The root is the image's (or was written by the
// runtime), so the request's image is to blame, never the host.
type InitMountPointError struct {
	Path string // executor-init's path in the container
	At   string // the element of Path that is wrong
	Is   string // what is there, in words: "a symbolic link"
}

func (e *InitMountPointError) Error() string {
	want := "a regular file or absent"
	if e.At != e.Path {
		want = "a directory"
	}
	return fmt.Sprintf("%s in the runtime's root is %s, where executor-init is mounted at %s (it must be %s)", e.At, e.Is, e.Path, want)
}

// initMountPoint checks that name (executor-init's path in the container)
// is, in rootfs, a file or nothing (runc makes it), with no symbolic link on
// the way; else it says what is wrong (*InitMountPointError). runc follows a
// link at a mount's destination (within the root): executor-init would be
// mounted at the link's target, and the link, left in the runtime's
// writable root, would be the runtime's to point at a binary of its own,
// which a later exec or restart then runs in executor-init's place, trusted
// to install the filter. A file the mount covers the runtime can neither
// unlink, rename over nor write (EBUSY, a read-only mount).
func initMountPoint(rootfs, name string) error {
	dir, err := unix.Open(rootfs, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("root %s: %w", rootfs, os.NewSyscallError("open", err))
	}
	defer func() { unix.Close(dir) }()
	name = path.Clean("/" + name)
	parts := strings.Split(strings.TrimPrefix(name, "/"), "/")
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
		last := i == len(parts)-1
		if last && kind != unix.S_IFREG || !last && kind != unix.S_IFDIR {
			return &InitMountPointError{Path: name, At: "/" + path.Join(parts[:i+1]...), Is: fileKind(kind)}
		}
		if last {
			return nil
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

// fileKind names a file type (stat's S_IFMT bits) for a message.
func fileKind(kind uint32) string {
	switch kind {
	case unix.S_IFREG:
		return "a regular file"
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFLNK:
		return "a symbolic link"
	case unix.S_IFIFO:
		return "a named pipe"
	case unix.S_IFSOCK:
		return "a socket"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	}
	return fmt.Sprintf("a file of type %#o", kind)
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

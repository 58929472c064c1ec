package container

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"github.com/moby/sys/mountinfo"
	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"
)

// A container's mount namespace starts as a copy of the one runc init is
// started in, and runc init then walks that copy: it makes every mount a
// slave, reads and parses the whole mount table (the cgroup v1 hierarchies
// are found through it), and detaches the old root with everything on it.
// In the daemon's namespace each runtime adds its disk, its root overlay
// and its network namespace pin, so every one of those steps grew with the
// runtimes already running: at 1,000 runtimes a start took twice as long,
// most of it reading and parsing a mount table of 3,000 lines (measured
// with perf: mountinfo's show_options, the parser's allocations).
//
// So containers are started from a namespace of the runner's own, the
// spawn namespace: a private copy of the daemon's, taken once, that keeps
// only the mounts a start reads (the root mount, the mounts on the way to
// the data directory, the executor's binaries, /proc, /sys and /dev, see
// keepMount); everything else is detached from it, the runtimes' mounts
// below the mount directories above all. For each start the mounts that
// container needs are cloned in from the daemon's namespace (open_tree),
// runc init is started from a thread that joined the spawn namespace, and
// the clones are detached again once the container runs on its own copies.
// The daemon's namespace keeps every mount as before: nothing else
// (restarts, exec, live restore, the image store, the log readers) sees a
// difference.
//
// Private, because a namespace that received the daemon's mount events
// would receive every runtime's mounts too. The price of a private copy is
// that it holds what it copied: a filesystem unmounted on the host would
// live on in it for as long as the daemon runs (on a host whose mounts are
// private no unmount reaches it), keeping a volume or a block device busy.
// That is why it copies only what starts need, none of which an operator
// unmounts under a running executor.

// spawnNS is the mount namespace containers are started from.
type spawnNS struct {
	// ns holds the namespace, in which no process lives.
	ns *os.File
	// dirs are the directories under which runtimes' mounts are made
	// (Config.MountDirs); the namespace holds none of them but those a
	// start carries in.
	dirs []string
}

// kernelDirs hold the kernel's filesystems a start uses: /proc (the
// executor's own binary, thread-self), /sys (cgroups, and the host's sysfs
// a user-namespaced runtime gets bound) and /dev (device nodes bound in).
var kernelDirs = []string{"/proc", "/sys", "/dev"}

// newSpawnNS makes the spawn namespace: a private copy of the caller's
// mount namespace that keeps the mounts below kernelDirs, those on the way
// to each of needed (and below it) and those on the way to each of dirs,
// and no other.
func newSpawnNS(dirs, needed []string) (*spawnNS, error) {
	clean := func(ps []string) ([]string, error) {
		out := make([]string, 0, len(ps))
		for _, p := range ps {
			if !filepath.IsAbs(p) {
				return nil, fmt.Errorf("container: path %q is not absolute", p)
			}
			// Mount points are real paths: compare real paths.
			if r, err := filepath.EvalSymlinks(p); err == nil {
				p = r
			}
			out = append(out, filepath.Clean(p))
		}
		return out, nil
	}
	dirs, err := clean(dirs)
	if err != nil {
		return nil, err
	}
	needed, err = clean(needed)
	if err != nil {
		return nil, err
	}
	type result struct {
		ns  *os.File
		err error
	}
	done := make(chan result, 1)
	go func() {
		// Never unlocked: the thread ends with this goroutine, so its
		// namespace cannot leak into another one.
		runtime.LockOSThread()
		ns, err := func() (*os.File, error) {
			// A thread that shares its fs attributes with others
			// cannot change mount namespace.
			if err := unix.Unshare(unix.CLONE_FS | unix.CLONE_NEWNS); err != nil {
				return nil, os.NewSyscallError("unshare", err)
			}
			if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
				return nil, &os.PathError{Op: "make private", Path: "/", Err: err}
			}
			if err := detachAllBut(func(mp string) bool { return keepMount(mp, dirs, needed) }); err != nil {
				return nil, err
			}
			return os.Open("/proc/thread-self/ns/mnt")
		}()
		done <- result{ns, err}
	}()
	r := <-done
	if r.err != nil {
		return nil, fmt.Errorf("container: spawn namespace: %w", r.err)
	}
	return &spawnNS{ns: r.ns, dirs: dirs}, nil
}

// keepMount says whether the spawn namespace keeps the mount on mp: none
// below the mount directories; those on the way to them and to the needed
// paths, those below a needed path, and those of the kernel's filesystems.
func keepMount(mp string, dirs, needed []string) bool {
	onTheWay := func(p string) bool { return mp == p || isBelow(mp, p) }
	for _, d := range dirs {
		if isBelow(d, mp) {
			return false
		}
	}
	for _, d := range dirs {
		if onTheWay(d) {
			return true
		}
	}
	for _, p := range needed {
		if onTheWay(p) || isBelow(p, mp) {
			return true
		}
	}
	for _, k := range kernelDirs {
		if mp == k || isBelow(k, mp) {
			return true
		}
	}
	return false
}

// detachAllBut detaches every mount of the calling thread's mount
// namespace that keep refuses.
func detachAllBut(keep func(mountpoint string) bool) error {
	f, err := os.Open("/proc/thread-self/mountinfo")
	if err != nil {
		return err
	}
	defer f.Close()
	mounts, err := mountinfo.GetMountsFromReader(f, func(m *mountinfo.Info) (skip, stop bool) {
		return keep(m.Mountpoint), false
	})
	if err != nil {
		return fmt.Errorf("read mount table: %w", err)
	}
	// Outermost first: detaching one takes everything on it along, and
	// the ones below then answer EINVAL (no longer mounts).
	slices.SortFunc(mounts, func(a, b *mountinfo.Info) int { return len(a.Mountpoint) - len(b.Mountpoint) })
	for _, m := range mounts {
		for {
			err := unix.Unmount(m.Mountpoint, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
			if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
				break
			}
			if err != nil {
				return &os.PathError{Op: "detach", Path: m.Mountpoint, Err: err}
			}
		}
	}
	return nil
}

// isBelow reports whether path lies strictly below dir (both clean).
func isBelow(dir, path string) bool {
	return strings.HasPrefix(path, dir+"/") || (dir == "/" && path != "/")
}

// carried is what the start of cfg needs from below s.dirs: for each path
// it reads there (its root, its bind mounts' sources, the namespaces it
// joins), the outermost mount point between the directory and the path.
// Anything not on a mount of its own below the directories is on a mount
// the spawn namespace shares with the daemon's, and needs nothing.
func (s *spawnNS) carried(cfg *configs.Config) ([]string, error) {
	paths := []string{cfg.Rootfs}
	for _, m := range cfg.Mounts {
		if m.IsBind() {
			paths = append(paths, m.Source)
		}
	}
	for _, n := range cfg.Namespaces {
		if n.Path != "" {
			paths = append(paths, n.Path)
		}
	}
	var out []string
	for _, p := range paths {
		p = filepath.Clean(p)
		for _, d := range s.dirs {
			if !isBelow(d, p) {
				continue
			}
			mp, err := outerMountPoint(d, p)
			if err != nil {
				return nil, err
			}
			if mp != "" {
				out = append(out, mp)
			}
			break
		}
	}
	// One clone each, and none inside another (AT_RECURSIVE brings it).
	slices.Sort(out)
	out = slices.Compact(out)
	return slices.DeleteFunc(out, func(p string) bool {
		return slices.ContainsFunc(out, func(q string) bool { return isBelow(q, p) })
	}), nil
}

// outerMountPoint is the first path from dir down to p (dir excluded) that
// is on another mount than its parent, or "" when none is. The daemon made
// every component, so no link is followed.
func outerMountPoint(dir, p string) (string, error) {
	parent, err := mountID(dir)
	if err != nil {
		return "", err
	}
	cur := dir
	for _, comp := range strings.Split(strings.TrimPrefix(p, dir+"/"), "/") {
		cur = filepath.Join(cur, comp)
		id, err := mountID(cur)
		if err != nil {
			return "", err
		}
		if id != parent {
			return cur, nil
		}
		parent = id
	}
	return "", nil
}

func mountID(path string) (uint64, error) {
	var st unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW|unix.AT_STATX_DONT_SYNC, unix.STATX_MNT_ID, &st); err != nil {
		return 0, &os.PathError{Op: "statx", Path: path, Err: err}
	}
	if st.Mask&unix.STATX_MNT_ID == 0 {
		return 0, &os.PathError{Op: "statx", Path: path, Err: errors.New("no mount id (kernel before 5.8)")}
	}
	return st.Mnt_id, nil
}

// run calls start, which starts cfg's container, on a thread in the spawn
// namespace, with the mounts cfg needs (see carried) cloned in while it runs.
// A nil s (no spawn namespace) calls start where it is.
func (s *spawnNS) run(cfg *configs.Config, start func() error) error {
	if s == nil {
		return start()
	}
	carry, clones, err := s.carry(cfg)
	if err != nil {
		return err
	}
	defer closeAll(clones...)
	return s.within(func() error {
		placed, err := placeMounts(carry, clones)
		// The container has its own copies by now (or never will): the
		// spawn namespace goes back to holding none.
		defer unplaceMounts(placed)
		if err != nil {
			return fmt.Errorf("container: spawn namespace: %w", err)
		}
		return start()
	})
}

// carry is what a start of cfg carries into s (see carried), and a clone of
// each, made in the caller's namespace, where they are; nothing for a nil s.
func (s *spawnNS) carry(cfg *configs.Config) ([]string, []*os.File, error) {
	if s == nil {
		return nil, nil, nil
	}
	carry, err := s.carried(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("container: spawn namespace: %w", err)
	}
	clones, err := cloneMounts(carry)
	if err != nil {
		return nil, nil, fmt.Errorf("container: spawn namespace: %w", err)
	}
	return carry, clones, nil
}

// within calls f on a thread that joined the spawn namespace, and that ends
// with f; a nil s calls f where it is. A process f starts starts in the
// namespace.
func (s *spawnNS) within(f func() error) error {
	if s == nil {
		return f()
	}
	done := make(chan error, 1)
	go func() {
		// Never unlocked, as in newSpawnNS.
		runtime.LockOSThread()
		done <- func() error {
			if err := unix.Unshare(unix.CLONE_FS); err != nil {
				return fmt.Errorf("container: spawn namespace: %w", os.NewSyscallError("unshare", err))
			}
			if err := unix.Setns(int(s.ns.Fd()), unix.CLONE_NEWNS); err != nil {
				return fmt.Errorf("container: spawn namespace: %w", os.NewSyscallError("setns", err))
			}
			return f()
		}()
	}()
	return <-done
}

// cloneMounts clones the mount tree at each of paths, detached, in the
// caller's mount namespace.
func cloneMounts(paths []string) ([]*os.File, error) {
	clones := make([]*os.File, 0, len(paths))
	for _, p := range paths {
		fd, err := unix.OpenTree(unix.AT_FDCWD, p, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE|unix.AT_SYMLINK_NOFOLLOW)
		if err != nil {
			closeAll(clones...)
			return nil, &os.PathError{Op: "open_tree", Path: p, Err: err}
		}
		clones = append(clones, os.NewFile(uintptr(fd), "clone:"+p))
	}
	return clones, nil
}

// placeMounts mounts each of clones at its path in the caller's mount
// namespace, cut from its peer group, and returns the paths it mounted on,
// for unplaceMounts, even when it fails.
func placeMounts(paths []string, clones []*os.File) ([]string, error) {
	if len(paths) != len(clones) {
		return nil, fmt.Errorf("%d mounts to place, %d clones", len(paths), len(clones))
	}
	var placed []string
	for i, p := range paths {
		if err := unix.MoveMount(int(clones[i].Fd()), "", unix.AT_FDCWD, p, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
			return placed, &os.PathError{Op: "move_mount", Path: p, Err: err}
		}
		placed = append(placed, p)
		// A clone of a shared mount joins its peer group: cut it, so
		// that nothing propagates between the daemon's mounts and the
		// container's through it.
		if err := unix.Mount("", p, "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			return placed, &os.PathError{Op: "make private", Path: p, Err: err}
		}
	}
	return placed, nil
}

// unplaceMounts detaches what placeMounts mounted.
func unplaceMounts(placed []string) {
	for _, p := range placed {
		_ = unix.Unmount(p, unix.MNT_DETACH|unix.UMOUNT_NOFOLLOW)
	}
}

// close releases the namespace.
func (s *spawnNS) close() error { return s.ns.Close() }

package disk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

const (
	// DefaultSize is a runtime's disk when none is configured: 1 GiB, like
	// the ephemeral storage of hosted functions.
	DefaultSize = 1 << 30
	// MinSize is the smallest disk Mount makes.
	MinSize = 1 << 20
	// DefaultMode is the root directory's mode when Config.Mode is zero.
	DefaultMode os.FileMode = 0o700

	// blockSize is the filesystem's and the loop device's block size.
	blockSize = 4096
	// bytesPerInode gives the inode count when Config.Inodes is zero (mke2fs's
	// default ratio for ext4: 65536 inodes for 1 GiB).
	bytesPerInode = 16384
	// maxInodes is ext4's limit.
	maxInodes = 1<<32 - 1
	// mountFlags: the disk is thrown away with its runtime, so nothing on it
	// needs to be durable. Without barriers a runtime's fsync never makes the
	// loop device fsync its backing file (a journal commit and cache flush of
	// the host's filesystem, shared by everyone); without auto_da_alloc,
	// replacing a file by rename does not start writeback early.
	mountFlags = "nobarrier,noauto_da_alloc"
)

var (
	// ErrUnsupported: this host cannot make disks (no loop devices, no ext4,
	// no mke2fs). Check reports it at start-up.
	ErrUnsupported = errors.New("per-runtime disks unsupported on this host")
	// ErrNotDisk: Unmount(dir) found a mount at dir that this package did not make.
	ErrNotDisk = errors.New("not a runtime disk")
)

// Config says what disk Mount makes.
type Config struct {
	// Size is the filesystem's size in bytes, its metadata included (inode
	// tables take 256 bytes per inode), rounded down to 4 KiB. Zero means
	// no disk: dir stays on the host's filesystem.
	Size int64
	// Inodes is how many files, directories, symlinks etc. the disk can
	// hold (ten are the filesystem's own); mke2fs rounds it up to fill
	// whole inode-table blocks. Zero means one per 16 KiB of Size.
	Inodes uint64
	// UID and GID own the disk's root directory, Mode gives its permission
	// bits (zero means DefaultMode). They are applied to dir when Size is
	// zero too, so callers treat both cases alike.
	UID, GID int
	Mode     os.FileMode
	// TemplateDir, when set, keeps one formatted filesystem per (Size,
	// Inodes), made on first use, which each Mount copies instead of
	// running mke2fs. It is created (0700) if missing.
	TemplateDir string
}

func (c Config) size() int64 { return c.Size &^ (blockSize - 1) }

func (c Config) inodes() uint64 {
	if c.Inodes != 0 {
		return c.Inodes
	}
	return uint64(c.size() / bytesPerInode)
}

func (c Config) mode() os.FileMode {
	if c.Mode == 0 {
		return DefaultMode
	}
	return c.Mode.Perm()
}

// Validate tells whether Mount can make a disk as c says: for a clear error
// at start-up rather than at each runtime's. A zero Size (no disk) is valid.
func (c Config) Validate() error {
	if c.Size == 0 {
		return nil
	}
	switch {
	case c.Size < 0:
		return fmt.Errorf("size %d is negative", c.Size)
	case c.size() < MinSize:
		return fmt.Errorf("size %d is below the minimum of %d bytes", c.Size, MinSize)
	case c.inodes() > maxInodes:
		return fmt.Errorf("%d inodes are more than ext4 allows (%d)", c.inodes(), uint64(maxInodes))
	case c.inodes() < 16:
		return fmt.Errorf("%d inodes are too few (at least 16)", c.inodes())
	}
	return nil
}

// Disk is a mounted disk. Its zero value is not usable; Mount makes one.
type Disk struct {
	dir   string
	dev   uint64 // the filesystem's device number; 0 when Size was zero
	spare bool   // made ahead of need (Spares)

	mu   sync.Mutex
	done bool
}

// Dir is the directory the disk is mounted at.
func (d *Disk) Dir() string { return d.dir }

// Spare says whether the disk was made ahead of need (Spares.Mount).
func (d *Disk) Spare() bool { return d.spare }

// Mount makes a disk as cfg says and mounts it (nosuid, nodev) at dir, which
// must be an existing empty directory and not a mount point. The disk's root
// is empty (no lost+found), owned by cfg.UID:cfg.GID with mode cfg.Mode.
// On error nothing is left behind: no mount, no loop device, no file.
func Mount(ctx context.Context, dir string, cfg Config) (*Disk, error) {
	return mount(ctx, dir, cfg, nil)
}

// mount is Mount, attaching one of spares' disks when it has one for cfg.
// The spare is taken only once dir passed its checks, so that a bad dir
// does not cost one.
func mount(ctx context.Context, dir string, cfg Config, spares *Spares) (_ *Disk, err error) {
	defer func() {
		if err != nil {
			err = fmt.Errorf("disk: mount at %s: %w", dir, err)
		}
	}()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := checkMountPoint(dir); err != nil {
		return nil, err
	}
	if cfg.Size == 0 {
		if err := setOwner(dir, cfg); err != nil {
			return nil, err
		}
		return &Disk{dir: dir, done: true}, nil
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	fs, spare := spares.take(cfg)
	if !spare {
		if fs, err = newDetached(ctx, filepath.Dir(dir), cfg); err != nil {
			return nil, err
		}
	}
	// Once attached, the mount lives on in the tree without this fd.
	defer fs.close()
	d, err := fs.attach(dir)
	if err != nil {
		return nil, err
	}
	d.spare = spare
	return d, nil
}

// detached is a disk made and mounted nowhere yet: a filesystem that only
// its fd (fsmount's) holds. When that fd closes unattached (a spare when
// the daemon dies), the kernel frees the filesystem, its loop device
// (autoclear) and its nameless backing file: nothing is left to sweep.
type detached struct {
	fd  int
	dev uint64
}

// newDetached makes a disk as cfg says, its backing file in dir, with its
// root prepared (empty, cfg's owner and mode), mounted nowhere. On error
// nothing is left behind.
func newDetached(ctx context.Context, dir string, cfg Config) (_ detached, err error) {
	backing, tpl, err := newBacking(ctx, dir, cfg)
	if err != nil {
		return detached{}, err
	}
	// The file has no name: once the loop device holds its own reference,
	// this close leaves the file to it; before that, it removes the file.
	defer backing.Close()
	if err := ctx.Err(); err != nil {
		return detached{}, err
	}
	loop, err := attachLoop(backing)
	if err != nil {
		return detached{}, err
	}
	// The device clears itself at its last close: once mounted, that is
	// when the filesystem goes; if mounting fails, it is this one.
	defer unix.Close(loop.fd)
	fd, err := mountDetached(loop.path)
	if err != nil {
		if tpl != "" {
			// A template that does not mount is damaged: drop it, so that
			// the next Mount formats a new one rather than failing forever.
			_ = os.Remove(tpl)
		}
		return detached{}, fmt.Errorf("mount %s: %w", loop.path, err)
	}
	if err := prepareRoot(fd, cfg); err != nil {
		unix.Close(fd)
		return detached{}, err
	}
	return detached{fd: fd, dev: loop.rdev}, nil
}

// mountDetached mounts the ext4 filesystem on the block device at path
// (nosuid, nodev, mountFlags) as a mount of no tree (fsmount), and
// returns its fd.
func mountDetached(path string) (_ int, err error) {
	fsfd, err := unix.Fsopen("ext4", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return -1, os.NewSyscallError("fsopen ext4", err)
	}
	defer unix.Close(fsfd)
	defer func() {
		// The kernel says why a filesystem did not mount in the context's
		// log, not in errno.
		if msg := fsContextLog(fsfd); err != nil && msg != "" {
			err = fmt.Errorf("%w (kernel: %s)", err, msg)
		}
	}()
	if err := unix.FsconfigSetString(fsfd, "source", path); err != nil {
		return -1, fmt.Errorf("fsconfig source: %w", err)
	}
	for _, opt := range strings.Split(mountFlags, ",") {
		if err := unix.FsconfigSetFlag(fsfd, opt); err != nil {
			return -1, fmt.Errorf("fsconfig %s: %w", opt, err)
		}
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return -1, fmt.Errorf("fsconfig create: %w", err)
	}
	fd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, unix.MOUNT_ATTR_NOSUID|unix.MOUNT_ATTR_NODEV)
	if err != nil {
		return -1, os.NewSyscallError("fsmount", err)
	}
	return fd, nil
}

// fsContextLog drains the messages the kernel queued on an fs context.
func fsContextLog(fd int) string {
	var msgs []string
	buf := make([]byte, 1024)
	for range 8 {
		n, err := unix.Read(fd, buf)
		if err != nil || n <= 0 {
			break
		}
		msgs = append(msgs, strings.TrimSpace(string(buf[:n])))
	}
	return strings.Join(msgs, "; ")
}

// attach mounts the disk at dir, which the caller checked with
// checkMountPoint. A symlink at dir is not followed.
func (fs detached) attach(dir string) (*Disk, error) {
	if err := unix.MoveMount(fs.fd, "", unix.AT_FDCWD, dir, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return nil, &os.PathError{Op: "move_mount", Path: dir, Err: err}
	}
	return &Disk{dir: dir, dev: fs.dev}, nil
}

// close lets go of the disk's fd: an unattached disk goes with it.
func (fs detached) close() { unix.Close(fs.fd) }

// checkMountPoint makes sure dir is an empty directory and not a mount point
// (a disk left mounted there by a crash is empty too).
func checkMountPoint(dir string) error {
	f, err := os.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	root, _, err := isMountRoot(int(f.Fd()))
	if err != nil {
		return err
	}
	if root {
		return fmt.Errorf("%s is a mount point already: %w", dir, unix.EBUSY)
	}
	switch _, err := f.Readdirnames(1); {
	case err == nil:
		return fmt.Errorf("%s: %w", dir, unix.ENOTEMPTY)
	case errors.Is(err, io.EOF):
		return nil
	default:
		return err
	}
}

// isMountRoot says whether fd is the root of a mount, and gives the device
// number of its filesystem.
func isMountRoot(fd int) (bool, uint64, error) {
	var stx unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW, unix.STATX_TYPE, &stx); err != nil {
		return false, 0, fmt.Errorf("statx: %w", err)
	}
	if stx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT == 0 {
		return false, 0, fmt.Errorf("statx: kernel does not report mount roots (5.8+ needed): %w", ErrUnsupported)
	}
	dev := unix.Mkdev(stx.Dev_major, stx.Dev_minor)
	return stx.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0, dev, nil
}

// prepareRoot empties the root of the new filesystem mounted at mfd
// (mke2fs makes lost+found, which nothing here needs) and gives it its owner
// and mode.
//
// It also makes and removes a directory: that reads the allocation metadata
// a first new file needs (bitmaps, an inode table block) into the cache.
// Without it the runtime directory's first mkdirs waited on the host's disk
// (reads through the loop device bypass the host's page cache): 0.7 ms for
// three on an idle host, against 0.1 ms after, and for a spare that wait is
// off the cold start's path.
func prepareRoot(mfd int, cfg Config) error {
	fd, err := unix.Openat(mfd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open the disk's root: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Unlinkat(fd, "lost+found", unix.AT_REMOVEDIR); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove lost+found: %w", err)
	}
	if err := unix.Mkdirat(fd, "lost+found", 0o700); err != nil {
		return fmt.Errorf("warm the disk's metadata: %w", err)
	}
	if err := unix.Unlinkat(fd, "lost+found", unix.AT_REMOVEDIR); err != nil {
		return fmt.Errorf("warm the disk's metadata: %w", err)
	}
	if err := unix.Fchown(fd, cfg.UID, cfg.GID); err != nil {
		return fmt.Errorf("chown the disk's root: %w", err)
	}
	if err := unix.Fchmod(fd, uint32(cfg.mode())); err != nil {
		return fmt.Errorf("chmod the disk's root: %w", err)
	}
	return nil
}

func setOwner(dir string, cfg Config) error {
	if err := os.Lchown(dir, cfg.UID, cfg.GID); err != nil {
		return err
	}
	return os.Chmod(dir, cfg.mode())
}

// Unmount unmounts the disk; what the runtime wrote is lost. Calling it again
// does nothing. Submounts and processes still using the disk do not block
// it: it is detached from the tree at once. The kernel frees the filesystem,
// its loop device and its backing file when the last reference goes: at
// once, unless another process holds one at that moment (a mount namespace
// being made copies every mount of the host until it pivots away).
func (d *Disk) Unmount() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.done {
		return nil
	}
	if err := unmountAt(d.dir, d.dev); err != nil {
		return fmt.Errorf("disk: unmount %s: %w", d.dir, err)
	}
	d.done = true
	return nil
}

// Unmount unmounts the disk at dir, if there is one, without the Disk that
// Mount returned: for leftovers found after a crash. It does nothing when dir
// is missing or not a mount point, and refuses (ErrNotDisk) a mount that this
// package did not make.
func Unmount(dir string) error {
	// A disk cannot be stacked on another (Mount refuses a mount point), but
	// a few tries cost nothing and cover one made by an older version.
	for range 8 {
		dev, err := mountedDisk(dir)
		if err != nil || dev == 0 {
			if err != nil {
				err = fmt.Errorf("disk: unmount %s: %w", dir, err)
			}
			return err
		}
		if err := unmountAt(dir, dev); err != nil {
			return fmt.Errorf("disk: unmount %s: %w", dir, err)
		}
	}
	return fmt.Errorf("disk: unmount %s: still mounted after 8 unmounts", dir)
}

// mountedDisk gives the device number of the disk mounted at dir, 0 when dir
// is missing or not a mount point, ErrNotDisk when the mount is another's.
func mountedDisk(dir string) (uint64, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	root, dev, err := isMountRoot(fd)
	if err != nil || !root {
		return 0, err
	}
	var fs unix.Statfs_t
	if err := unix.Fstatfs(fd, &fs); err != nil {
		return 0, err
	}
	if fs.Type != unix.EXT4_SUPER_MAGIC {
		return 0, fmt.Errorf("filesystem type %#x: %w", fs.Type, ErrNotDisk)
	}
	if err := checkLoopMark(dev); err != nil {
		return 0, err
	}
	return dev, nil
}

// unmountAt unmounts the filesystem at dir if it is the one with device
// number dev; it does nothing when dir holds something else (already
// unmounted).
func unmountAt(dir string, dev uint64) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	root, got, err := isMountRoot(fd)
	if err != nil || !root || got != dev {
		unix.Close(fd)
		return err
	}
	unix.Close(fd)
	// The filesystem is not shut down first (EXT4_IOC_SHUTDOWN would spare
	// writing back what the runtime wrote in its last seconds, ~50 ms for
	// 64 MiB): the kernel logs every shutdown at KERN_ALERT, and an
	// operator's alerting must not fire for each runtime removed.
	err = unix.Unmount(dir, 0)
	if errors.Is(err, unix.EBUSY) {
		// Submounts (the runtime's overlay root) or open files: detach the
		// whole tree now; the kernel frees it when the last user is gone.
		err = unix.Unmount(dir, unix.MNT_DETACH)
	}
	if err != nil {
		return fmt.Errorf("umount: %w", err)
	}
	return nil
}

// Check says whether this host can make disks: loop devices, ext4 and
// e2fsprogs.
// The error wraps ErrUnsupported and names every missing piece.
func Check() error {
	var errs []error
	if fd, err := unix.Open(loopControl, unix.O_RDWR|unix.O_CLOEXEC, 0); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w (load the loop module)", loopControl, err))
	} else {
		unix.Close(fd)
	}
	if fss, err := os.ReadFile("/proc/filesystems"); err != nil {
		errs = append(errs, err)
	} else if !hasFilesystem(string(fss), "ext4") {
		errs = append(errs, errors.New("ext4 is not in /proc/filesystems (load the ext4 module)"))
	}
	for _, name := range []string{"mke2fs", "debugfs"} {
		if _, err := e2fsprogsPath(name); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("disk: %w: %w", ErrUnsupported, errors.Join(errs...))
	}
	return nil
}

func hasFilesystem(procFilesystems, name string) bool {
	for _, line := range strings.Split(procFilesystems, "\n") {
		f := strings.Fields(line)
		if len(f) > 0 && f[len(f)-1] == name {
			return true
		}
	}
	return false
}

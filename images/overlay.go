package images

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// overlayMode is how runtime roots are assembled on this host.
type overlayMode int

const (
	// overlayFsconfig: the new mount API, one "lowerdir+" per layer (kernel
	// >= 6.8). No limit on the total length of the layer paths.
	overlayFsconfig overlayMode = iota + 1
	// overlayMountData: mount(2) with one option string, which the kernel
	// copies from a single page.
	overlayMountData
	// overlayNone: overlayfs is not usable; roots are copies of the layers.
	overlayNone
)

func (m overlayMode) String() string {
	switch m {
	case overlayFsconfig:
		return "fsconfig"
	case overlayMountData:
		return "mount"
	case overlayNone:
		return "copy"
	}
	return "unknown"
}

type overlaySupport struct {
	mode     overlayMode
	volatile bool // kernel >= 5.10: no sync on unmount
}

// overlayXattrs says where overlayfs keeps its own xattrs (opaque markers)
// in a store's layers. As real root they are trusted.overlay.*, as overlayfs
// reads them by default. In a user namespace (a rootless daemon) trusted.*
// xattrs can be neither set nor read, so they are user.overlay.*, and roots
// are mounted with "userxattr" (Linux >= 5.11), which makes overlayfs read
// those instead. The zero value is real root's.
type overlayXattrs struct{ user bool }

func (x overlayXattrs) prefix() string {
	if x.user {
		return "user.overlay."
	}
	return "trusted.overlay."
}

// opaque is the name of the opaque-directory marker ("y").
func (x overlayXattrs) opaque() string { return x.prefix() + "opaque" }

// isOverlayXattr reports whether name is overlayfs' own, in either
// namespace: an image must not be able to set any of them.
func isOverlayXattr(name string) bool {
	return strings.HasPrefix(name, "trusted.overlay.") || strings.HasPrefix(name, "user.overlay.")
}

// fsconfigMaxString is the longest string value fsconfig(2) accepts (it
// copies at most 256 bytes, the terminating NUL included).
const fsconfigMaxString = 255

// mountOverlay mounts an overlay at target. lowers lists the top layer first,
// as overlayfs wants it. x is the layers' xattrs: with user.overlay.* ones
// the mount gets "userxattr".
func mountOverlay(ov overlaySupport, x overlayXattrs, lowers []string, upper, work, target string) error {
	opts := mountFlags{volatile: ov.volatile, userxattr: x.user}
	switch ov.mode {
	case overlayFsconfig:
		return mountFsconfig(lowers, upper, work, target, opts)
	case overlayMountData:
		return mountData(lowers, upper, work, target, opts)
	}
	return fmt.Errorf("overlay mode %v cannot mount", ov.mode)
}

// mountFlags are the overlay's flag options.
type mountFlags struct{ volatile, userxattr bool }

func (f mountFlags) names() []string {
	var out []string
	if f.volatile {
		out = append(out, "volatile")
	}
	if f.userxattr {
		out = append(out, "userxattr")
	}
	return out
}

func mountFsconfig(lowers []string, upper, work, target string, flags mountFlags) (err error) {
	fsfd, err := unix.Fsopen("overlay", unix.FSOPEN_CLOEXEC)
	if err != nil {
		return os.NewSyscallError("fsopen overlay", err)
	}
	defer unix.Close(fsfd)
	defer func() {
		// The kernel explains fsconfig failures in the context's log, not in errno.
		if err != nil {
			if msg := fsContextLog(fsfd); msg != "" {
				err = fmt.Errorf("%w (kernel: %s)", err, msg)
			}
		}
	}()
	var fds pathFDs
	defer fds.close()
	set := func(key, path string) error {
		value := path
		if len(value) > fsconfigMaxString {
			if value, err = fds.short(path); err != nil {
				return err
			}
		}
		if err := unix.FsconfigSetString(fsfd, key, value); err != nil {
			return fmt.Errorf("fsconfig %s=%s: %w", key, path, err)
		}
		return nil
	}
	for _, l := range lowers {
		if err := set("lowerdir+", l); err != nil {
			return err
		}
	}
	if err := set("upperdir", upper); err != nil {
		return err
	}
	if err := set("workdir", work); err != nil {
		return err
	}
	for _, flag := range flags.names() {
		if err := unix.FsconfigSetFlag(fsfd, flag); err != nil {
			return fmt.Errorf("fsconfig %s: %w", flag, err)
		}
	}
	if err := unix.FsconfigCreate(fsfd); err != nil {
		return fmt.Errorf("create overlay (%d layers): %w", len(lowers), err)
	}
	mfd, err := unix.Fsmount(fsfd, unix.FSMOUNT_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("fsmount", err)
	}
	defer unix.Close(mfd)
	if err := unix.MoveMount(mfd, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
		return &os.PathError{Op: "move_mount", Path: target, Err: err}
	}
	return nil
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

// mountData mounts with mount(2). Its option string is limited to one page;
// when the layer paths do not fit, each lower layer is named through an
// O_PATH descriptor ("/proc/self/fd/N", ~18 bytes a layer). The descriptors
// are process-wide, unlike a chdir-based relative path, so no other goroutine
// can be disturbed, and overlayfs resolves them while mounting.
func mountData(lowers []string, upper, work, target string, flags mountFlags) error {
	limit := unix.Getpagesize() - 1 // the terminating NUL shares the page
	data := overlayOptions(lowers, upper, work, flags)
	var fds pathFDs
	defer fds.close()
	if len(data) > limit {
		short := make([]string, len(lowers))
		for i, l := range lowers {
			p, err := fds.short(l)
			if err != nil {
				return err
			}
			short[i] = p
		}
		data = overlayOptions(short, upper, work, flags)
		if len(data) > limit {
			return fmt.Errorf("overlay mount options for %d layers take %d bytes, over the kernel's limit of %d (one page)", len(lowers), len(data), limit)
		}
	}
	if err := unix.Mount("overlay", target, "overlay", 0, data); err != nil {
		return &os.PathError{Op: "mount overlay", Path: target, Err: err}
	}
	return nil
}

func overlayOptions(lowers []string, upper, work string, flags mountFlags) string {
	escaped := make([]string, len(lowers))
	for i, l := range lowers {
		escaped[i] = escapeOption(l)
	}
	opts := "lowerdir=" + strings.Join(escaped, ":") + ",upperdir=" + escapeOption(upper) + ",workdir=" + escapeOption(work)
	for _, flag := range flags.names() {
		opts += "," + flag
	}
	return opts
}

// escapeOption protects the separators overlayfs splits on (',' between
// options, ':' between lower layers).
func escapeOption(s string) string {
	return strings.NewReplacer(`\`, `\\`, `,`, `\,`, `:`, `\:`).Replace(s)
}

// pathFDs holds O_PATH descriptors that stand in for long paths.
type pathFDs []int

func (p *pathFDs) short(path string) (string, error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", &os.PathError{Op: "open", Path: path, Err: err}
	}
	*p = append(*p, fd)
	return "/proc/self/fd/" + strconv.Itoa(fd), nil
}

func (p pathFDs) close() {
	for _, fd := range p {
		unix.Close(fd)
	}
}

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

// fsconfigMaxString is the longest string value fsconfig(2) accepts (it
// copies at most 256 bytes, the terminating NUL included).
const fsconfigMaxString = 255

// mountOverlay mounts an overlay at target. lowers lists the top layer first,
// as overlayfs wants it.
func mountOverlay(ov overlaySupport, lowers []string, upper, work, target string) error {
	switch ov.mode {
	case overlayFsconfig:
		return mountFsconfig(lowers, upper, work, target, ov.volatile)
	case overlayMountData:
		return mountData(lowers, upper, work, target, ov.volatile)
	}
	return fmt.Errorf("overlay mode %v cannot mount", ov.mode)
}

func mountFsconfig(lowers []string, upper, work, target string, volatile bool) (err error) {
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
	if volatile {
		if err := unix.FsconfigSetFlag(fsfd, "volatile"); err != nil {
			return fmt.Errorf("fsconfig volatile: %w", err)
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
func mountData(lowers []string, upper, work, target string, volatile bool) error {
	limit := unix.Getpagesize() - 1 // the terminating NUL shares the page
	data := overlayOptions(lowers, upper, work, volatile)
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
		data = overlayOptions(short, upper, work, volatile)
		if len(data) > limit {
			return fmt.Errorf("overlay mount options for %d layers take %d bytes, over the kernel's limit of %d (one page)", len(lowers), len(data), limit)
		}
	}
	if err := unix.Mount("overlay", target, "overlay", 0, data); err != nil {
		return &os.PathError{Op: "mount overlay", Path: target, Err: err}
	}
	return nil
}

func overlayOptions(lowers []string, upper, work string, volatile bool) string {
	escaped := make([]string, len(lowers))
	for i, l := range lowers {
		escaped[i] = escapeOption(l)
	}
	opts := "lowerdir=" + strings.Join(escaped, ":") + ",upperdir=" + escapeOption(upper) + ",workdir=" + escapeOption(work)
	if volatile {
		opts += ",volatile"
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

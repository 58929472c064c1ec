package images

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"syscall"

	"golang.org/x/sys/unix"
)

// copyLayers builds a root without overlayfs: the layers, bottom first, are
// copied into dst with overlay semantics, a whiteout removing what lower
// layers put at its path and an opaque directory hiding their contents.
//
// dst's paths are never resolved through symlinks: a directory entry of a
// layer is visited before its children, and visiting it makes dst's path a
// real directory (replacing any non-directory a lower layer left there), so
// every parent below dst is a directory this function made.
//
// x names the layers' opaque markers (user.overlay.* in a user namespace).
// overlayfs' own xattrs, in either namespace, are not copied: in a copy
// they mean nothing.
func copyLayers(ctx context.Context, layers []string, dst string, x overlayXattrs) error {
	buf := make([]byte, 4096)
	for _, layer := range layers {
		if err := copyLayer(ctx, layer, dst, x, &buf); err != nil {
			return fmt.Errorf("layer %s: %w", layer, err)
		}
	}
	return nil
}

type inode struct{ dev, ino uint64 }

func copyLayer(ctx context.Context, src, dst string, x overlayXattrs, xbuf *[]byte) error {
	links := make(map[inode]string) // hard links inside this layer
	var dirs []string               // to stamp times on after their contents are written
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil // "/" keeps the attributes MountRoot gave it, as with overlay's upper
		}
		target := filepath.Join(dst, rel)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		if isWhiteout(fi) {
			return os.RemoveAll(target)
		}
		if fi.IsDir() {
			if err := copyDir(path, target, fi, x); err != nil {
				return err
			}
			dirs = append(dirs, path)
		} else {
			if err := os.RemoveAll(target); err != nil {
				return err
			}
			if st.Nlink > 1 && fi.Mode().IsRegular() {
				key := inode{uint64(st.Dev), st.Ino}
				if first, ok := links[key]; ok {
					return os.Link(first, target)
				}
				links[key] = target
			}
			if err := copyNonDir(path, target, fi); err != nil {
				return err
			}
		}
		return copyMetadata(path, target, fi, xbuf)
	})
	if err != nil {
		return err
	}
	// Children change a directory's mtime: stamp directories last, deepest first.
	for _, path := range slices.Backward(dirs) {
		fi, err := os.Lstat(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if err := setTimes(filepath.Join(dst, rel), fi); err != nil {
			return err
		}
	}
	return nil
}

// copyDir makes target a directory, merging with a lower layer's directory
// unless this one is opaque.
func copyDir(path, target string, fi fs.FileInfo, x overlayXattrs) error {
	tfi, err := os.Lstat(target)
	switch {
	case err == nil && tfi.IsDir():
		if !isOpaqueDir(path, x) {
			return nil
		}
		entries, err := os.ReadDir(target)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if err := os.RemoveAll(filepath.Join(target, e.Name())); err != nil {
				return err
			}
		}
		return nil
	case err == nil:
		if err := os.Remove(target); err != nil {
			return err
		}
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	return os.Mkdir(target, fi.Mode().Perm())
}

func copyNonDir(path, target string, fi fs.FileInfo) error {
	st := fi.Sys().(*syscall.Stat_t)
	switch {
	case fi.Mode().IsRegular():
		in, err := os.Open(path)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
		if err != nil {
			return err
		}
		// io.Copy between files uses copy_file_range: reflinks where the
		// filesystem has them.
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	case fi.Mode()&fs.ModeSymlink != 0:
		link, err := os.Readlink(path)
		if err != nil {
			return err
		}
		return os.Symlink(link, target)
	default: // devices, FIFOs, sockets
		if err := unix.Mknod(target, st.Mode, int(st.Rdev)); err != nil {
			return &os.PathError{Op: "mknod", Path: target, Err: err}
		}
		return nil
	}
}

// copyMetadata copies ownership, mode (after chown, which clears setuid),
// xattrs other than overlay's own, and times, never following a symlink.
func copyMetadata(path, target string, fi fs.FileInfo, xbuf *[]byte) error {
	st := fi.Sys().(*syscall.Stat_t)
	if err := os.Lchown(target, int(st.Uid), int(st.Gid)); err != nil {
		return err
	}
	if fi.Mode()&fs.ModeSymlink == 0 {
		if err := unix.Fchmodat(unix.AT_FDCWD, target, st.Mode&07777, 0); err != nil {
			return &os.PathError{Op: "chmod", Path: target, Err: err}
		}
	}
	names, err := listXattrs(path, xbuf)
	if err != nil {
		return err
	}
	for _, name := range names {
		if isOverlayXattr(name) {
			continue
		}
		size, err := unix.Lgetxattr(path, name, nil)
		if err != nil {
			return &os.PathError{Op: "lgetxattr " + name, Path: path, Err: err}
		}
		val := make([]byte, size)
		if size, err = unix.Lgetxattr(path, name, val); err != nil {
			return &os.PathError{Op: "lgetxattr " + name, Path: path, Err: err}
		}
		if err := unix.Lsetxattr(target, name, val[:size], 0); err != nil {
			return &os.PathError{Op: "lsetxattr " + name, Path: target, Err: err}
		}
	}
	if fi.IsDir() {
		return nil // after the directory's contents
	}
	return setTimes(target, fi)
}

func setTimes(target string, fi fs.FileInfo) error {
	st := fi.Sys().(*syscall.Stat_t)
	ts := []unix.Timespec{unix.NsecToTimespec(st.Atim.Nano()), unix.NsecToTimespec(st.Mtim.Nano())}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, target, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return &os.PathError{Op: "utimensat", Path: target, Err: err}
	}
	return nil
}

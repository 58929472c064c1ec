package images

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// ErrNoRoot is AdoptRoot's error for a directory that holds no root.
var ErrNoRoot = errors.New("no root mounted there")

// AdoptRoot takes over a root that MountRoot made in an earlier process of
// this daemon (live restore: the runtime kept running across the restart):
// img, which needs only Ref and the Layers the root was made of, is in use
// again until UnmountRoot(dir), so GC keeps the layers the mounted overlay
// still reads. Nothing is mounted or changed on disk.
//
// It fails with ErrNoRoot when dir/rootfs is missing, or is not a mount
// point while this store mounts overlays, and with an error of its own when
// a layer is gone: an overlay whose lower layers were removed cannot be
// trusted, and the caller removes the runtime instead.
func (s *Store) AdoptRoot(img *Image, dir string) error {
	if img == nil {
		return errors.New("images: AdoptRoot: nil image")
	}
	rootfs, _, _ := rootPaths(dir)
	fi, err := os.Lstat(rootfs)
	if err != nil || !fi.IsDir() {
		return fmt.Errorf("images: AdoptRoot %s: %w", dir, ErrNoRoot)
	}
	if s.overlay.mode != overlayNone {
		mounted, err := isMountPoint(rootfs)
		if err != nil {
			return fmt.Errorf("images: AdoptRoot %s: %w", dir, err)
		}
		if !mounted {
			return fmt.Errorf("images: AdoptRoot %s: %w", dir, ErrNoRoot)
		}
	}
	if err := s.acquire(img, dir); err != nil {
		return fmt.Errorf("images: AdoptRoot %s: %w", dir, err)
	}
	return nil
}

// isMountPoint reports whether the directory path (not followed when a link)
// is the root of a mount: its mount id differs from its parent's (a path that
// is not a directory is an error: it has no parent to compare through). statx's mount id needs no
// mount table parsing, which costs O(mounts) with a thousand runtimes.
func isMountPoint(path string) (bool, error) {
	var st, parent unix.Statx_t
	flags := unix.AT_SYMLINK_NOFOLLOW
	if err := unix.Statx(unix.AT_FDCWD, path, flags, unix.STATX_MNT_ID, &st); err != nil {
		return false, &os.PathError{Op: "statx", Path: path, Err: err}
	}
	if err := unix.Statx(unix.AT_FDCWD, path+"/..", flags, unix.STATX_MNT_ID, &parent); err != nil {
		return false, &os.PathError{Op: "statx", Path: path + "/..", Err: err}
	}
	if st.Mask&unix.STATX_MNT_ID == 0 || parent.Mask&unix.STATX_MNT_ID == 0 {
		// Before Linux 5.8: a mount's root has another device than its parent
		// (an overlay always does).
		return st.Dev_major != parent.Dev_major || st.Dev_minor != parent.Dev_minor, nil
	}
	return st.Mnt_id != parent.Mnt_id, nil
}

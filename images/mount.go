package images

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

const probePrefix = "probe-"

// MountRoot gives a runtime its own writable root under dir: an overlay of the
// image's layers with dir/upper for its writes and dir/work for overlayfs,
// mounted at dir/rootfs with "volatile" (the upper layer is thrown away, so
// unmounting need not sync it). It returns the rootfs path.
//
// Where overlayfs is not usable (detected once, logged once), dir/rootfs is a
// copy of the layers with their whiteouts applied.
//
// dir may exist but must not hold a root already: UnmountRoot it first.
//
// Until UnmountRoot(dir), the image and its layers are in use: GC keeps them.
// If they were collected after Pull returned img, MountRoot pulls img.Ref again.
func (s *Store) MountRoot(ctx context.Context, img *Image, dir string) (root string, err error) {
	if img == nil {
		return "", errors.New("images: MountRoot: nil image")
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	ov := s.overlay
	// Search-only for others: the runtime's root must be reachable for a
	// user-namespaced container root, but the listing need not be.
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return "", fmt.Errorf("images: MountRoot: %w", err)
	}
	rootfs, upper, work := rootPaths(dir)
	dirs := []newDir{{rootfs, 0o755}}
	if ov.mode != overlayNone {
		// upper's root becomes the attributes of "/" in the runtime.
		dirs = append(dirs, newDir{upper, 0o755}, newDir{work, 0o700})
	}
	for _, p := range []string{rootfs, upper, work} {
		if exists(p) {
			return "", fmt.Errorf("images: MountRoot: %s already holds a root (%s exists)", dir, p)
		}
	}
	// In use from here until UnmountRoot(dir): GC keeps the image and its layers.
	if err := s.acquire(img, dir); err != nil {
		if !errors.Is(err, errLayersGone) || img.Ref == "" {
			return "", fmt.Errorf("images: MountRoot: %w", err)
		}
		// GC (or a person) removed the image since Pull returned it. Pull
		// it again, marked busy until it is acquired, so that GC cannot
		// take it away again in between.
		s.log.Info("image removed since it was pulled; pulling it again", "ref", img.Ref, "err", err)
		img, err = s.repull(ctx, img, dir)
		if err != nil {
			return "", fmt.Errorf("images: MountRoot: %w", err)
		}
	}
	defer func() {
		if err != nil {
			// Leave dir as we found it; the error is what matters.
			_ = s.UnmountRoot(dir)
		}
	}()
	for _, d := range dirs {
		if err := os.Mkdir(d.path, d.perm); err != nil {
			return "", fmt.Errorf("images: MountRoot: %w", err)
		}
		// Mkdir's mode is filtered by the umask; the runtime's "/" must not be.
		if err := os.Chmod(d.path, d.perm); err != nil {
			return "", fmt.Errorf("images: MountRoot: %w", err)
		}
		// The runtime's own layer belongs to its (mapped) root.
		if m := s.cfg.IDMap; m != nil {
			if err := os.Chown(d.path, int(m.HostUID), int(m.HostGID)); err != nil {
				return "", fmt.Errorf("images: MountRoot: %w", err)
			}
		}
	}
	if ov.mode == overlayNone {
		if err := copyLayers(ctx, img.Layers, rootfs, s.xattrs); err != nil {
			return "", fmt.Errorf("images: MountRoot: copy layers of %s: %w", img.Ref, err)
		}
		return rootfs, nil
	}
	if err := mountOverlay(ov, s.xattrs, lowerDirs(img.Layers, s.emptyDir()), upper, work, rootfs); err != nil {
		return "", fmt.Errorf("images: MountRoot %s: %w", img.Ref, err)
	}
	return rootfs, nil
}

// UnmountRoot undoes MountRoot: it unmounts dir/rootfs if it is a mount point
// (umount itself tells, so no state is needed: it works after a restart), then
// removes dir/upper, dir/work and dir/rootfs. It is idempotent and a no-op on
// a dir that never had a root; dir itself is left alone. Once the root is
// unmounted, its image is no longer in use (GC may collect it when it has
// been unused long enough).
func UnmountRoot(dir string) error {
	return removeRoot(dir)
}

// UnmountRoot is the package's UnmountRoot for a root this store mounted:
// once the root is gone, its image and layers are no longer in use.
func (s *Store) UnmountRoot(dir string) error {
	if err := removeRoot(dir); err != nil {
		return err
	}
	// The overlay no longer reads the layers. (A copied root never did.)
	s.release(dir)
	return nil
}

func removeRoot(dir string) error {
	rootfs, upper, work := rootPaths(dir)
	if err := unmountAll(rootfs); err != nil {
		// Never remove files through a root that is still mounted: with the
		// copy fallback or a foreign mount there, that would delete real data.
		return fmt.Errorf("images: UnmountRoot: %w", err)
	}
	var errs []error
	for _, p := range []string{rootfs, upper, work} {
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("images: UnmountRoot: %w", err)
	}
	return nil
}

// unmountAll unmounts everything stacked on path until it is no mount point.
// umount answers EINVAL for a path that is not a mount point and ENOENT for
// one that does not exist, which needs no mount table parsing.
func unmountAll(path string) error {
	for range 64 {
		err := unix.Unmount(path, unix.UMOUNT_NOFOLLOW)
		switch {
		case err == nil:
			continue
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENOTDIR):
			return nil
		case errors.Is(err, unix.EBUSY):
			// Something on the host still uses it (a shell's cwd, a leaked fd):
			// detach it now, the kernel frees it when the last user goes.
			if err := unix.Unmount(path, unix.UMOUNT_NOFOLLOW|unix.MNT_DETACH); err != nil {
				return &os.PathError{Op: "umount", Path: path, Err: err}
			}
		default:
			return &os.PathError{Op: "umount", Path: path, Err: err}
		}
	}
	return fmt.Errorf("umount %s: still a mount point after 64 unmounts", path)
}

type newDir struct {
	path string
	perm os.FileMode
}

func rootPaths(dir string) (rootfs, upper, work string) {
	return filepath.Join(dir, "rootfs"), filepath.Join(dir, "upper"), filepath.Join(dir, "work")
}

// lowerDirs turns bottom-first layers into overlay's top-first lowerdir list.
// A layer that appears twice keeps only its topmost place: overlayfs refuses
// a directory used twice, and the lower copy could never show anything the
// upper copy does not already show.
func lowerDirs(layers []string, empty string) []string {
	seen := make(map[string]bool, len(layers))
	out := make([]string, 0, len(layers))
	for i := len(layers) - 1; i >= 0; i-- {
		if l := layers[i]; !seen[l] {
			seen[l] = true
			out = append(out, l)
		}
	}
	if len(out) == 0 {
		// overlayfs needs a lower layer; an image without layers is empty.
		out = append(out, empty)
	}
	return out
}

// probeOverlay finds out how this host can assemble roots by mounting a
// throwaway overlay inside the store, trying the best mechanism first. New
// runs it once, so the first cold start does not pay for it. In a user
// namespace it mounts as roots will, with "userxattr": a kernel that cannot
// mount overlayfs there (before 5.11) gets copies.
func (s *Store) probeOverlay() overlaySupport {
	none := overlaySupport{mode: overlayNone}
	dir, err := os.MkdirTemp(s.tmpDir(), probePrefix)
	if err != nil {
		s.log.Warn("overlayfs probe failed; runtime roots will be copies of their layers", "err", err)
		return none
	}
	defer func() {
		if err := UnmountRoot(dir); err == nil {
			os.RemoveAll(dir)
		}
	}()
	lower := filepath.Join(dir, "lower")
	if err := os.Mkdir(lower, 0o755); err != nil {
		s.log.Warn("overlayfs probe failed; runtime roots will be copies of their layers", "err", err)
		return none
	}
	rootfs, upper, work := rootPaths(dir)
	var errs []error
	for _, ov := range []overlaySupport{
		{overlayFsconfig, true}, {overlayMountData, true},
		{overlayFsconfig, false}, {overlayMountData, false},
	} {
		err := errors.Join(os.Mkdir(rootfs, 0o755), os.Mkdir(upper, 0o755), os.Mkdir(work, 0o700))
		if err == nil {
			err = mountOverlay(ov, s.xattrs, []string{lower}, upper, work, rootfs)
		}
		if uerr := UnmountRoot(dir); uerr != nil {
			err = errors.Join(err, uerr)
			errs = append(errs, fmt.Errorf("%v volatile=%v: %w", ov.mode, ov.volatile, err))
			break
		}
		if err == nil {
			s.log.Info("runtime roots use overlayfs", "mount", ov.mode.String(), "volatile", ov.volatile, "userxattr", s.xattrs.user)
			return ov
		}
		errs = append(errs, fmt.Errorf("%v volatile=%v: %w", ov.mode, ov.volatile, err))
	}
	s.log.Warn("overlayfs is not usable here; runtime roots will be copies of their layers (slow, uses disk)",
		"root", s.root, "err", errors.Join(errs...))
	return none
}

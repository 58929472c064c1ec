package images

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/moby/sys/userns"
	"go.podman.io/storage/pkg/archive"
	"go.podman.io/storage/pkg/idtools"
	"golang.org/x/sys/unix"

	"executor/oci"
)

// unpackOptions are how a layer is unpacked.
type unpackOptions struct {
	// idmap, when set, shifts owners into a host range; an owner outside
	// the mapped range becomes OverflowID (see ownerSquash).
	idmap *oci.IDMap
	// budget is the pull's; nil means no limits (tests only).
	budget *pullBudget
	// lower finds the layers below, for hard links to their files (see
	// layerFilter.copyUp); nil for a bottom layer.
	lower lowerFinder
	// xattrs is the store's: which opaque marker the layer gets (and the
	// layers below have).
	xattrs overlayXattrs
}

// unpackStats is what unpacking left out.
type unpackStats struct {
	devices     int    // device nodes not created
	firstDevice string // the name of one of them
	owners      ownerSquash
	// copied counts the files copied up from the layers below for hard
	// links to them: when there are any, the layer's content depends on
	// those layers.
	copied int
}

// unpackLayer applies an uncompressed layer tar to the empty directory dest.
//
// archive.Unpack confines every path to dest: names are cleaned and ".."
// refused, parents are resolved with securejoin (a symlink inside the layer,
// absolute or relative, resolves inside dest), hard link targets are resolved
// the same way, and an entry that replaces an existing symlink removes the
// symlink instead of writing through it. AUFS whiteouts become overlay ones.
// FIFOs and setuid/setgid bits are created as the tar says; ownership is
// kept (we are root), shifted by o.idmap, and squashed to OverflowID for the
// owners the range cannot hold.
//
// Before archive.Unpack sees an entry, layerFilter charges it to the pull's
// budget, so a layer stops at the limit with nothing past it written, and
// leaves out device nodes (see layerFilter.copy).
func unpackLayer(r io.Reader, dest string, o unpackOptions) (unpackStats, error) {
	inUserNS := userns.RunningInUserNS()
	opts := &archive.TarOptions{
		WhiteoutFormat: archive.OverlayWhiteoutFormat,
		// In a user namespace devices cannot be created; archive skips them
		// instead of failing the whole layer (the filter turns whiteouts
		// into their .wh. form, which it does create), and ignores the
		// xattrs it may not set there (trusted.*).
		InUserNS: inUserNS,
	}
	if m := o.idmap; m != nil {
		opts.UIDMaps = []idtools.IDMap{{ContainerID: 0, HostID: int(m.HostUID), Size: int(m.Size)}}
		opts.GIDMaps = []idtools.IDMap{{ContainerID: 0, HostID: int(m.HostGID), Size: int(m.Size)}}
	}
	filter := &layerFilter{budget: o.budget, ids: ownerRange(o.idmap), idmap: o.idmap, lower: o.lower,
		xattrs: o.xattrs, inUserNS: inUserNS}
	pr, pw := io.Pipe()
	filtered := make(chan error, 1)
	go func() {
		err := filter.copy(pw, r)
		pw.CloseWithError(err) // nil: the unpacker reads EOF
		filtered <- err
	}()
	err := archive.Unpack(pr, dest, opts)
	// Unblocks the filter if the unpacker stopped before the end.
	pr.CloseWithError(errUnpackStopped)
	if ferr := <-filtered; ferr != nil && !errors.Is(ferr, errUnpackStopped) {
		// The cause (a limit, a broken stream); the unpacker only saw the
		// stream end.
		err = ferr
	}
	st := unpackStats{devices: filter.devices, firstDevice: filter.firstDevice, owners: filter.owners, copied: filter.copied}
	if err != nil {
		return st, fmt.Errorf("unpack layer: %w", err)
	}
	if err := scrubOverlayXattrs(dest, o.xattrs); err != nil {
		return st, fmt.Errorf("unpack layer: %w", err)
	}
	return st, nil
}

// errUnpackStopped is what the layer filter sees when the unpacker gave up first.
var errUnpackStopped = errors.New("unpacking stopped")

// scrubOverlayXattrs leaves on the layer no overlayfs xattr but the opaque
// markers of its ".wh..wh..opq" entries, named as x says. The layer filter
// already dropped every trusted.overlay.* and user.overlay.* xattr the tar
// headers carried (with them an image could plant redirects, metacopy or
// opaque markers that overlay would honour), so the opaque markers archive
// wrote are all there is; this walk is the second line. archive names the
// marker by its own idea of rootlessness (go.podman.io/storage's
// unshare.IsRootless, which also counts a root without CAP_SYS_ADMIN), so
// a marker in the other namespace is renamed to the store's.
func scrubOverlayXattrs(root string, x overlayXattrs) error {
	other := overlayXattrs{user: !x.user}
	buf := make([]byte, 4096)
	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		names, err := listXattrs(path, &buf)
		if err != nil {
			return err
		}
		for _, name := range names {
			if !isOverlayXattr(name) {
				continue
			}
			if name == x.opaque() && d.IsDir() && isOpaqueDir(path, x) {
				continue
			}
			if name == other.opaque() && d.IsDir() && isOpaqueDir(path, other) {
				if err := unix.Lsetxattr(path, x.opaque(), []byte{'y'}, 0); err != nil {
					return &os.PathError{Op: "lsetxattr " + x.opaque(), Path: path, Err: err}
				}
			}
			if err := unix.Lremovexattr(path, name); err != nil && !errors.Is(err, unix.ENODATA) {
				return &os.PathError{Op: "lremovexattr " + name, Path: path, Err: err}
			}
		}
		return nil
	})
}

// listXattrs returns the xattr names of path, without following a symlink.
func listXattrs(path string, buf *[]byte) ([]string, error) {
	for {
		n, err := unix.Llistxattr(path, *buf)
		if errors.Is(err, unix.ERANGE) {
			size, err := unix.Llistxattr(path, nil)
			if err != nil {
				return nil, &os.PathError{Op: "llistxattr", Path: path, Err: err}
			}
			*buf = make([]byte, size*2)
			continue
		}
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		if err != nil {
			return nil, &os.PathError{Op: "llistxattr", Path: path, Err: err}
		}
		var names []string
		for name := range bytes.SplitSeq((*buf)[:n], []byte{0}) {
			if len(name) > 0 {
				names = append(names, string(name))
			}
		}
		return names, nil
	}
}

// isOpaqueDir reports whether path carries overlay's opaque marker "y" in
// the namespace x.
func isOpaqueDir(path string, x overlayXattrs) bool {
	var v [2]byte
	n, err := unix.Lgetxattr(path, x.opaque(), v[:])
	return err == nil && n == 1 && v[0] == 'y'
}

// isWhiteout reports whether fi is an overlay whiteout (0/0 character device).
func isWhiteout(fi fs.FileInfo) bool {
	if fi.Mode()&fs.ModeCharDevice == 0 {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && st.Rdev == 0
}

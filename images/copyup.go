package images

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// lowerFinder returns the unpacked dirs of the layers below the one being
// unpacked, bottom first. It may wait for them to be unpacked.
type lowerFinder func() ([]string, error)

// errLowerHardlink marks a layer whose hard link names a file of no layer:
// not this one so far, nor one below.
var errLowerHardlink = errors.New("hard link to a file that is in neither this layer nor the layers below")

// copyUp handles a hard link whose target this layer has not written: one to
// a file of a lower layer. Every layer is unpacked alone into its own dir,
// where such a link has nothing to point at; umoci, containerd and Docker
// apply layers onto the root the lower ones made, where it is an ordinary
// link to the lower file. So the target is copied up from the lower layers'
// merged view, as overlayfs itself does before it links a lower file: an
// entry with its content and its metadata is written into this layer ahead
// of the link, and the link header takes the same metadata (the unpacker
// applies a link's header to the inode; umoci leaves a link's own header
// aside, so the file keeps its own). Both names then share one inode, and a
// later link to either within this layer stays a real hard link.
//
// The layer's content then depends on the layers below it: fetchLayer keys
// it by chain ID instead of diffID (see pull).
func (f *layerFilter) copyUp(tw *tar.Writer, link *tar.Header, target string) error {
	var lowers []string
	if f.lower != nil && !f.hiddenHere(target) {
		var err error
		if lowers, err = f.lower(); err != nil {
			return fmt.Errorf("hard link %q to %q: layers below: %w", link.Name, target, err)
		}
	}
	src, fi, err := findLower(lowers, target, f.xattrs)
	if err != nil {
		return fmt.Errorf("hard link %q to %q: %w", link.Name, target, err)
	}
	if src == "" || fi.IsDir() {
		return fmt.Errorf("hard link %q to %q: %w", link.Name, target, errLowerHardlink)
	}
	// Parents the layer has not written would be made by the unpacker as
	// root's 0755 and show through overlay in place of the lower ones.
	var parents []string
	for d := path.Dir(target); d != "." && !f.written[d]; d = path.Dir(d) {
		parents = append(parents, d)
	}
	for i := len(parents) - 1; i >= 0; i-- {
		dsrc, dfi, err := findLower(lowers, parents[i], f.xattrs)
		if err != nil {
			return fmt.Errorf("hard link %q to %q: %w", link.Name, target, err)
		}
		if dsrc == "" || !dfi.IsDir() {
			return fmt.Errorf("hard link %q to %q: %w", link.Name, target, errLowerHardlink)
		}
		if err := f.copyEntry(tw, dsrc, dfi, parents[i], nil); err != nil {
			return err
		}
	}
	if err := f.copyEntry(tw, src, fi, target, link); err != nil {
		return err
	}
	f.copied++
	return nil
}

// hiddenHere reports whether this layer's whiteouts or opaque markers so
// far hide name, or a directory above it, from the layers below.
func (f *layerFilter) hiddenHere(name string) bool {
	for ; name != "."; name = path.Dir(name) {
		if f.hidden[name] {
			return true
		}
	}
	return false
}

// copyEntry writes an entry named name made from the lower file src, and
// gives link, when set, the same metadata.
func (f *layerFilter) copyEntry(tw *tar.Writer, src string, fi fs.FileInfo, name string, link *tar.Header) error {
	hdr, err := tar.FileInfoHeader(fi, "")
	if err != nil {
		return fmt.Errorf("copy up %q: %w", name, err)
	}
	hdr.Name, hdr.Format = name, tar.FormatPAX
	hdr.Uname, hdr.Gname = "", ""
	if hdr.Typeflag == tar.TypeSymlink {
		if hdr.Linkname, err = os.Readlink(src); err != nil {
			return fmt.Errorf("copy up %q: %w", name, err)
		}
	}
	// The lower dir holds host ids; the unpacker shifts the image's.
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && f.idmap != nil {
		hdr.Uid, hdr.Gid = int(st.Uid)-int(f.idmap.HostUID), int(st.Gid)-int(f.idmap.HostGID)
	}
	buf := make([]byte, 4096)
	names, err := listXattrs(src, &buf)
	if err != nil {
		return err
	}
	for _, x := range names {
		if isOverlayXattr(x) {
			continue
		}
		v, err := getXattr(src, x)
		if err != nil {
			return err
		}
		if hdr.PAXRecords == nil {
			hdr.PAXRecords = make(map[string]string)
		}
		hdr.PAXRecords["SCHILY.xattr."+x] = string(v)
	}
	if err := f.budget.chargeEntry(hdr.Size); err != nil {
		return err
	}
	if err := tw.WriteHeader(reencode(hdr)); err != nil {
		return fmt.Errorf("copy up %q: %w", name, err)
	}
	if hdr.Typeflag == tar.TypeReg {
		if err := copyFileTo(tw, src, hdr.Size); err != nil {
			return fmt.Errorf("copy up %q: %w", name, err)
		}
	}
	f.write(name)
	if link != nil {
		if f.copiedUp == nil {
			f.copiedUp = make(map[string]*tar.Header)
		}
		f.copiedUp[name] = hdr
		f.linkMetadata(link, hdr)
	}
	return nil
}

// linkMetadata gives link the metadata of the file it links to.
func (f *layerFilter) linkMetadata(link, file *tar.Header) {
	link.Mode, link.Uid, link.Gid, link.ModTime = file.Mode, file.Uid, file.Gid, file.ModTime
	link.AccessTime, link.ChangeTime = time.Time{}, time.Time{}
	link.PAXRecords = file.PAXRecords
}

func copyFileTo(w io.Writer, src string, size int64) error {
	// The store's own file: nothing replaces it while the pull pins it.
	file, err := os.OpenFile(src, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer file.Close()
	n, err := io.Copy(w, io.LimitReader(file, size))
	if err == nil && n != size {
		err = fmt.Errorf("%s: %d bytes, %d expected", src, n, size)
	}
	return err
}

func getXattr(path, name string) ([]byte, error) {
	for size := 256; ; size *= 4 {
		buf := make([]byte, size)
		n, err := unix.Lgetxattr(path, name, buf)
		if errors.Is(err, unix.ERANGE) && size < 1<<20 {
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "lgetxattr " + name, Path: path, Err: err}
		}
		return buf[:n], nil
	}
}

// findLower looks name up in the layer dirs lowers (bottom first) as
// overlayfs would in their merged view: the topmost layer that has it wins,
// unless a layer above it hides it with a whiteout, an opaque directory or
// a non-directory in its path. It returns "" when the view has no name.
// x names the layers' opaque markers.
func findLower(lowers []string, name string, x overlayXattrs) (string, fs.FileInfo, error) {
	parts := strings.Split(name, "/")
	for i := len(lowers) - 1; i >= 0; i-- {
		cur := lowers[i]
		opaque := false
		for j, part := range parts {
			cur = filepath.Join(cur, part)
			fi, err := os.Lstat(cur)
			if errors.Is(err, fs.ErrNotExist) {
				break
			}
			if err != nil {
				return "", nil, err
			}
			if isWhiteout(fi) {
				return "", nil, nil
			}
			if j == len(parts)-1 {
				return cur, fi, nil
			}
			if !fi.IsDir() {
				return "", nil, nil
			}
			if isOpaqueDir(cur, x) {
				opaque = true
			}
		}
		if opaque {
			return "", nil, nil
		}
	}
	return "", nil, nil
}

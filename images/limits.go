package images

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"sync/atomic"

	"go.podman.io/storage/pkg/archive"

	"executor/oci"
)

// Defaults of Config.SizeLimit and Config.MaxEntries.
const (
	// DefaultSizeLimit is far above any function runtime image (Open
	// Runtimes' biggest are about 2 GiB unpacked; CUDA bases about 10 GiB)
	// and still a bound a host's disk can take several times over.
	DefaultSizeLimit int64 = 16 << 30
	// DefaultMaxEntries is about ten times the files of the biggest common
	// runtime images (node and python images with their toolchains hold
	// 20,000 to 100,000), and the inodes ext4's default ratio (one per 16 KiB)
	// reserves for DefaultSizeLimit bytes.
	DefaultMaxEntries int64 = 1_000_000
)

// ErrImageTooLarge: unpacking the image would exceed Config.SizeLimit or
// Config.MaxEntries. Nothing of the layer that crossed the limit is kept.
var ErrImageTooLarge = errors.New("image too large")

// pullBudget is what one pull may still unpack: it is shared by the layers
// that pull unpacks, concurrently. Layers already in the store cost nothing;
// the pull that unpacked them paid for them.
type pullBudget struct {
	sizeLimit, maxEntries int64
	// stream counts the bytes of the layers' uncompressed tar streams, data
	// the sum of their entries' sizes (a sparse file at its apparent size,
	// which is what unpacking writes). Each is held to sizeLimit.
	stream, data, entries atomic.Int64
}

func newPullBudget(sizeLimit, maxEntries int64) *pullBudget {
	return &pullBudget{sizeLimit: sizeLimit, maxEntries: maxEntries}
}

// errSizeLimit and errEntryLimit say which limit a pull crossed, in our own
// words: they are safe to show to an API client.
func (b *pullBudget) errSizeLimit() error {
	return &refusal{kind: ErrImageTooLarge, reason: fmt.Sprintf("its layers unpack to more than the limit of %s", humanBytes(b.sizeLimit))}
}

func (b *pullBudget) errEntryLimit() error {
	return &refusal{kind: ErrImageTooLarge, reason: fmt.Sprintf("its layers hold more than the limit of %d files", b.maxEntries)}
}

// chargeStream accounts for n more bytes of uncompressed layer stream.
func (b *pullBudget) chargeStream(n int64) error {
	if b == nil {
		return nil
	}
	if b.stream.Add(n) > b.sizeLimit {
		return b.errSizeLimit()
	}
	return nil
}

// chargeEntry accounts for one more tar entry whose content is size bytes.
func (b *pullBudget) chargeEntry(size int64) error {
	if b == nil {
		return nil
	}
	if b.entries.Add(1) > b.maxEntries {
		return b.errEntryLimit()
	}
	if size < 0 || b.data.Add(size) > b.sizeLimit {
		return b.errSizeLimit()
	}
	return nil
}

// meteredReader charges every byte read from r to a budget and stops with
// its error once the budget is spent, so a decompression bomb costs at most
// the limit in CPU time, whatever it would expand to.
type meteredReader struct {
	r      io.Reader
	budget *pullBudget
	n      int64
}

func (m *meteredReader) Read(p []byte) (int, error) {
	n, err := m.r.Read(p)
	m.n += int64(n)
	if cerr := m.budget.chargeStream(int64(n)); cerr != nil {
		return n, cerr
	}
	return n, err
}

// layerFilter decides, entry by entry, what of a layer's tar stream reaches
// the unpacker.
type layerFilter struct {
	budget *pullBudget
	// ids is how many ids owners can have (see ownerRange); owners counts
	// the entries whose owner became OverflowID.
	ids    int64
	owners ownerSquash
	idmap  *oci.IDMap // the store's, for the owners of files copied up
	// devices counts the device nodes left out; firstDevice names one, for the log.
	devices     int
	firstDevice string
	skipped     map[string]bool // names of the device nodes left out, for hard links to them

	// written holds the names this layer's entries created so far, and
	// hidden the names its whiteouts and opaque markers hide from the layers
	// below: what a whiteout and a hard link refer to depends on them.
	written, hidden map[string]bool
	// lower finds a name in the layers below this one (see copyUp); nil
	// when there are none.
	lower lowerFinder
	// copied counts the entries copied up from the layers below;
	// copiedUp holds their headers while no entry of this layer replaced
	// them, for later links to them (see copyUp).
	copied   int
	copiedUp map[string]*tar.Header

	// xattrs is the store's, for the opaque markers of the layers below.
	xattrs overlayXattrs
	// inUserNS: archive creates no device nodes, overlay whiteouts
	// included, so those are passed on in their .wh. form.
	inUserNS bool
}

// copy reads the tar stream r and writes to w the same entries, re-encoded
// as PAX, charging each to the budget before its data is written, with
// owners outside the id range squashed to OverflowID, and without the
// character and block devices other than overlay whiteouts
// (0/0): the layer store is the host's filesystem, and a device node there
// is one more way to the host's disks for whoever can reach the store (a
// runtime gets its own /dev; the devices an image ships are never needed).
//
// TarOptions has no per-entry hook, so filtering is done on the stream, with
// archive/tar on both sides rather than hand-written tar code.
func (f *layerFilter) copy(w io.Writer, r io.Reader) error {
	tr := tar.NewReader(r)
	tw := tar.NewWriter(w)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return tw.Close()
		}
		if err != nil {
			return err
		}
		if !hasContent(hdr.Typeflag) {
			hdr.Size = 0 // whatever the header says, nothing follows it
		}
		if err := f.budget.chargeEntry(hdr.Size); err != nil {
			return err
		}
		name := cleanName(hdr.Name)
		if f.inUserNS && isWhiteoutHeader(hdr) && name != "" && !strings.HasPrefix(path.Base(name), archive.WhiteoutPrefix) {
			// The same whiteout, which archive makes with mknod(2) (a
			// whiteout is the one device Linux >= 5.8 lets a user
			// namespace create). (As root a whiteout entry also replaces a
			// file this layer wrote under its name; here that file stays,
			// as with any .wh. entry: an image that has both is malformed.
			// One whose name is a .wh. name already hides nothing any layer
			// can have, and archive leaves it out.)
			dir, base := path.Split(name)
			hdr.Name, hdr.Typeflag = dir+archive.WhiteoutPrefix+base, tar.TypeReg
			name = cleanName(hdr.Name)
		}
		switch hdr.Typeflag {
		case tar.TypeXGlobalHeader:
			continue // the unpacker ignores it
		case tar.TypeReg:
			dir, base := path.Split(name)
			if base == archive.WhiteoutOpaqueDir {
				f.hide(path.Clean(dir))
				break
			}
			if hidden, ok := strings.CutPrefix(base, archive.WhiteoutPrefix); ok {
				hidden = path.Join(dir, hidden)
				if f.written[hidden] {
					// A whiteout hides only what lies below (image-spec,
					// "Whiteouts"): the name this layer wrote stays, and
					// hides the lower one by itself.
					continue
				}
				f.hide(hidden)
			}
		case tar.TypeChar, tar.TypeBlock:
			if isWhiteoutHeader(hdr) {
				break // an overlay whiteout: not a device anyone can open
			}
			f.skip(hdr.Name)
			continue
		case tar.TypeLink:
			target := cleanName(hdr.Linkname)
			if f.skipped[target] {
				// A hard link to a device left out would fail the layer.
				f.skip(hdr.Name)
				continue
			}
			if file := f.copiedUp[target]; file != nil {
				f.linkMetadata(hdr, file)
			} else if !f.written[target] {
				if err := f.copyUp(tw, hdr, target); err != nil {
					return err
				}
			}
		}
		f.owners.squash(hdr, f.ids)
		if err := tw.WriteHeader(reencode(hdr)); err != nil {
			return fmt.Errorf("tar entry %q: %w", hdr.Name, err)
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return err
		}
		f.write(name)
		if hdr.Typeflag != tar.TypeLink {
			delete(f.copiedUp, name)
		}
	}
}

// isWhiteoutHeader reports whether hdr is an overlay whiteout (a 0/0
// character device).
func isWhiteoutHeader(hdr *tar.Header) bool {
	return hdr.Typeflag == tar.TypeChar && hdr.Devmajor == 0 && hdr.Devminor == 0
}

// cleanName is the name of a tar entry relative to the layer's root, as the
// unpacker resolves it: "./a", "/a" and "a/" are all "a".
func cleanName(name string) string {
	return strings.TrimPrefix(path.Clean("/"+name), "/")
}

func (f *layerFilter) write(name string) {
	if f.written == nil {
		f.written = make(map[string]bool)
	}
	f.written[name] = true
}

func (f *layerFilter) hide(name string) {
	if f.hidden == nil {
		f.hidden = make(map[string]bool)
	}
	f.hidden[name] = true
}

// hasContent reports whether entries of this type have data after their
// header (archive/tar reads none for the others).
func hasContent(typeflag byte) bool {
	switch typeflag {
	case tar.TypeLink, tar.TypeSymlink, tar.TypeChar, tar.TypeBlock, tar.TypeDir, tar.TypeFifo:
		return false
	}
	return true
}

func (f *layerFilter) skip(name string) {
	if f.skipped == nil {
		f.skipped = make(map[string]bool)
	}
	f.skipped[path.Clean(name)] = true
	if f.devices == 0 {
		f.firstDevice = name
	}
	f.devices++
}

// reencode is a fresh header with what the unpacker uses of hdr, as
// archive/tar recommends over passing a read header back to a Writer. A
// sparse file becomes a regular one: its holes are read as zeros (and were
// charged at the file's apparent size). Of the PAX records only the xattrs
// matter to the unpacker; the standard ones are rebuilt from the fields.
// overlayfs' own xattrs (trusted.overlay.*, user.overlay.*) are dropped: the
// store writes the only ones its layers have (see scrubOverlayXattrs).
func reencode(hdr *tar.Header) *tar.Header {
	out := &tar.Header{
		Typeflag:   hdr.Typeflag,
		Name:       hdr.Name,
		Linkname:   hdr.Linkname,
		Size:       hdr.Size,
		Mode:       hdr.Mode,
		Uid:        hdr.Uid,
		Gid:        hdr.Gid,
		Uname:      hdr.Uname,
		Gname:      hdr.Gname,
		ModTime:    hdr.ModTime,
		AccessTime: hdr.AccessTime,
		ChangeTime: hdr.ChangeTime,
		Devmajor:   hdr.Devmajor,
		Devminor:   hdr.Devminor,
		Format:     tar.FormatPAX,
	}
	if out.Typeflag == tar.TypeGNUSparse {
		out.Typeflag = tar.TypeReg
	}
	for k, v := range hdr.PAXRecords {
		if name, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok && !isOverlayXattr(name) {
			if out.PAXRecords == nil {
				out.PAXRecords = make(map[string]string)
			}
			out.PAXRecords[k] = v
		}
	}
	return out
}

// humanBytes spells n in binary units when it is a whole number of them.
func humanBytes(n int64) string {
	for _, u := range []struct {
		shift uint
		name  string
	}{{40, "TiB"}, {30, "GiB"}, {20, "MiB"}, {10, "KiB"}} {
		if n >= 1<<u.shift && n%(1<<u.shift) == 0 {
			return fmt.Sprintf("%d %s", n>>u.shift, u.name)
		}
	}
	return fmt.Sprintf("%d bytes", n)
}

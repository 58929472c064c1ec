package testenv

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/klauspost/compress/zstd"
	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// This file builds images that carry what real-world images carry and our
// runtime images do not: owners far above 65535 (npm keeps the owners of its
// package tarballs), PAX and GNU long names, hard links, whiteouts, xattrs,
// sparse files, empty and zstd layers, Docker schema 2 manifests and
// multi-arch indexes. The unpacker's differential test pushes them to the
// test registry and compares our unpacked root with an independent one.

// Media types of Docker's schema 2, which registries still serve for most
// images on Docker Hub. (The OCI ones come from image-spec.)
const (
	DockerManifestMediaType     = "application/vnd.docker.distribution.manifest.v2+json"
	DockerManifestListMediaType = "application/vnd.docker.distribution.manifest.list.v2+json"
	DockerConfigMediaType       = "application/vnd.docker.container.image.v1+json"
	DockerLayerMediaType        = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	DockerLayerMediaTypePlain   = "application/vnd.docker.image.rootfs.diff.tar"
)

// Entry is one member of a layer's tar stream.
type Entry struct {
	// Header is written as it is, but for ModTime (the builder's fixed
	// epoch unless set) and Format: archive/tar picks USTAR, then PAX, then
	// GNU, whichever can hold the header, unless Format names one (GNU long
	// names need tar.FormatGNU, PAX ones tar.FormatPAX).
	Header tar.Header
	Data   []byte
	// Sparse, when set, makes the entry a sparse regular file written the
	// way GNU tar writes one (archive/tar cannot write sparse files); Data
	// and Header.Size are then ignored.
	Sparse *Sparse
}

// SparseFormat is how GNU tar records a sparse file.
type SparseFormat int

const (
	// SparsePAX1 is the PAX format 1.0 (`tar --sparse --format=posix`): a
	// PAX header with GNU.sparse.* records and the map before the data.
	SparsePAX1 SparseFormat = iota
	// SparseOldGNU is the 'S' type of GNU tar's default format
	// (`tar --sparse`), the map in the header block and its extensions.
	SparseOldGNU
)

// Sparse is a sparse regular file: Size bytes of which only Chunks hold data.
type Sparse struct {
	Format SparseFormat
	Size   int64
	// Chunks are the data regions, in increasing offsets, not overlapping;
	// everything else reads as zeros.
	Chunks []SparseChunk
}

// SparseChunk is a data region of a sparse file.
type SparseChunk struct {
	Offset int64
	Data   []byte
}

// Content is the file's bytes, holes included.
func (s *Sparse) Content() []byte {
	out := make([]byte, s.Size)
	for _, c := range s.Chunks {
		copy(out[c.Offset:], c.Data)
	}
	return out
}

// TarDir is a directory entry.
func TarDir(name string, mode int64) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode}}
}

// TarFile is a regular file entry.
func TarFile(name string, mode int64, data string) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data))}, Data: []byte(data)}
}

// TarSymlink is a symbolic link to target.
func TarSymlink(name, target string) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777}}
}

// TarHardlink is a hard link to target, a name in this layer or a lower
// one, with nothing else in its header (mode 0, owner 0:0), as some
// hand-written layers have it. LinkedAs writes what Docker and GNU tar do.
func TarHardlink(name, target string) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target}}
}

// LinkedAs is a hard link named name to the file e, written as Docker's
// and GNU tar's writers do: the link's header repeats the file's mode,
// owners, mtime and xattrs (they stat the same inode).
func (e Entry) LinkedAs(name string) Entry {
	hdr := e.Header
	hdr.Typeflag, hdr.Name, hdr.Linkname, hdr.Size = tar.TypeLink, name, e.Header.Name, 0
	return Entry{Header: hdr}
}

// TarWhiteout removes name of the layers below (an AUFS whiteout, ".wh.<base>").
func TarWhiteout(name string) Entry {
	dir, base := filepath.Split(name)
	return Entry{Header: tar.Header{Typeflag: tar.TypeReg, Name: dir + ".wh." + base, Mode: 0o644}}
}

// TarOpaque hides what the layers below hold in dir (".wh..wh..opq").
func TarOpaque(dir string) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeReg, Name: dir + "/.wh..wh..opq", Mode: 0o644}}
}

// TarDevice is a character (tar.TypeChar) or block (tar.TypeBlock) device node.
func TarDevice(name string, typeflag byte, major, minor int64) Entry {
	return Entry{Header: tar.Header{Typeflag: typeflag, Name: name, Mode: 0o666, Devmajor: major, Devminor: minor}}
}

// TarFifo is a named pipe.
func TarFifo(name string) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeFifo, Name: name, Mode: 0o644}}
}

// TarSparse is a sparse regular file.
func TarSparse(name string, mode int64, s Sparse) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode}, Sparse: &s}
}

// Owned sets the entry's numeric owner.
func (e Entry) Owned(uid, gid int) Entry {
	e.Header.Uid, e.Header.Gid = uid, gid
	return e
}

// In forces the entry's tar format.
func (e Entry) In(format tar.Format) Entry {
	e.Header.Format = format
	return e
}

// WithXattr adds an extended attribute (a SCHILY.xattr PAX record, as
// Docker, buildah and GNU tar write them). Only PAX can hold it.
func (e Entry) WithXattr(name string, value []byte) Entry {
	recs := make(map[string]string, len(e.Header.PAXRecords)+1)
	for k, v := range e.Header.PAXRecords {
		recs[k] = v
	}
	recs["SCHILY.xattr."+name] = string(value)
	e.Header.PAXRecords = recs
	return e
}

// FileCapability is a version 2 security.capability value (what `setcap
// cap_net_bind_service=+ep` writes) granting the capabilities numbered caps
// (below 32), permitted and effective.
func FileCapability(caps ...uint) []byte {
	const (
		vfsCapRevision2 = 0x02000000
		vfsCapEffective = 0x000001
	)
	var permitted uint32
	for _, c := range caps {
		permitted |= 1 << c
	}
	le := func(v uint32) []byte { return []byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)} }
	out := le(vfsCapRevision2 | vfsCapEffective)
	out = append(out, le(permitted)...) // permitted, low word
	out = append(out, le(0)...)         // inheritable, low word
	out = append(out, le(0)...)         // permitted, high word
	return append(out, le(0)...)        // inheritable, high word
}

// Compression of a layer blob.
type Compression int

const (
	Gzip Compression = iota
	Zstd
	Uncompressed
)

// Layer is one layer of an image: its entries, in order, and how its blob
// is compressed.
type Layer struct {
	Entries     []Entry
	Compression Compression
}

// ManifestFormat is the schema of an image's manifest.
type ManifestFormat int

const (
	OCIManifest ManifestFormat = iota
	DockerSchema2
)

// ImageSpec describes one image (one platform).
type ImageSpec struct {
	Format ManifestFormat
	// Platform defaults to linux/amd64.
	Platform ocispec.Platform
	Config   ocispec.ImageConfig
	Layers   []Layer
	// EmptyHistory adds that many history entries without a layer
	// (ENV, WORKDIR... in a Dockerfile), which every built image has.
	EmptyHistory int
}

// WriteImage stores the image's layers, config and manifest as blobs of the
// OCI layout at dir (creating it) and returns the manifest's descriptor,
// its platform set. Tag it with WriteIndex.
func WriteImage(dir string, spec ImageSpec) (ocispec.Descriptor, error) {
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("create layout: %w", err)
	}
	platform := spec.Platform
	if platform.OS == "" {
		platform.OS = "linux"
	}
	if platform.Architecture == "" {
		platform.Architecture = "amd64"
	}
	configType, manifestType := ocispec.MediaTypeImageConfig, ocispec.MediaTypeImageManifest
	if spec.Format == DockerSchema2 {
		configType, manifestType = DockerConfigMediaType, DockerManifestMediaType
	}
	var (
		layers  []ocispec.Descriptor
		diffIDs []digest.Digest
		history []ocispec.History
	)
	for i := range spec.EmptyHistory {
		history = append(history, ocispec.History{Created: &epoch, CreatedBy: fmt.Sprintf("testenv: empty %d", i), EmptyLayer: true})
	}
	for i, l := range spec.Layers {
		raw, err := l.tar()
		if err != nil {
			return ocispec.Descriptor{}, fmt.Errorf("layer %d: %w", i, err)
		}
		blob, mediaType, err := compressLayer(raw, l.Compression, spec.Format)
		if err != nil {
			return ocispec.Descriptor{}, fmt.Errorf("layer %d: %w", i, err)
		}
		desc, err := writeBlob(dir, mediaType, blob)
		if err != nil {
			return ocispec.Descriptor{}, fmt.Errorf("layer %d: %w", i, err)
		}
		layers = append(layers, desc)
		diffIDs = append(diffIDs, digest.FromBytes(raw))
		history = append(history, ocispec.History{Created: &epoch, CreatedBy: fmt.Sprintf("testenv: layer %d", i)})
	}
	config := ocispec.Image{
		Created:  &epoch,
		Platform: platform,
		Config:   spec.Config,
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: diffIDs},
		History:  history,
	}
	configJSON, err := json.Marshal(config)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("encode config: %w", err)
	}
	configDesc, err := writeBlob(dir, configType, configJSON)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("config: %w", err)
	}
	manifestJSON, err := json.Marshal(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: manifestType,
		Config:    configDesc,
		Layers:    layers,
	})
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("encode manifest: %w", err)
	}
	desc, err := writeBlob(dir, manifestType, manifestJSON)
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("manifest: %w", err)
	}
	desc.Platform = &platform
	return desc, nil
}

// WriteManifestList stores an image index (OCIManifest) or a Docker
// manifest list (DockerSchema2) of manifests, each with its platform, and
// returns its descriptor.
func WriteManifestList(dir string, format ManifestFormat, manifests []ocispec.Descriptor) (ocispec.Descriptor, error) {
	mediaType := ocispec.MediaTypeImageIndex
	if format == DockerSchema2 {
		mediaType = DockerManifestListMediaType
	}
	data, err := json.Marshal(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: mediaType,
		Manifests: manifests,
	})
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("encode manifest list: %w", err)
	}
	return writeBlob(dir, mediaType, data)
}

// WriteIndex writes the layout's index.json and oci-layout, naming each
// descriptor by its tag (the AnnotationRefName the oci: transport reads).
func WriteIndex(dir string, tagged map[string]ocispec.Descriptor) error {
	index := ocispec.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex}
	for tag, desc := range tagged {
		desc.Annotations = map[string]string{ocispec.AnnotationRefName: tag}
		index.Manifests = append(index.Manifests, desc)
	}
	if err := writeJSON(filepath.Join(dir, ocispec.ImageIndexFile), index); err != nil {
		return err
	}
	return writeJSON(filepath.Join(dir, ocispec.ImageLayoutFile), ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
}

// tar is the layer's uncompressed tar stream. Entries with a Sparse body
// are written by hand between archive/tar's entries (Flush ends the
// previous entry's padding, so both write whole blocks).
func (l Layer) tar() ([]byte, error) {
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	for _, e := range l.Entries {
		hdr := e.Header
		// A PAX global header (git archive's pax_global_header) carries
		// only its records.
		if hdr.ModTime.IsZero() && hdr.Typeflag != tar.TypeXGlobalHeader {
			hdr.ModTime = epoch
		}
		if e.Sparse != nil {
			if err := tw.Flush(); err != nil {
				return nil, fmt.Errorf("tar %s: %w", hdr.Name, err)
			}
			if err := writeSparse(&raw, &hdr, e.Sparse); err != nil {
				return nil, fmt.Errorf("tar %s: %w", hdr.Name, err)
			}
			continue
		}
		if err := tw.WriteHeader(&hdr); err != nil {
			return nil, fmt.Errorf("tar header %s: %w", hdr.Name, err)
		}
		if _, err := tw.Write(e.Data); err != nil {
			return nil, fmt.Errorf("tar data %s: %w", hdr.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("close tar: %w", err)
	}
	return raw.Bytes(), nil
}

// compressLayer compresses raw and names its media type in format's terms.
func compressLayer(raw []byte, c Compression, format ManifestFormat) ([]byte, string, error) {
	docker := format == DockerSchema2
	switch c {
	case Uncompressed:
		if docker {
			return raw, DockerLayerMediaTypePlain, nil
		}
		return raw, ocispec.MediaTypeImageLayer, nil
	case Gzip:
		var out bytes.Buffer
		zw := gzip.NewWriter(&out) // zero header ModTime and Name: deterministic
		if _, err := zw.Write(raw); err != nil {
			return nil, "", fmt.Errorf("gzip: %w", err)
		}
		if err := zw.Close(); err != nil {
			return nil, "", fmt.Errorf("gzip: %w", err)
		}
		if docker {
			return out.Bytes(), DockerLayerMediaType, nil
		}
		return out.Bytes(), ocispec.MediaTypeImageLayerGzip, nil
	case Zstd:
		if docker {
			// Docker's schema 2 has no zstd layer type: zstd images are OCI.
			return nil, "", errors.New("zstd layers need an OCI manifest")
		}
		// One goroutine: the same bytes always give the same blob.
		zw, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
		if err != nil {
			return nil, "", fmt.Errorf("zstd: %w", err)
		}
		defer zw.Close()
		return zw.EncodeAll(raw, nil), ocispec.MediaTypeImageLayerZstd, nil
	}
	return nil, "", fmt.Errorf("unknown compression %d", c)
}

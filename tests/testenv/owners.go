package testenv

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// OwnedEntry is a file or directory of an owners layer with the owner the
// image records for it.
type OwnedEntry struct {
	Path     string // relative, e.g. "usr/local/server/node_modules/a/index.js"
	Dir      bool
	Mode     int64
	UID, GID int
	Data     string // a file's content
	Link     string // when set, the entry is a symbolic link to Link
}

// Owners of the files npm leaves in real images: npm 9+ run as root keeps the
// owners recorded in package tarballs (the rebuilt Open Runtimes v5 Node image
// had files owned by 1516583083), and packages packed on macOS carry 501:20.
const (
	NpmOwner   = 1516583083
	MacOSUID   = 501
	MacOSGID   = 20
	NodeModDir = "usr/local/server/node_modules"
)

// NodeModulesOwners is a node_modules tree the way `npm ci` as root leaves
// it: package directories and files owned by NpmOwner and by MacOSUID:MacOSGID,
// a private (0600) file among them, so that only an owner the runtime's user
// namespace maps (or root's CAP_DAC_OVERRIDE over such an owner) can read it.
func NodeModulesOwners() []OwnedEntry {
	return []OwnedEntry{
		{Path: NodeModDir, Dir: true, Mode: 0o755},
		{Path: NodeModDir + "/npm-pkg", Dir: true, Mode: 0o755, UID: NpmOwner, GID: NpmOwner},
		{Path: NodeModDir + "/npm-pkg/package.json", Mode: 0o644, UID: NpmOwner, GID: NpmOwner, Data: `{"name":"npm-pkg"}` + "\n"},
		{Path: NodeModDir + "/npm-pkg/index.js", Mode: 0o600, UID: NpmOwner, GID: NpmOwner, Data: "module.exports = 'npm';\n"},
		{Path: NodeModDir + "/mac-pkg", Dir: true, Mode: 0o755, UID: MacOSUID, GID: MacOSGID},
		{Path: NodeModDir + "/mac-pkg/package.json", Mode: 0o644, UID: MacOSUID, GID: MacOSGID, Data: `{"name":"mac-pkg"}` + "\n"},
		{Path: NodeModDir + "/mac-pkg/index.js", Mode: 0o600, UID: MacOSUID, GID: MacOSGID, Data: "module.exports = 'mac';\n"},
	}
}

// OwnersImageOptions is the test runtime image (see BuildRuntimeImage) with
// one more layer on top whose entries keep the owners they are given.
type OwnersImageOptions struct {
	ImageOptions
	// Entries of the owners layer; NodeModulesOwners when empty.
	Entries []OwnedEntry
}

// BuildOwnersImage writes the image into an OCI layout, tagged opts.Tag, and
// returns the layout directory. Like BuildRuntimeImage, the same options give
// the same digests.
func BuildOwnersImage(ctx context.Context, opts OwnersImageOptions) (string, error) {
	dir, err := BuildRuntimeImage(ctx, opts.ImageOptions)
	if err != nil {
		return "", err
	}
	entries := opts.Entries
	if len(entries) == 0 {
		entries = NodeModulesOwners()
	}
	blob, diffID, err := ownersLayer(entries)
	if err != nil {
		return "", fmt.Errorf("owners layer: %w", err)
	}
	layer, err := writeBlob(dir, ocispec.MediaTypeImageLayerGzip, blob)
	if err != nil {
		return "", err
	}
	layer.Annotations = map[string]string{ocispec.AnnotationTitle: "owners"}

	// BuildRuntimeImage set opts' defaults on its own copy; the layout has
	// exactly one image, whatever its tag.
	var index ocispec.Index
	if err := ReadJSON(filepath.Join(dir, ocispec.ImageIndexFile), &index); err != nil {
		return "", err
	}
	if len(index.Manifests) != 1 {
		return "", errors.New("owners image: expected one image in the runtime image's layout")
	}
	desc := index.Manifests[0]
	var manifest ocispec.Manifest
	if err := ReadJSON(BlobPath(dir, desc.Digest), &manifest); err != nil {
		return "", err
	}
	var config ocispec.Image
	if err := ReadJSON(BlobPath(dir, manifest.Config.Digest), &config); err != nil {
		return "", err
	}
	config.RootFS.DiffIDs = append(config.RootFS.DiffIDs, diffID)
	config.History = append(config.History, ocispec.History{Created: &epoch, CreatedBy: "testenv: owners layer"})
	return dir, writeManifest(dir, desc.Annotations[ocispec.AnnotationRefName], config, append(manifest.Layers, layer))
}

// ownersLayer is the gzip'd tar of entries, each with its own owner, and its
// diff ID. Parent directories are not implied: list them.
func ownersLayer(entries []OwnedEntry) ([]byte, digest.Digest, error) {
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	for _, e := range entries {
		hdr := &tar.Header{
			Name: strings.TrimPrefix(e.Path, "/"), Mode: e.Mode, Uid: e.UID, Gid: e.GID, ModTime: epoch,
			Typeflag: tar.TypeReg, Size: int64(len(e.Data)), Format: tar.FormatPAX,
		}
		switch {
		case e.Dir:
			hdr.Typeflag, hdr.Size, hdr.Name = tar.TypeDir, 0, hdr.Name+"/"
		case e.Link != "":
			hdr.Typeflag, hdr.Size, hdr.Linkname = tar.TypeSymlink, 0, e.Link
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, "", fmt.Errorf("tar header %s: %w", hdr.Name, err)
		}
		if hdr.Typeflag == tar.TypeReg {
			if _, err := tw.Write([]byte(e.Data)); err != nil {
				return nil, "", fmt.Errorf("tar data %s: %w", hdr.Name, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, "", err
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	if _, err := zw.Write(raw.Bytes()); err != nil {
		return nil, "", err
	}
	if err := zw.Close(); err != nil {
		return nil, "", err
	}
	return gz.Bytes(), digest.FromBytes(raw.Bytes()), nil
}

package testenv

import (
	"archive/tar"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"

	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// LayeredImageOptions describes a big image for pull benchmarks: the busybox
// base layer of the runtime images plus Layers layers of LayerSize bytes of
// incompressible (random but seed-determined) data each.
type LayeredImageOptions struct {
	Dir       string // OCI layout to create. Required.
	Tag       string // default "big"
	Layers    int    // default 5
	LayerSize int    // bytes of data per layer; default 20 MiB
	FilesPer  int    // files each data layer's bytes are split into; default 4
	Seed      uint64
	Busybox   string // default /bin/busybox
}

// BuildLayeredImage writes the image into an OCI layout and returns the
// layout directory. The same options always give the same digests.
func BuildLayeredImage(ctx context.Context, opts LayeredImageOptions) (string, error) {
	if opts.Dir == "" {
		return "", errors.New("layered image: Dir is required")
	}
	if opts.Tag == "" {
		opts.Tag = "big"
	}
	if opts.Layers == 0 {
		opts.Layers = 5
	}
	if opts.LayerSize == 0 {
		opts.LayerSize = 20 << 20
	}
	if opts.FilesPer == 0 {
		opts.FilesPer = 4
	}
	if opts.Busybox == "" {
		opts.Busybox = "/bin/busybox"
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return "", err
	}
	busybox, err := os.ReadFile(opts.Busybox)
	if err != nil {
		return "", fmt.Errorf("read busybox: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755); err != nil {
		return "", fmt.Errorf("create layout: %w", err)
	}
	layerEntries := [][]tarEntry{baseLayer(busybox)}
	rng := rand.New(rand.NewPCG(opts.Seed, opts.Seed^0x9e3779b97f4a7c15))
	for i := range opts.Layers {
		entries := []tarEntry{dirEntry("data", 0o755), dirEntry(fmt.Sprintf("data/%d", i), 0o755)}
		per := opts.LayerSize / opts.FilesPer
		for f := range opts.FilesPer {
			data := make([]byte, per)
			for j := 0; j+8 <= len(data); j += 8 {
				v := rng.Uint64()
				for k := range 8 {
					data[j+k] = byte(v >> (8 * k))
				}
			}
			entries = append(entries, fileEntry(fmt.Sprintf("data/%d/file-%d", i, f), 0o644, data))
		}
		layerEntries = append(layerEntries, entries)
	}
	var (
		layers  []ocispec.Descriptor
		diffIDs []digest.Digest
	)
	for _, entries := range layerEntries {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		blob, diffID, err := buildLayer(entries)
		if err != nil {
			return "", err
		}
		desc, err := writeBlob(dir, ocispec.MediaTypeImageLayerGzip, blob)
		if err != nil {
			return "", err
		}
		layers = append(layers, desc)
		diffIDs = append(diffIDs, diffID)
	}
	config := ocispec.Image{
		Created:  &epoch,
		Platform: ocispec.Platform{Architecture: "amd64", OS: "linux"},
		Config:   ocispec.ImageConfig{Env: []string{"PATH=/usr/bin:/bin"}, Cmd: []string{"sh"}},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: diffIDs},
	}
	return dir, writeManifest(dir, opts.Tag, config, layers)
}

func writeManifest(dir, tag string, config ocispec.Image, layers []ocispec.Descriptor) error {
	configJSON, err := json.Marshal(config)
	if err != nil {
		return err
	}
	configDesc, err := writeBlob(dir, ocispec.MediaTypeImageConfig, configJSON)
	if err != nil {
		return err
	}
	manifestJSON, err := json.Marshal(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    configDesc,
		Layers:    layers,
	})
	if err != nil {
		return err
	}
	manifestDesc, err := writeBlob(dir, ocispec.MediaTypeImageManifest, manifestJSON)
	if err != nil {
		return err
	}
	manifestDesc.Platform = &config.Platform
	manifestDesc.Annotations = map[string]string{ocispec.AnnotationRefName: tag}
	index := ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{manifestDesc},
	}
	if err := writeJSON(filepath.Join(dir, ocispec.ImageIndexFile), index); err != nil {
		return err
	}
	return writeJSON(filepath.Join(dir, ocispec.ImageLayoutFile), ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
}

// LayoutLayers returns the layer digests of the image tagged tag in the OCI
// layout at dir, bottom layer first.
func LayoutLayers(dir, tag string) ([]digest.Digest, error) {
	var index ocispec.Index
	if err := ReadJSON(filepath.Join(dir, ocispec.ImageIndexFile), &index); err != nil {
		return nil, err
	}
	for _, m := range index.Manifests {
		if m.Annotations[ocispec.AnnotationRefName] != tag {
			continue
		}
		var manifest ocispec.Manifest
		if err := ReadJSON(BlobPath(dir, m.Digest), &manifest); err != nil {
			return nil, err
		}
		var out []digest.Digest
		for _, l := range manifest.Layers {
			out = append(out, l.Digest)
		}
		return out, nil
	}
	return nil, fmt.Errorf("%s: no image tagged %q", dir, tag)
}

// BlobPath is where the blob d lives in the OCI layout dir.
func BlobPath(dir string, d digest.Digest) string {
	return filepath.Join(dir, "blobs", d.Algorithm().String(), d.Encoded())
}

// ReadJSON decodes the JSON file at path into v.
func ReadJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// TarLayout writes the OCI layout at dir as the tar archive dest, which the
// oci-archive: transport reads ("oci-archive:<dest>:<tag>").
func TarLayout(dir, dest string) (err error) {
	f, err := os.Create(dest)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil || rel == "." {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return err
		}
		hdr.Name = filepath.ToSlash(rel)
		if d.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		src, err := os.Open(path)
		if err != nil {
			return err
		}
		defer src.Close()
		_, err = io.Copy(tw, src)
		return err
	})
	if err != nil {
		return fmt.Errorf("tar %s: %w", dir, err)
	}
	return tw.Close()
}

// WriteAuthFile writes a containers-auth.json(5) file holding one registry's
// credentials.
func WriteAuthFile(path, registry, username, password string) error {
	auth := base64.StdEncoding.EncodeToString([]byte(username + ":" + password))
	data, err := json.Marshal(map[string]any{"auths": map[string]any{registry: map[string]string{"auth": auth}}})
	if err != nil {
		return err
	}
	// Write then rename: a reader must never see half of it.
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

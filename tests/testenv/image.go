package testenv

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Protocol versions the test runtime images can speak.
const (
	ProtocolV5 = "v5"
	ProtocolV4 = "v4"
	ProtocolV3 = "v3"
	ProtocolV2 = "v2"
)

// ImageOptions describes one test runtime image.
type ImageOptions struct {
	// Dir is the OCI image layout directory to create. Required.
	Dir string
	// Protocol is v5 (default), v4, v3 or v2.
	Protocol string
	// ServerBinary is the static test runtime (see BuildRuntimeServer). Required.
	ServerBinary string
	// WithBash adds the /bin/bash shim that the executor's "bash -c" commands
	// need. Every image the executor tests use sets it; leaving it false
	// builds the "nobash" variant (only /usr/bin/nohup). A Go bool cannot
	// default to true, so callers state it explicitly.
	WithBash bool
	// Tag names the image inside the layout (default "<protocol>-1").
	Tag string
	// Busybox is the static busybox copied into the image (default /bin/busybox).
	Busybox string
}

func (o *ImageOptions) setDefaults() error {
	if o.Dir == "" {
		return errors.New("image options: Dir is required")
	}
	if o.ServerBinary == "" {
		return errors.New("image options: ServerBinary is required")
	}
	if o.Protocol == "" {
		o.Protocol = ProtocolV5
	}
	switch o.Protocol {
	case ProtocolV5, ProtocolV4, ProtocolV3, ProtocolV2:
	default:
		return fmt.Errorf("image options: unsupported protocol %q", o.Protocol)
	}
	if o.Tag == "" {
		o.Tag = o.Protocol + "-1"
	}
	if o.Busybox == "" {
		o.Busybox = "/bin/busybox"
	}
	return nil
}

// epoch is the mtime of every file in the image and its creation time, so
// the same inputs always give the same digests.
var epoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// BusyboxApplets are the commands linked to busybox in the base layer.
var BusyboxApplets = []string{
	"sh", "ls", "cat", "cp", "mv", "rm", "mkdir", "tar", "gzip", "gunzip", "sleep", "echo", "env", "test", "[",
	"printf", "head", "tail", "wc", "id", "ps", "kill", "true", "false", "chmod", "ln", "grep", "sed", "cut", "tr",
	"date", "uname", "hostname", "ip", "mount", "unshare", "nc", "wget", "find", "xargs", "dd", "sync", "touch",
	"stat", "whoami", "yes", "seq", "basename", "dirname", "readlink", "sort", "uniq", "nproc", "free", "top",
	// Not asked for by name, but handy in build/start commands.
	"awk", "tee", "pwd", "unzip", "timeout", "rmdir", "which", "zcat", "sha256sum",
}

// Paths inside the image that tests probe.
const (
	ServerBinaryPath   = "/usr/local/server/runtime-server"
	V2ServerBinaryPath = "/usr/local/src/runtime-server"
	// WhiteoutRemovedPath exists in the base layer and is deleted by an AUFS
	// whiteout in the last layer.
	WhiteoutRemovedPath = "/opt/removed.txt"
	// WhiteoutKeptPath is a sibling that must survive the whiteout.
	WhiteoutKeptPath = "/opt/kept.txt"
	// OpaqueDir is made opaque by the last layer: only OpaqueNewFile remains.
	OpaqueDir     = "/opt/opaque"
	OpaqueOldFile = "/opt/opaque/old.txt"
	OpaqueNewFile = "/opt/opaque/new.txt"
	// ImageMarkerPath holds the image's protocol version.
	ImageMarkerPath = "/etc/test-image"
)

// BuildRuntimeImage writes a linux/amd64 OCI image layout for the test
// runtime into opts.Dir and returns that directory. The image has three
// gzip layers: "base" (busybox root), "runtime" (server and helpers) and
// "whiteouts" (a whiteout, an opaque directory and /etc/test-image).
func BuildRuntimeImage(ctx context.Context, opts ImageOptions) (string, error) {
	if err := opts.setDefaults(); err != nil {
		return "", err
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", opts.Dir, err)
	}
	busybox, err := os.ReadFile(opts.Busybox)
	if err != nil {
		return "", fmt.Errorf("read busybox: %w", err)
	}
	server, err := os.ReadFile(opts.ServerBinary)
	if err != nil {
		return "", fmt.Errorf("read runtime server: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755); err != nil {
		return "", fmt.Errorf("create layout: %w", err)
	}

	specsByName := []struct {
		name    string
		entries []tarEntry
	}{
		{"base", baseLayer(busybox)},
		{"runtime", runtimeLayer(opts, server)},
		{"whiteouts", whiteoutLayer(opts.Protocol)},
	}
	var (
		layers  []ocispec.Descriptor
		diffIDs []digest.Digest
		history []ocispec.History
	)
	for _, l := range specsByName {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		blob, diffID, err := buildLayer(l.entries)
		if err != nil {
			return "", fmt.Errorf("layer %s: %w", l.name, err)
		}
		desc, err := writeBlob(dir, ocispec.MediaTypeImageLayerGzip, blob)
		if err != nil {
			return "", fmt.Errorf("layer %s: %w", l.name, err)
		}
		desc.Annotations = map[string]string{ocispec.AnnotationTitle: l.name}
		layers = append(layers, desc)
		diffIDs = append(diffIDs, diffID)
		history = append(history, ocispec.History{Created: &epoch, CreatedBy: "testenv: " + l.name + " layer"})
	}

	config := imageConfig(opts, diffIDs, history)
	configJSON, err := json.Marshal(config)
	if err != nil {
		return "", fmt.Errorf("encode config: %w", err)
	}
	configDesc, err := writeBlob(dir, ocispec.MediaTypeImageConfig, configJSON)
	if err != nil {
		return "", fmt.Errorf("config: %w", err)
	}

	manifest := ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    configDesc,
		Layers:    layers,
	}
	manifestJSON, err := json.Marshal(manifest)
	if err != nil {
		return "", fmt.Errorf("encode manifest: %w", err)
	}
	manifestDesc, err := writeBlob(dir, ocispec.MediaTypeImageManifest, manifestJSON)
	if err != nil {
		return "", fmt.Errorf("manifest: %w", err)
	}
	manifestDesc.Platform = &config.Platform
	manifestDesc.Annotations = map[string]string{ocispec.AnnotationRefName: opts.Tag}

	index := ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{manifestDesc},
	}
	if err := writeJSON(filepath.Join(dir, ocispec.ImageIndexFile), index); err != nil {
		return "", err
	}
	if err := writeJSON(filepath.Join(dir, ocispec.ImageLayoutFile), ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion}); err != nil {
		return "", err
	}
	return dir, nil
}

func imageConfig(opts ImageOptions, diffIDs []digest.Digest, history []ocispec.History) ocispec.Image {
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	workDir := "/usr/local/server"
	cmd := []string{"sh", "-c", `helpers/start.sh "sh helpers/server.sh"`}
	switch opts.Protocol {
	case ProtocolV2:
		// What the Open Runtimes v2 images set; the executor overrides it.
		env = append(env, "INTERNAL_RUNTIME_ENTRYPOINT=index.js")
		workDir = "/usr/local/src"
		cmd = []string{"sh", "/usr/local/src/start.sh"}
	default:
		env = append(env, "OPEN_RUNTIMES_ENTRYPOINT=index.js")
	}
	return ocispec.Image{
		Created:  &epoch,
		Platform: ocispec.Platform{Architecture: "amd64", OS: "linux"},
		Config: ocispec.ImageConfig{
			Env:          env,
			Cmd:          cmd,
			WorkingDir:   workDir,
			ExposedPorts: map[string]struct{}{"3000/tcp": {}},
			Labels: map[string]string{
				"org.opencontainers.image.title": "open-runtimes test runtime",
				"io.openruntimes.test.protocol":  opts.Protocol,
			},
		},
		RootFS:  ocispec.RootFS{Type: "layers", DiffIDs: diffIDs},
		History: history,
	}
}

func baseLayer(busybox []byte) []tarEntry {
	entries := []tarEntry{
		dirEntry("bin", 0o755),
		fileEntry("bin/busybox", 0o755, busybox),
	}
	applets := append([]string(nil), BusyboxApplets...)
	sort.Strings(applets)
	for _, a := range applets {
		entries = append(entries, symlinkEntry("bin/"+a, "busybox"))
	}
	for _, d := range []string{"dev", "etc", "home", "mnt", "opt", "opt/opaque", "proc", "sbin", "sys",
		"usr", "usr/bin", "usr/sbin", "usr/local", "usr/local/bin", "usr/local/sbin", "var"} {
		entries = append(entries, dirEntry(d, 0o755))
	}
	entries = append(entries,
		dirEntry("root", 0o700),
		dirEntry("tmp", 0o1777),
		dirEntry("var/tmp", 0o1777),
		fileEntry("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")),
		fileEntry("etc/group", 0o644, []byte("root:x:0:\nnobody:x:65534:\n")),
		fileEntry("opt/removed.txt", 0o644, []byte("removed by a whiteout\n")),
		fileEntry("opt/kept.txt", 0o644, []byte("kept\n")),
		fileEntry("opt/opaque/old.txt", 0o644, []byte("hidden by an opaque whiteout\n")),
	)
	return entries
}

func runtimeLayer(opts ImageOptions, server []byte) []tarEntry {
	var entries []tarEntry
	if opts.Protocol == ProtocolV2 {
		entries = []tarEntry{
			dirEntry("usr", 0o755),
			dirEntry("usr/local", 0o755),
			dirEntry("usr/local/src", 0o755),
			fileEntry("usr/local/src/runtime-server", 0o755, server),
			fileEntry("usr/local/src/start.sh", 0o755, []byte(v2StartScript)),
			fileEntry("usr/local/src/build.sh", 0o755, []byte(v2BuildScript)),
		}
	} else {
		entries = []tarEntry{
			dirEntry("usr", 0o755),
			dirEntry("usr/local", 0o755),
			dirEntry("usr/local/server", 0o755),
			dirEntry("usr/local/server/src", 0o755),
			dirEntry("usr/local/server/helpers", 0o755),
			fileEntry("usr/local/server/runtime-server", 0o755, server),
			fileEntry("usr/local/server/helpers/start.sh", 0o755, []byte(startScript)),
			fileEntry("usr/local/server/helpers/build.sh", 0o755, []byte(buildScript)),
			fileEntry("usr/local/server/helpers/server.sh", 0o755, []byte(serverScript(opts.Protocol))),
		}
	}
	entries = append(entries,
		dirEntry("usr/bin", 0o755),
		fileEntry("usr/bin/nohup", 0o755, []byte(nohupShim)),
	)
	if opts.WithBash {
		entries = append(entries, dirEntry("bin", 0o755), fileEntry("bin/bash", 0o755, []byte(bashShim)))
	}
	return entries
}

func whiteoutLayer(protocol string) []tarEntry {
	return []tarEntry{
		dirEntry("etc", 0o755),
		fileEntry("etc/test-image", 0o644, []byte(protocol+"\n")),
		dirEntry("opt", 0o755),
		fileEntry("opt/.wh.removed.txt", 0o644, nil),
		dirEntry("opt/opaque", 0o755),
		fileEntry("opt/opaque/.wh..wh..opq", 0o644, nil),
		fileEntry("opt/opaque/new.txt", 0o644, []byte("added over an opaque whiteout\n")),
	}
}

// tarEntry is one member of a layer.
type tarEntry struct {
	hdr  tar.Header
	data []byte
}

func dirEntry(name string, mode int64) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode}}
}

func fileEntry(name string, mode int64, data []byte) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data))}, data: data}
}

func symlinkEntry(name, target string) tarEntry {
	return tarEntry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777}}
}

// buildLayer returns the gzip'd tar of entries and the digest of the
// uncompressed tar (the layer's diff ID). All entries are root-owned with a
// fixed mtime so layers are reproducible.
func buildLayer(entries []tarEntry) ([]byte, digest.Digest, error) {
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	for _, e := range entries {
		hdr := e.hdr
		hdr.ModTime = epoch
		hdr.Uid, hdr.Gid = 0, 0
		if err := tw.WriteHeader(&hdr); err != nil {
			return nil, "", fmt.Errorf("tar header %s: %w", hdr.Name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, "", fmt.Errorf("tar data %s: %w", hdr.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, "", fmt.Errorf("close tar: %w", err)
	}
	diffID := digest.FromBytes(raw.Bytes())

	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz) // zero header ModTime and Name: deterministic
	if _, err := zw.Write(raw.Bytes()); err != nil {
		return nil, "", fmt.Errorf("gzip: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, "", fmt.Errorf("gzip: %w", err)
	}
	return gz.Bytes(), diffID, nil
}

// writeBlob stores data content-addressed under blobs/sha256.
func writeBlob(layoutDir, mediaType string, data []byte) (ocispec.Descriptor, error) {
	sum := sha256.Sum256(data)
	hexSum := hex.EncodeToString(sum[:])
	path := filepath.Join(layoutDir, "blobs", "sha256", hexSum)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("write blob: %w", err)
	}
	return ocispec.Descriptor{
		MediaType: mediaType,
		Digest:    digest.NewDigestFromEncoded(digest.SHA256, hexSum),
		Size:      int64(len(data)),
	}, nil
}

func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s: %w", filepath.Base(path), err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	return nil
}

package images

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root: unpacking keeps ownership, creates devices and mounts overlays (CI runs as root)")
	}
}

// entry is one tar header of a test layer.
type entry struct {
	name   string
	typ    byte
	body   string
	mode   int64
	link   string
	uid    int
	gid    int // when 0, the uid's value
	major  int64
	minor  int64
	xattrs map[string]string
}

func dir(name string) entry { return entry{name: name, typ: tar.TypeDir, mode: 0o755} }
func file(name, body string) entry {
	return entry{name: name, typ: tar.TypeReg, body: body, mode: 0o644}
}
func symlink(name, target string) entry {
	return entry{name: name, typ: tar.TypeSymlink, link: target, mode: 0o777}
}
func hardlink(name, target string) entry {
	return entry{name: name, typ: tar.TypeLink, link: target, mode: 0o644}
}

func buildTar(t testing.TB, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Unix(1700000000, 0)
	for _, e := range entries {
		gid := e.gid
		if gid == 0 {
			gid = e.uid
		}
		hdr := &tar.Header{
			Name: e.name, Typeflag: e.typ, Mode: e.mode, Linkname: e.link,
			Uid: e.uid, Gid: gid, ModTime: mtime, Devmajor: e.major, Devminor: e.minor,
			Format: tar.FormatPAX,
		}
		if e.typ == tar.TypeReg {
			hdr.Size = int64(len(e.body))
		}
		for k, v := range e.xattrs {
			if hdr.PAXRecords == nil {
				hdr.PAXRecords = map[string]string{}
			}
			hdr.PAXRecords["SCHILY.xattr."+k] = v
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatalf("tar header %s: %v", e.name, err)
		}
		if hdr.Size > 0 {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func compressBytes(t testing.TB, data []byte, algo string) ([]byte, string) {
	t.Helper()
	var buf bytes.Buffer
	switch algo {
	case "gzip":
		w := gzip.NewWriter(&buf)
		w.Write(data)
		w.Close()
		return buf.Bytes(), v1.MediaTypeImageLayerGzip
	case "zstd":
		w, err := zstd.NewWriter(&buf)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
		w.Close()
		return buf.Bytes(), v1.MediaTypeImageLayerZstd
	default:
		return data, v1.MediaTypeImageLayer
	}
}

type testLayer struct {
	entries     []entry
	compression string // gzip, zstd or "" (none)
}

type testImage struct {
	layers   []testLayer
	config   v1.ImageConfig
	platform v1.Platform
	// mangle lets a test break the image: it gets each layer's compressed
	// blob and diffID and returns what the layout should hold instead.
	mangle func(i int, blob []byte, diffID digest.Digest) ([]byte, digest.Digest)
}

// testLayout writes an OCI image layout; every blob is also kept in memory so a
// test registry can serve the same content.
type testLayout struct {
	t     testing.TB
	dir   string
	index v1.Index
	blobs map[digest.Digest]blobData
}

type blobData struct {
	data      []byte
	mediaType string
}

func newLayout(t testing.TB, dir string) *testLayout {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "blobs", "sha256"), 0o755); err != nil {
		t.Fatal(err)
	}
	l := &testLayout{t: t, dir: dir, blobs: map[digest.Digest]blobData{}}
	l.index.SchemaVersion = 2
	l.index.MediaType = v1.MediaTypeImageIndex
	l.writeJSON("oci-layout", v1.ImageLayout{Version: v1.ImageLayoutVersion})
	return l
}

func (l *testLayout) writeJSON(name string, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		l.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(l.dir, name), data, 0o644); err != nil {
		l.t.Fatal(err)
	}
}

func (l *testLayout) blob(data []byte, mediaType string) v1.Descriptor {
	d := digest.FromBytes(data)
	if err := os.WriteFile(filepath.Join(l.dir, "blobs", "sha256", d.Encoded()), data, 0o644); err != nil {
		l.t.Fatal(err)
	}
	l.blobs[d] = blobData{data: data, mediaType: mediaType}
	return v1.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(data))}
}

func (l *testLayout) blobJSON(v any, mediaType string) v1.Descriptor {
	data, err := json.Marshal(v)
	if err != nil {
		l.t.Fatal(err)
	}
	return l.blob(data, mediaType)
}

// image writes the layers, config and manifest of img and returns the manifest's descriptor.
func (l *testLayout) image(img testImage) v1.Descriptor {
	l.t.Helper()
	cfg := v1.Image{
		Platform: v1.Platform{OS: "linux", Architecture: "amd64"},
		Config:   img.config,
		RootFS:   v1.RootFS{Type: "layers"},
	}
	if img.platform.Architecture != "" {
		cfg.Platform = img.platform
	}
	m := v1.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: v1.MediaTypeImageManifest}
	for i, layer := range img.layers {
		raw := buildTar(l.t, layer.entries...)
		diffID := digest.FromBytes(raw)
		blob, mediaType := compressBytes(l.t, raw, layer.compression)
		if img.mangle != nil {
			blob, diffID = img.mangle(i, blob, diffID)
		}
		m.Layers = append(m.Layers, l.blob(blob, mediaType))
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, diffID)
	}
	m.Config = l.blobJSON(cfg, v1.MediaTypeImageConfig)
	desc := l.blobJSON(m, v1.MediaTypeImageManifest)
	p := cfg.Platform
	desc.Platform = &p
	return desc
}

// list writes an image index (manifest list) of the given manifests.
func (l *testLayout) list(manifests ...v1.Descriptor) v1.Descriptor {
	idx := v1.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: v1.MediaTypeImageIndex, Manifests: manifests}
	return l.blobJSON(idx, v1.MediaTypeImageIndex)
}

// tag names desc in index.json; the reference is then "oci:<dir>:<tag>".
func (l *testLayout) tag(desc v1.Descriptor, tag string) string {
	desc.Annotations = map[string]string{v1.AnnotationRefName: tag}
	desc.Platform = nil
	l.index.Manifests = append(l.index.Manifests, desc)
	l.writeJSON("index.json", l.index)
	return "oci:" + l.dir + ":" + tag
}

// baseImage is the image most tests use: three layers (gzip, zstd, none)
// with a file overwritten, a whiteout, an opaque directory, a symlink and a
// hard link.
func baseImage() testImage {
	return testImage{
		config: v1.ImageConfig{
			Env:        []string{"PATH=/usr/bin:/bin", "A=1"},
			Entrypoint: []string{"/bin/tool"},
			Cmd:        []string{"serve"},
			WorkingDir: "/usr/local/server",
			User:       "1000:1000",
		},
		layers: []testLayer{
			{compression: "gzip", entries: []entry{
				dir("etc/"), file("etc/hello", "base"), file("etc/gone", "deleted above"),
				dir("keep/"), file("keep/a", "a"),
				dir("opq/"), file("opq/lower1", "hidden"), dir("opq/sub/"), file("opq/sub/lower2", "hidden"),
				dir("bin/"), {name: "bin/tool", typ: tar.TypeReg, body: "#!/bin/sh\n", mode: 0o755},
				symlink("bin/tool-link", "tool"), {name: "bin/tool-hard", typ: tar.TypeLink, link: "bin/tool", mode: 0o755},
				dir("usr/"), dir("usr/local/"), {name: "usr/local/server", typ: tar.TypeDir, mode: 0o755, uid: 1000},
			}},
			{compression: "zstd", entries: []entry{
				dir("etc/"), {name: "etc/.wh.gone", typ: tar.TypeReg}, file("etc/hello", "layer2"),
				dir("opq/"), {name: "opq/.wh..wh..opq", typ: tar.TypeReg}, file("opq/upper1", "visible"),
				dir("newdir/"), file("newdir/file", "new"),
			}},
			{entries: []entry{dir("keep/"), file("keep/b", "b")}},
		},
	}
}

// countingHandler counts log records by message, so tests can see how often
// the store did something without reaching into it.
type countingHandler struct {
	mu     sync.Mutex
	counts map[string]int
}

func newCountingLogger() (*slog.Logger, *countingHandler) {
	h := &countingHandler{counts: map[string]int{}}
	return slog.New(h), h
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.counts[r.Message]++
	h.mu.Unlock()
	return nil
}
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countingHandler) WithGroup(string) slog.Handler      { return h }
func (h *countingHandler) count(msg string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.counts[msg]
}

// newTestStore makes a store for a test. Its archive directory (for the
// oci: layouts most tests pull) is the test's own temp tree, where t.TempDir
// makes the layouts, unless cfg names one; newRegistryOnlyStore makes one
// without.
func newTestStore(t testing.TB, cfg Config) *Store {
	t.Helper()
	if cfg.ArchiveDir == "" {
		cfg.ArchiveDir = filepath.Dir(t.TempDir())
	}
	return openTestStore(t, cfg)
}

// newRegistryOnlyStore is newTestStore without an archive directory, as
// the daemon runs by default.
func newRegistryOnlyStore(t testing.TB, cfg Config) *Store {
	t.Helper()
	cfg.ArchiveDir = ""
	return openTestStore(t, cfg)
}

func openTestStore(t testing.TB, cfg Config) *Store {
	t.Helper()
	if cfg.Root == "" {
		cfg.Root = filepath.Join(t.TempDir(), "images")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.PolicyPath == "" {
		// Tests must not depend on the host's policy.json.
		p := filepath.Join(t.TempDir(), "policy.json")
		if err := os.WriteFile(p, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o644); err != nil {
			t.Fatal(err)
		}
		cfg.PolicyPath = p
	}
	if cfg.RegistriesConf == "" {
		// Nor on its registries.conf.
		p := filepath.Join(t.TempDir(), "registries.conf")
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		cfg.RegistriesConf = p
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return s
}

// mountPoints lists the mount points in /proc/self/mountinfo under prefix.
func mountPoints(t testing.TB, prefix string) []string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], prefix) {
			out = append(out, fields[4])
		}
	}
	return out
}

// mountRoot calls MountRoot and makes sure the root goes away with the test,
// even when the test fails half-way.
func mountRoot(t testing.TB, s *Store, img *Image, dir string) string {
	t.Helper()
	t.Cleanup(func() {
		if err := s.UnmountRoot(dir); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	rootfs, err := s.MountRoot(context.Background(), img, dir)
	if err != nil {
		t.Fatal(err)
	}
	return rootfs
}

func readFile(t testing.TB, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func forceOverlay(s *Store, ov overlaySupport) { s.overlay = ov }

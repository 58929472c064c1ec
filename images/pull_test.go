package images

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestPullOCILayout(t *testing.T) {
	requireRoot(t)
	s := newTestStore(t, Config{})
	l := newLayout(t, t.TempDir())
	want := baseImage()
	desc := l.image(want)
	ref := l.tag(desc, "v1")

	img, err := s.Pull(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	if img.Ref != ref {
		t.Errorf("Ref = %q", img.Ref)
	}
	if img.Digest != desc.Digest.String() {
		t.Errorf("Digest = %s, want %s", img.Digest, desc.Digest)
	}
	if len(img.Layers) != 3 {
		t.Fatalf("Layers = %v", img.Layers)
	}
	for _, p := range img.Layers {
		if filepath.Dir(p) != s.layersDir() || !filepath.IsAbs(p) {
			t.Errorf("layer %s not in %s", p, s.layersDir())
		}
	}
	c := want.config
	wantCfg := ImageConfig{Env: c.Env, Entrypoint: c.Entrypoint, Cmd: c.Cmd, WorkingDir: c.WorkingDir, User: c.User}
	if !slices.Equal(img.Config.Env, wantCfg.Env) || !slices.Equal(img.Config.Entrypoint, wantCfg.Entrypoint) ||
		!slices.Equal(img.Config.Cmd, wantCfg.Cmd) || img.Config.WorkingDir != wantCfg.WorkingDir || img.Config.User != wantCfg.User {
		t.Errorf("Config = %+v, want %+v", img.Config, wantCfg)
	}
	// Root/images/<sha256 of the canonical reference>.json
	sum := sha256.Sum256([]byte("oci:" + l.dir + ":v1"))
	if _, err := os.Stat(filepath.Join(s.imagesDir(), hex.EncodeToString(sum[:])+".json")); err != nil {
		t.Errorf("image record: %v", err)
	}
	// Whiteouts are stored the overlay way.
	if fi, err := os.Lstat(filepath.Join(img.Layers[1], "etc/gone")); err != nil || !isWhiteout(fi) {
		t.Errorf("layer 2 etc/gone is not an overlay whiteout: %v", err)
	}
	if !isOpaqueDir(filepath.Join(img.Layers[1], "opq"), s.xattrs) {
		t.Error("layer 2 opq is not opaque")
	}
	if entries, _ := os.ReadDir(s.tmpDir()); len(entries) != 0 {
		t.Errorf("tmp not empty after a pull: %d entries", len(entries))
	}
}

// A pulled image is served from the store: the source is not read again.
func TestPullCached(t *testing.T) {
	requireRoot(t)
	logger, log := newCountingLogger()
	s := newTestStore(t, Config{Logger: logger})
	l := newLayout(t, t.TempDir())
	ref := l.tag(l.image(baseImage()), "v1")
	first, err := s.Pull(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(l.dir); err != nil {
		t.Fatal(err)
	}
	second, err := s.Pull(context.Background(), ref)
	if err != nil {
		t.Fatalf("cached pull needed the source: %v", err)
	}
	if second.Digest != first.Digest || !slices.Equal(second.Layers, first.Layers) {
		t.Errorf("cached image differs: %+v vs %+v", second, first)
	}
	// A store reopened (daemon restart) still has it.
	s2 := newTestStore(t, Config{Root: s.root})
	if _, err := s2.Pull(context.Background(), ref); err != nil {
		t.Fatalf("reopened store: %v", err)
	}
	if got := log.count("image pulled"); got != 1 {
		t.Errorf("pulled %d times", got)
	}
}

// A record whose layer went missing is pulled again rather than mounted broken.
func TestPullRepairsMissingLayer(t *testing.T) {
	requireRoot(t)
	s := newTestStore(t, Config{})
	l := newLayout(t, t.TempDir())
	ref := l.tag(l.image(baseImage()), "v1")
	img, err := s.Pull(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(img.Layers[1]); err != nil {
		t.Fatal(err)
	}
	img, err = s.Pull(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(img.Layers[1]); err != nil {
		t.Errorf("layer not restored: %v", err)
	}
}

func TestPullConcurrentSameRef(t *testing.T) {
	requireRoot(t)
	logger, log := newCountingLogger()
	s := newTestStore(t, Config{Logger: logger})
	l := newLayout(t, t.TempDir())
	ref := l.tag(l.image(baseImage()), "v1")

	const n = 16
	var wg sync.WaitGroup
	imgs := make([]*Image, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { imgs[i], errs[i] = s.Pull(context.Background(), ref) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if imgs[i].Digest != imgs[0].Digest || !slices.Equal(imgs[i].Layers, imgs[0].Layers) {
			t.Errorf("pull %d got a different image", i)
		}
	}
	if got := log.count("layer unpacked"); got != 3 {
		t.Errorf("unpacked %d layers, want 3 (once each)", got)
	}
	if got := log.count("image pulled"); got != 1 {
		t.Errorf("pulled %d times, want 1", got)
	}
}

// Two images sharing their base layer, pulled at once, unpack it once.
func TestPullConcurrentSharedLayer(t *testing.T) {
	requireRoot(t)
	logger, log := newCountingLogger()
	s := newTestStore(t, Config{Logger: logger})
	l := newLayout(t, t.TempDir())
	base := testLayer{compression: "gzip", entries: []entry{dir("shared/"), file("shared/big", strings.Repeat("x", 1<<20))}}
	var refs []string
	for i, name := range []string{"one", "two", "three"} {
		img := testImage{layers: []testLayer{base, {entries: []entry{file(name, strings.Repeat("y", i))}}}}
		refs = append(refs, l.tag(l.image(img), name))
	}
	var wg sync.WaitGroup
	errs := make([]error, len(refs)*4)
	for i := range errs {
		wg.Go(func() { _, errs[i] = s.Pull(context.Background(), refs[i%len(refs)]) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if got := log.count("layer unpacked"); got != 1+len(refs) {
		t.Errorf("unpacked %d layers, want %d", got, 1+len(refs))
	}
}

// A manifest list resolves to this machine's platform.
func TestPullManifestList(t *testing.T) {
	requireRoot(t)
	s := newTestStore(t, Config{})
	l := newLayout(t, t.TempDir())
	var manifests []v1.Descriptor
	for _, arch := range []string{"arm64", "amd64", "s390x"} {
		if arch == "amd64" && runtime.GOARCH != "amd64" {
			arch = runtime.GOARCH
		}
		manifests = append(manifests, l.image(testImage{
			platform: v1.Platform{OS: "linux", Architecture: arch},
			layers:   []testLayer{{compression: "gzip", entries: []entry{file("arch", arch)}}},
		}))
	}
	img, err := s.Pull(context.Background(), l.tag(l.list(manifests...), "multi"))
	if err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(img.Layers[0], "arch")); got != runtime.GOARCH {
		t.Errorf("unpacked the %s image on %s", got, runtime.GOARCH)
	}
	if img.Digest != manifests[1].Digest.String() {
		t.Errorf("Digest = %s, want the %s instance %s", img.Digest, runtime.GOARCH, manifests[1].Digest)
	}
}

// Content that does not match its digests never becomes a layer, and a
// failed pull leaves neither a partial layer, nor work files, nor a record.
func TestPullVerifiesContent(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		name   string
		mangle func(i int, blob []byte, diffID digest.Digest) ([]byte, digest.Digest)
	}{
		{"wrong diffID", func(i int, blob []byte, diffID digest.Digest) ([]byte, digest.Digest) {
			if i == 1 {
				return blob, digest.FromString("something else")
			}
			return blob, diffID
		}},
		{"truncated gzip", func(i int, blob []byte, diffID digest.Digest) ([]byte, digest.Digest) {
			if i == 0 {
				return blob[:len(blob)/2], diffID
			}
			return blob, diffID
		}},
		{"hostile diffID", func(i int, blob []byte, diffID digest.Digest) ([]byte, digest.Digest) {
			return blob, digest.Digest("sha256:../../../../tmp/x")
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestStore(t, Config{})
			l := newLayout(t, t.TempDir())
			img := baseImage()
			img.mangle = tt.mangle
			_, err := s.Pull(context.Background(), l.tag(l.image(img), "bad"))
			var perr *PullError
			if !errors.As(err, &perr) || perr.Kind() != ErrBadImage {
				t.Fatalf("err = %v, want a bad image", err)
			}
			t.Log(err)
			assertNoPartialState(t, s, 2)
		})
	}

	t.Run("blob altered after the manifest was written", func(t *testing.T) {
		s := newTestStore(t, Config{})
		l := newLayout(t, t.TempDir())
		desc := l.image(testImage{layers: []testLayer{{compression: "gzip", entries: []entry{file("f", "content")}}}})
		ref := l.tag(desc, "v1")
		for d, b := range l.blobs {
			if b.mediaType == v1.MediaTypeImageLayerGzip {
				raw := buildTar(t, file("f", "CONTENT"))
				evil, _ := compressBytes(t, raw, "gzip")
				if err := os.WriteFile(filepath.Join(l.dir, "blobs/sha256", d.Encoded()), evil, 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
		if _, err := s.Pull(context.Background(), ref); !errors.Is(err, ErrBadImage) || !strings.HasPrefix(err.Error(), "bad image: ") ||
			!strings.Contains(err.Error(), "digest") {
			t.Fatalf("err = %v, want a bad image whose digest does not match", err)
		}
		assertNoPartialState(t, s, 0)
	})
}

// assertNoPartialState checks that a failed pull left at most maxLayers
// complete (verified) layers, nothing in tmp and no image record.
func assertNoPartialState(t *testing.T, s *Store, maxLayers int) {
	t.Helper()
	if entries, _ := os.ReadDir(s.tmpDir()); len(entries) != 0 {
		t.Errorf("tmp holds %d entries after a failed pull: %v", len(entries), entries)
	}
	if entries, _ := os.ReadDir(s.imagesDir()); len(entries) != 0 {
		t.Errorf("an image record was written for a failed pull")
	}
	layers, _ := os.ReadDir(s.layersDir())
	if len(layers) > maxLayers {
		t.Errorf("%d layers in the store, want at most %d", len(layers), maxLayers)
	}
	for _, e := range layers {
		if _, err := digest.Parse("sha256:" + e.Name()); err != nil {
			t.Errorf("unexpected entry in layers: %s", e.Name())
		}
	}
}

func TestNewRemovesLeftovers(t *testing.T) {
	requireRoot(t)
	s := newTestStore(t, Config{})
	// An unpack interrupted by a crash...
	half := filepath.Join(s.tmpDir(), "layer-123", "usr", "bin")
	if err := os.MkdirAll(half, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(half, "half"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	// ...and an overlay probe whose mount outlived the daemon.
	probe := filepath.Join(s.tmpDir(), probePrefix+"1")
	for _, d := range []string{"lower", "upper", "work", "rootfs"} {
		if err := os.MkdirAll(filepath.Join(probe, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { UnmountRoot(probe) })
	if err := mountOverlay(overlaySupport{mode: overlayFsconfig, volatile: true}, s.xattrs, []string{filepath.Join(probe, "lower")},
		filepath.Join(probe, "upper"), filepath.Join(probe, "work"), filepath.Join(probe, "rootfs")); err != nil {
		t.Fatal(err)
	}

	if _, err := New(s.cfg); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(s.tmpDir()); len(entries) != 0 {
		t.Errorf("tmp still holds %d entries", len(entries))
	}
	if m := mountPoints(t, probe); len(m) != 0 {
		t.Errorf("probe still mounted: %v", m)
	}
}

func TestPullLocalErrors(t *testing.T) {
	requireRoot(t)
	s := newTestStore(t, Config{})
	l := newLayout(t, t.TempDir())
	l.tag(l.image(baseImage()), "v1")
	reject := filepath.Join(t.TempDir(), "reject.json")
	if err := os.WriteFile(reject, []byte(`{"default":[{"type":"reject"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	strict := newTestStore(t, Config{PolicyPath: reject})

	tests := []struct {
		store *Store
		ref   string
		want  error
	}{
		{s, "oci:" + filepath.Join(t.TempDir(), "nothing") + ":v1", ErrImageNotFound},
		{s, "oci:" + l.dir + ":nope", ErrImageNotFound},
		{s, "oci-archive:" + filepath.Join(t.TempDir(), "missing.tar"), ErrImageNotFound},
		{s, "", ErrInvalidReference},
		{s, "UPPER/case", ErrInvalidReference},
		{s, "docker:no-slashes", ErrInvalidReference},
		{s, "dir:/etc", ErrInvalidReference},
		{strict, "oci:" + l.dir + ":v1", ErrPolicyRejected},
	}
	for _, tt := range tests {
		_, err := tt.store.Pull(context.Background(), tt.ref)
		if !errors.Is(err, tt.want) {
			t.Errorf("Pull(%q) = %v, want %v", tt.ref, err, tt.want)
		}
	}
	if entries, _ := os.ReadDir(strict.layersDir()); len(entries) != 0 {
		t.Error("a rejected image was unpacked")
	}
}

func TestParseReference(t *testing.T) {
	archives := t.TempDir()
	s := newTestStore(t, Config{ArchiveDir: archives})
	tests := []struct{ in, want string }{
		{"openruntimes/node:v5-18.0", "docker://docker.io/openruntimes/node:v5-18.0"},
		{"node", "docker://docker.io/library/node:latest"},
		{"docker://ghcr.io/a/b:c", "docker://ghcr.io/a/b:c"},
		{"localhost:5000/x", "docker://localhost:5000/x:latest"},
		{"127.0.0.1:5000/x:y", "docker://127.0.0.1:5000/x:y"},
		{"oci:" + archives + "/layout:tag", "oci:" + archives + "/layout:tag"},
		{"oci:layout:tag", "oci:" + archives + "/layout:tag"},
		{"docker-archive:" + archives + "/img.tar", "docker-archive:" + archives + "/img.tar"},
	}
	for _, tt := range tests {
		r, err := s.parseReference(tt.in)
		if err != nil {
			t.Errorf("%q: %v", tt.in, err)
			continue
		}
		if got := canonicalName(r); got != tt.want {
			t.Errorf("%q -> %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestStoreLayoutPermissions(t *testing.T) {
	requireRoot(t)
	s := newTestStore(t, Config{})
	fi, err := os.Stat(s.root)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("store root is %v, want private", fi.Mode())
	}
	_, err = New(Config{Root: s.root, RegistriesConf: filepath.Join(t.TempDir(), "missing.conf")})
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("New with a missing registries.conf: %v", err)
	}
}

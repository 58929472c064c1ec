package testenv

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"go.podman.io/image/v5/docker"
	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/manifest"
	"go.podman.io/image/v5/pkg/blobinfocache/none"
	"go.podman.io/image/v5/types"
)

// serverBinary is the test runtime, built once for the whole package.
var serverBinary string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "testenv-server-*")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	serverBinary = filepath.Join(dir, "runtime-server")
	if err := BuildRuntimeServer(ctx, serverBinary); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

func startTestRegistry(t *testing.T, cfg RegistryConfig) *Registry {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	reg, err := StartRegistry(ctx, cfg)
	if err != nil {
		t.Fatalf("StartRegistry: %v", err)
	}
	t.Cleanup(reg.Stop)
	return reg
}

func buildTestImage(t *testing.T, opts ImageOptions) string {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	opts.ServerBinary = serverBinary
	dir, err := BuildRuntimeImage(context.Background(), opts)
	if err != nil {
		t.Fatalf("BuildRuntimeImage: %v", err)
	}
	return dir
}

// TestPushAndPullThroughMirror is the contract the executor's e2e tests rely
// on: an image pushed to the local registry is reachable as
// docker.io/openruntimes/test:v5-1 through the generated registries.conf.
func TestPushAndPullThroughMirror(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	reg := startTestRegistry(t, RegistryConfig{})
	layoutDir := buildTestImage(t, ImageOptions{Protocol: ProtocolV5, Tag: "v5-1", WithBash: true})
	if err := PushImage(ctx, layoutDir, "v5-1", reg.Addr()+"/openruntimes/test:v5-1", true); err != nil {
		t.Fatalf("PushImage: %v", err)
	}

	confDir := t.TempDir()
	confPath := filepath.Join(confDir, "registries.conf")
	if err := WriteRegistriesConf(confPath, reg.Addr()); err != nil {
		t.Fatal(err)
	}
	sys := &types.SystemContext{
		SystemRegistriesConfPath:    confPath,
		SystemRegistriesConfDirPath: filepath.Join(confDir, "registries.conf.d"),
		AuthFilePath:                filepath.Join(confDir, "auth.json"),
		RegistriesDirPath:           filepath.Join(confDir, "registries.d"),
	}
	// The plain name the executor's tests use normalizes to docker.io, which
	// the mirror entry sends to the local registry.
	named, err := reference.ParseNormalizedNamed("openruntimes/test:v5-1")
	if err != nil {
		t.Fatal(err)
	}
	if named.String() != "docker.io/openruntimes/test:v5-1" {
		t.Fatalf("normalized name = %s", named)
	}
	ref, err := docker.NewReference(named)
	if err != nil {
		t.Fatal(err)
	}
	src, err := ref.NewImageSource(ctx, sys)
	if err != nil {
		t.Fatalf("open docker.io/openruntimes/test:v5-1 through the mirror: %v", err)
	}
	defer src.Close()

	raw, mime, err := src.GetManifest(ctx, nil)
	if err != nil {
		t.Fatalf("GetManifest: %v", err)
	}
	if mime != ocispec.MediaTypeImageManifest {
		t.Errorf("manifest type = %q, want %q", mime, ocispec.MediaTypeImageManifest)
	}
	m, err := manifest.FromBlob(raw, mime)
	if err != nil {
		t.Fatalf("parse manifest: %v", err)
	}
	layers := m.LayerInfos()
	if len(layers) != 3 {
		t.Fatalf("manifest has %d layers, want 3", len(layers))
	}

	// The mirror, not docker.io, must have served the request.
	layer := layers[len(layers)-1].BlobInfo
	if got := reg.BlobGets(layer.Digest.String()); got != 0 {
		t.Fatalf("BlobGets before download = %d, want 0", got)
	}
	rc, _, err := src.GetBlob(ctx, layer, none.NoCache)
	if err != nil {
		t.Fatalf("GetBlob: %v", err)
	}
	if _, err := io.Copy(io.Discard, rc); err != nil {
		t.Fatal(err)
	}
	rc.Close()
	if got := reg.BlobGets(layer.Digest.String()); got != 1 {
		t.Fatalf("BlobGets(%s) = %d, want 1", layer.Digest, got)
	}
	if got := reg.BlobGets(layer.Digest.Encoded()[:12]); got != 1 {
		t.Fatalf("BlobGets(bare hex prefix) = %d, want 1", got)
	}
}

func TestPushWithAuth(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	htpasswd := filepath.Join(dir, "htpasswd")
	if err := WriteHtpasswd(htpasswd, "tester", "secret-pass"); err != nil {
		t.Fatal(err)
	}
	reg := startTestRegistry(t, RegistryConfig{Dir: filepath.Join(dir, "registry"), Htpasswd: htpasswd})
	layoutDir := buildTestImage(t, ImageOptions{Protocol: ProtocolV4})
	dest := reg.Addr() + "/openruntimes/test:v4-1"

	tests := []struct {
		name    string
		opts    []PushOption
		wantErr bool
	}{
		{"anonymous", nil, true},
		{"wrong password", []PushOption{WithCredentials("tester", "nope")}, true},
		{"right password", []PushOption{WithCredentials("tester", "secret-pass")}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := PushImage(ctx, layoutDir, "v4-1", dest, true, tt.opts...)
			if (err != nil) != tt.wantErr {
				t.Fatalf("PushImage error = %v, want error %v", err, tt.wantErr)
			}
		})
	}
}

func TestStartRegistryFailsWithoutBinary(t *testing.T) {
	_, err := StartRegistry(context.Background(), RegistryConfig{Dir: t.TempDir(), Binary: "/nonexistent/registry"})
	if err == nil {
		t.Fatal("StartRegistry succeeded with a missing binary")
	}
}

func TestRegistryStopIsIdempotent(t *testing.T) {
	reg := startTestRegistry(t, RegistryConfig{})
	reg.Stop()
	reg.Stop()
	if _, err := FreePort(); err != nil {
		t.Fatal(err)
	}
}

// layerFile is one member of an image layer, for assertions.
type layerFile struct {
	typeflag byte
	mode     int64
	linkname string
	content  string
}

// readLayout returns the config and each layer's members of the single image
// in an OCI layout.
func readLayout(t *testing.T, dir string) (ocispec.Index, ocispec.Image, []map[string]layerFile) {
	t.Helper()
	readJSON := func(path string, v any) {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("decode %s: %v", path, err)
		}
	}
	blob := func(d ocispec.Descriptor) string {
		return filepath.Join(dir, "blobs", d.Digest.Algorithm().String(), d.Digest.Encoded())
	}
	var index ocispec.Index
	readJSON(filepath.Join(dir, "index.json"), &index)
	if len(index.Manifests) != 1 {
		t.Fatalf("index has %d manifests, want 1", len(index.Manifests))
	}
	var m ocispec.Manifest
	readJSON(blob(index.Manifests[0]), &m)
	var config ocispec.Image
	readJSON(blob(m.Config), &config)

	var layers []map[string]layerFile
	for _, l := range m.Layers {
		f, err := os.Open(blob(l))
		if err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(zr)
		files := map[string]layerFile{}
		for {
			hdr, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			files[strings.TrimSuffix(hdr.Name, "/")] = layerFile{hdr.Typeflag, hdr.Mode, hdr.Linkname, string(b)}
		}
		f.Close()
		layers = append(layers, files)
	}
	return index, config, layers
}

func TestBuildRuntimeImage(t *testing.T) {
	tests := []struct {
		name        string
		opts        ImageOptions
		wantCmd     []string
		wantWorkDir string
		wantEnv     string
		layer2      []string // paths that must be in the runtime layer
		notLayer2   []string
	}{
		{
			name:        "v5",
			opts:        ImageOptions{Protocol: ProtocolV5, WithBash: true},
			wantCmd:     []string{"sh", "-c", `helpers/start.sh "sh helpers/server.sh"`},
			wantWorkDir: "/usr/local/server",
			wantEnv:     "OPEN_RUNTIMES_ENTRYPOINT=index.js",
			layer2: []string{"usr/local/server/runtime-server", "usr/local/server/helpers/start.sh",
				"usr/local/server/helpers/build.sh", "usr/local/server/helpers/server.sh", "bin/bash", "usr/bin/nohup"},
		},
		{
			name:        "v5 without bash",
			opts:        ImageOptions{Protocol: ProtocolV5, Tag: "v5-nobash"},
			wantCmd:     []string{"sh", "-c", `helpers/start.sh "sh helpers/server.sh"`},
			wantWorkDir: "/usr/local/server",
			wantEnv:     "OPEN_RUNTIMES_ENTRYPOINT=index.js",
			layer2:      []string{"usr/local/server/runtime-server", "usr/bin/nohup"},
			notLayer2:   []string{"bin/bash"},
		},
		{
			name:        "v2",
			opts:        ImageOptions{Protocol: ProtocolV2, WithBash: true},
			wantCmd:     []string{"sh", "/usr/local/src/start.sh"},
			wantWorkDir: "/usr/local/src",
			wantEnv:     "INTERNAL_RUNTIME_ENTRYPOINT=index.js",
			layer2:      []string{"usr/local/src/runtime-server", "usr/local/src/start.sh", "usr/local/src/build.sh", "bin/bash"},
			notLayer2:   []string{"usr/local/server/runtime-server"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := buildTestImage(t, tt.opts)
			index, config, layers := readLayout(t, dir)

			wantTag := tt.opts.Tag
			if wantTag == "" {
				wantTag = tt.opts.Protocol + "-1"
			}
			if got := index.Manifests[0].Annotations[ocispec.AnnotationRefName]; got != wantTag {
				t.Errorf("ref name = %q, want %q", got, wantTag)
			}
			if config.OS != "linux" || config.Architecture != "amd64" {
				t.Errorf("platform = %s/%s, want linux/amd64", config.OS, config.Architecture)
			}
			if strings.Join(config.Config.Cmd, "\x00") != strings.Join(tt.wantCmd, "\x00") {
				t.Errorf("cmd = %q, want %q", config.Config.Cmd, tt.wantCmd)
			}
			if config.Config.WorkingDir != tt.wantWorkDir {
				t.Errorf("workdir = %q, want %q", config.Config.WorkingDir, tt.wantWorkDir)
			}
			if !containsString(config.Config.Env, tt.wantEnv) {
				t.Errorf("env = %q, want it to contain %q", config.Config.Env, tt.wantEnv)
			}
			if len(layers) != 3 || len(config.RootFS.DiffIDs) != 3 {
				t.Fatalf("got %d layers / %d diff ids, want 3", len(layers), len(config.RootFS.DiffIDs))
			}

			base, runtime, whiteouts := layers[0], layers[1], layers[2]
			if f := base["bin/busybox"]; f.typeflag != tar.TypeReg || f.mode != 0o755 {
				t.Errorf("bin/busybox = %+v, want a 0755 file", f.typeflag)
			}
			for _, a := range BusyboxApplets {
				if f := base["bin/"+a]; f.typeflag != tar.TypeSymlink || f.linkname != "busybox" {
					t.Errorf("bin/%s is not a symlink to busybox", a)
				}
			}
			if f := base["tmp"]; f.typeflag != tar.TypeDir || f.mode != 0o1777 {
				t.Errorf("tmp mode = %o, want 1777", f.mode)
			}
			for _, p := range []string{"etc/passwd", "etc/group", "opt/removed.txt", "opt/opaque/old.txt"} {
				if _, ok := base[p]; !ok {
					t.Errorf("base layer lacks %s", p)
				}
			}
			if !strings.Contains(base["etc/passwd"].content, "nobody:x:65534") {
				t.Errorf("/etc/passwd lacks nobody")
			}
			for _, p := range tt.layer2 {
				if f, ok := runtime[p]; !ok || f.mode&0o111 == 0 {
					t.Errorf("runtime layer lacks executable %s", p)
				}
			}
			for _, p := range tt.notLayer2 {
				if _, ok := runtime[p]; ok {
					t.Errorf("runtime layer has %s, want it absent", p)
				}
			}
			for _, p := range []string{"opt/.wh.removed.txt", "opt/opaque/.wh..wh..opq", "opt/opaque/new.txt"} {
				if _, ok := whiteouts[p]; !ok {
					t.Errorf("whiteout layer lacks %s", p)
				}
			}
			if got := whiteouts["etc/test-image"].content; got != tt.opts.Protocol+"\n" {
				t.Errorf("/etc/test-image = %q", got)
			}
		})
	}
}

func TestBuildRuntimeImageIsReproducible(t *testing.T) {
	a, _, _ := readLayout(t, buildTestImage(t, ImageOptions{Protocol: ProtocolV4}))
	b, _, _ := readLayout(t, buildTestImage(t, ImageOptions{Protocol: ProtocolV4}))
	if a.Manifests[0].Digest != b.Manifests[0].Digest {
		t.Fatalf("manifest digests differ: %s vs %s", a.Manifests[0].Digest, b.Manifests[0].Digest)
	}
}

func TestBuildRuntimeImageValidates(t *testing.T) {
	tests := []struct {
		name string
		opts ImageOptions
	}{
		{"no dir", ImageOptions{ServerBinary: "/bin/true"}},
		{"no server", ImageOptions{Dir: t.TempDir()}},
		{"bad protocol", ImageOptions{Dir: t.TempDir(), ServerBinary: "/bin/true", Protocol: "v1"}},
		{"missing server", ImageOptions{Dir: t.TempDir(), ServerBinary: "/nonexistent"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := BuildRuntimeImage(context.Background(), tt.opts); err == nil {
				t.Fatal("BuildRuntimeImage succeeded, want error")
			}
		})
	}
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func TestMakeSourceTarball(t *testing.T) {
	path := filepath.Join(t.TempDir(), "code.tar.gz")
	files := map[string]string{
		"index.js":       "module.exports = 1;",
		"lib/util.js":    "x",
		"lib/deep/a.txt": "a",
		"build.sh":       "echo hi",
		".open-runtimes": "OPEN_RUNTIMES_ENTRYPOINT=index.js",
	}
	if err := MakeSourceTarball(path, files); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	got := map[string]string{}
	var dirs []string
	modes := map[string]int64{}
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if hdr.Typeflag == tar.TypeDir {
			dirs = append(dirs, hdr.Name)
			continue
		}
		b, _ := io.ReadAll(tr)
		got[hdr.Name] = string(b)
		modes[hdr.Name] = hdr.Mode
	}
	for name, want := range files {
		if got[name] != want {
			t.Errorf("%s = %q, want %q", name, got[name], want)
		}
	}
	if strings.Join(dirs, ",") != "lib/,lib/deep/" {
		t.Errorf("dirs = %q, want lib/ then lib/deep/", dirs)
	}
	if modes["build.sh"] != 0o755 || modes["index.js"] != 0o644 {
		t.Errorf("modes = %v", modes)
	}

	if err := MakeSourceTarball(filepath.Join(t.TempDir(), "bad.tar.gz"), map[string]string{"../x": ""}); err == nil {
		t.Error("MakeSourceTarball accepted ../x")
	}
}

func TestWriteRegistriesConf(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registries.conf")
	if err := WriteRegistriesConf(path, "127.0.0.1:5999"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`unqualified-search-registries = ["docker.io"]`,
		`short-name-mode = "permissive"`,
		`prefix = "docker.io"`,
		"[[registry.mirror]]\nlocation = \"127.0.0.1:5999\"\ninsecure = true",
		"prefix = \"127.0.0.1:5999\"\nlocation = \"127.0.0.1:5999\"\ninsecure = true",
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("registries.conf lacks %q:\n%s", want, b)
		}
	}
}

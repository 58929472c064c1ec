package images

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// The crash test runs a pull in a child process (this test binary again,
// selected by helperPullEnv) so that it can be SIGKILLed like a daemon.
const helperPullEnv = "IMAGES_TEST_HELPER_PULL"

func TestMain(m *testing.M) {
	if os.Getenv(helperPullEnv) != "" {
		os.Exit(helperPull())
	}
	os.Exit(m.Run())
}

// helperPull is the child: it pulls one image into a store and reports how
// it ended (it is meant to be killed before that).
func helperPull() int {
	s, err := New(Config{
		Root:           os.Getenv(helperPullEnv + "_ROOT"),
		RegistriesConf: os.Getenv(helperPullEnv + "_CONF"),
		PolicyPath:     os.Getenv(helperPullEnv + "_POLICY"),
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper: New:", err)
		return 2
	}
	_, err = s.Pull(context.Background(), os.Getenv(helperPullEnv+"_REF"))
	fmt.Fprintln(os.Stderr, "helper: pull ended:", err)
	return 3
}

// randomBytes is incompressible data, the same for the same seed.
func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

// stallingRegistry serves a layout's blobs, except that until released it
// sends only the first half of one blob and then stalls until the client goes.
type stallingRegistry struct {
	*testRegistry
	stall    digest.Digest
	released atomic.Bool
	stalled  chan struct{}
	once     sync.Once
}

func (r *stallingRegistry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if !r.released.Load() && req.Method == http.MethodGet && strings.HasSuffix(req.URL.Path, "/blobs/"+r.stall.String()) {
		b := r.blobs[r.stall]
		w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", fmt.Sprint(len(b.data)))
		w.Write(b.data[:len(b.data)/2])
		w.(http.Flusher).Flush()
		r.once.Do(func() { close(r.stalled) })
		<-req.Context().Done()
		return
	}
	r.serve(w, req)
}

// TestPullKilledMidway SIGKILLs a process in the middle of a pull, while a
// big layer is being downloaded and unpacked, then opens the store again: the
// half-unpacked layer is gone, no record exists, only complete layers remain,
// and the pull then succeeds.
func TestPullKilledMidway(t *testing.T) {
	requireRoot(t)
	const bigSize = 32 << 20
	big := randomBytes(1, bigSize)
	l := newLayout(t, t.TempDir())
	img := testImage{layers: []testLayer{
		{compression: "gzip", entries: []entry{dir("etc/"), file("etc/small", "complete")}},
		{entries: []entry{dir("data/"), file("data/big", string(big))}}, // uncompressed: unpacking follows the download
	}}
	desc := l.image(img)
	var manifestDiffIDs []digest.Digest
	for _, layer := range img.layers {
		manifestDiffIDs = append(manifestDiffIDs, digest.FromBytes(buildTar(t, layer.entries...)))
	}
	var bigBlob digest.Digest
	for d, b := range l.blobs {
		if len(b.data) > bigSize {
			bigBlob = d
		}
	}

	reg := &stallingRegistry{testRegistry: &testRegistry{tags: map[string]digest.Digest{}, blobs: l.blobs,
		errorFor: map[string]func(http.ResponseWriter){}}, stall: bigBlob, stalled: make(chan struct{})}
	reg.tags["crash/test:v1"] = desc.Digest
	srv := httptest.NewServer(reg)
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	ref := host + "/crash/test:v1"

	conf := writeConf(t, fmt.Sprintf("[[registry]]\nlocation = %q\ninsecure = true\n", host))
	policy := filepath.Join(t.TempDir(), "policy.json")
	if err := os.WriteFile(policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Root: filepath.Join(t.TempDir(), "images"), RegistriesConf: conf, PolicyPath: policy,
		Logger: slog.New(slog.DiscardHandler)}
	smallLayer := filepath.Join(cfg.Root, "layers", manifestDiffIDs[0].Encoded())

	var out bytes.Buffer
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), helperPullEnv+"=1", helperPullEnv+"_ROOT="+cfg.Root,
		helperPullEnv+"_CONF="+conf, helperPullEnv+"_POLICY="+policy, helperPullEnv+"_REF="+ref)
	child.Stdout, child.Stderr = &out, &out
	child.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- child.Wait() }()

	// Kill it once the small layer is committed and the big one is half
	// unpacked in Root/tmp.
	deadline := time.After(30 * time.Second)
	halfUnpacked := func() string {
		ms, _ := filepath.Glob(filepath.Join(cfg.Root, "tmp", "layer-*", "data", "big"))
		for _, m := range ms {
			if fi, err := os.Stat(m); err == nil && fi.Size() >= 4<<20 {
				return m
			}
		}
		return ""
	}
	for ready := false; !ready; {
		select {
		case err := <-exited:
			t.Fatalf("helper exited before it was killed: %v\n%s", err, out.String())
		case <-deadline:
			t.Fatalf("pull never got half-way\n%s", out.String())
		case <-time.After(10 * time.Millisecond):
		}
		select {
		case <-reg.stalled:
			ready = exists(smallLayer) && halfUnpacked() != ""
		default:
		}
	}
	partial := halfUnpacked()
	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if err := <-exited; err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("helper: %v\n%s", err, out.String())
	}
	fi, _ := os.Stat(partial)
	t.Logf("killed with %d of %d bytes of the big layer unpacked at %s", fi.Size(), bigSize, partial)

	// Reopen, as a restarted daemon does.
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	assertTmpEmpty(t, s)
	if n := recordCount(t, s); n != 0 {
		t.Errorf("%d image records after an interrupted pull", n)
	}
	if got := layerNames(t, s); len(got) != 1 || got[0] != manifestDiffIDs[0].Encoded() {
		t.Errorf("layers after the crash: %v, want only the complete %s", got, manifestDiffIDs[0].Encoded())
	}
	if got := readFile(t, filepath.Join(smallLayer, "etc/small")); got != "complete" {
		t.Errorf("committed layer content %q", got)
	}

	reg.released.Store(true)
	pulled, err := s.Pull(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	if pulled.Digest != desc.Digest.String() {
		t.Errorf("digest %s, want %s", pulled.Digest, desc.Digest)
	}
	data, err := os.ReadFile(filepath.Join(pulled.Layers[1], "data/big"))
	if err != nil || sha256.Sum256(data) != sha256.Sum256(big) {
		t.Errorf("big file after the fresh pull: %d bytes, %v", len(data), err)
	}
	rootfs := mountRoot(t, s, pulled, filepath.Join(t.TempDir(), "rt"))
	if got := readFile(t, filepath.Join(rootfs, "etc/small")); got != "complete" {
		t.Errorf("root reads %q", got)
	}
	assertTmpEmpty(t, s)
}

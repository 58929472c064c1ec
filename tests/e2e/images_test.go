package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"executor/tests/testenv"
)

// layoutOf is the OCI layout TestMain built for a shared test image tag.
func imagesLayout(tag string) string { return filepath.Join(shared.work, "images", tag) }

// registriesConfWith writes a registries.conf that keeps the shared docker.io
// mirror and also marks the given plain-HTTP registries insecure.
func imagesRegistriesConf(t *testing.T, insecure ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "registries.conf")
	if err := testenv.WriteRegistriesConf(p, shared.registry.Addr()); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, addr := range insecure {
		fmt.Fprintf(f, "\n[[registry]]\nlocation = %q\ninsecure = true\n", addr)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

// startTestRegistry starts a private registry for one test.
func imagesRegistry(t *testing.T, htpasswd string) *testenv.Registry {
	t.Helper()
	reg, err := testenv.StartRegistry(context.Background(), testenv.RegistryConfig{Dir: t.TempDir(), Htpasswd: htpasswd})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Stop)
	return reg
}

func imagesPush(t *testing.T, tag, dest string, opts ...testenv.PushOption) {
	t.Helper()
	if err := testenv.PushImage(context.Background(), imagesLayout(tag), tag, dest, true, opts...); err != nil {
		t.Fatal(err)
	}
}

// coldStart creates runtime id from image with one execution and checks the
// runtime answered.
func imagesColdStart(t *testing.T, x *executor, id, image string) {
	t.Helper()
	if err := imagesTryColdStart(x, source(t, map[string]string{"index.js": "image-test"}), id, image); err != nil {
		t.Fatal(err)
	}
}

// imagesTryColdStart is imagesColdStart for any goroutine: it returns what
// went wrong for the test's goroutine to report.
func imagesTryColdStart(x *executor, src, id, image string) error {
	r, err := x.send("POST", "/v1/runtimes/"+id+"/executions", execBody(src, map[string]any{"image": image, "path": "/echo"}), jsonAccept)
	if err != nil {
		return fmt.Errorf("cold start of %s from %s: %w", id, image, err)
	}
	if res, err := r.decode(); r.status != 200 || err != nil || res["statusCode"] != float64(200) {
		return fmt.Errorf("cold start of %s from %s: %d %s", id, image, r.status, r.body)
	}
	return nil
}

// imageRecord is where the executor's store keeps the record of ref
// (canonical docker name, as images.Store spells it).
func imagesRecord(x *executor, canonical string) string {
	sum := sha256.Sum256([]byte(canonical))
	return filepath.Join(x.dataDir, "images", "images", hex.EncodeToString(sum[:])+".json")
}

func imagesExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// An auth.json named by OPR_EXECUTOR_REGISTRY_AUTH_FILE authenticates pulls
// from a registry with htpasswd auth; wrong credentials fail with
// "unauthorized", the registry's own answer going to the log only.
func TestImagesAuthenticatedPull(t *testing.T) {
	htpasswd := filepath.Join(t.TempDir(), "htpasswd")
	if err := testenv.WriteHtpasswd(htpasswd, "e2e-user", "e2e-pass"); err != nil {
		t.Fatal(err)
	}
	reg := imagesRegistry(t, htpasswd)
	image := reg.Addr() + "/private/test:v5-1"
	imagesPush(t, "v5-1", image, testenv.WithCredentials("e2e-user", "e2e-pass"))

	authFile := filepath.Join(t.TempDir(), "auth.json")
	if err := testenv.WriteAuthFile(authFile, reg.Addr(), "e2e-user", "wrong-pass"); err != nil {
		t.Fatal(err)
	}
	x := startExecutor(t, "CONTAINERS_REGISTRIES_CONF="+imagesRegistriesConf(t, reg.Addr()), "OPR_EXECUTOR_REGISTRY_AUTH_FILE="+authFile)

	src := source(t, map[string]string{"index.js": "x"})
	r := x.request(t, "POST", "/v1/runtimes/auth-1/executions", execBody(src, map[string]any{"image": image}), jsonAccept)
	msg, _ := r.json(t)["message"].(string)
	if r.status != 400 || !strings.HasPrefix(msg, "Missing image") || !strings.HasSuffix(msg, ": unauthorized") {
		t.Fatalf("wrong credentials: %d %s", r.status, r.body)
	}
	// The log line is written before the answer, but reaches the test's
	// buffer through a pipe of its own: it may come a moment later.
	waitLog(t, x, "authentication required", 1)
	t.Logf("wrong credentials: %s", msg)
	x.waitClean(t)

	// The file is read at every pull: fixing it is enough.
	if err := testenv.WriteAuthFile(authFile, reg.Addr(), "e2e-user", "e2e-pass"); err != nil {
		t.Fatal(err)
	}
	imagesColdStart(t, x, "auth-1", image)
	if r := x.request(t, "DELETE", "/v1/runtimes/auth-1", nil, nil); r.status != 200 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	x.waitClean(t)
}

// An oci-archive: reference (a tar of an OCI layout) in
// OPR_EXECUTOR_IMAGE_ARCHIVE_DIR runs a runtime; one outside it is refused,
// and a symlink planted in it that points at that one out there resolves
// inside it, where there is nothing.
func TestImagesOCIArchive(t *testing.T) {
	dir, err := os.MkdirTemp(shared.work, "oa-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	outside, err := os.MkdirTemp(shared.work, "oa-outside-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(outside) })
	archive := filepath.Join(dir, "v5.tar")
	if err := testenv.TarLayout(imagesLayout("v5-1"), archive); err != nil {
		t.Fatal(err)
	}
	elsewhere := filepath.Join(outside, "v5.tar")
	if err := testenv.TarLayout(imagesLayout("v5-1"), elsewhere); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(elsewhere, filepath.Join(dir, "planted.tar")); err != nil {
		t.Fatal(err)
	}
	x := startExecutor(t, "OPR_EXECUTOR_IMAGE_ARCHIVE_DIR="+dir)
	imagesColdStart(t, x, "archive-1", "oci-archive:"+archive+":v5-1")
	r := x.request(t, "GET", "/v1/runtimes/archive-1", nil, nil)
	if r.status != 200 || r.json(t)["image"] != "oci-archive:"+archive+":v5-1" {
		t.Fatalf("runtime: %d %s", r.status, r.body)
	}
	if r := x.request(t, "DELETE", "/v1/runtimes/archive-1", nil, nil); r.status != 200 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	x.waitClean(t)

	src := source(t, map[string]string{"index.js": "x"})
	for i, tt := range []struct{ image, want string }{
		{"oci-archive:" + elsewhere + ":v5-1", "invalid image reference: oci-archive: paths must be inside the image archive directory"},
		{"oci-archive:" + dir + "/planted.tar:v5-1", "image not found"},
		{"oci-archive:planted.tar:v5-1", "image not found"},
		{"docker-archive:" + dir + "/../" + filepath.Base(outside) + "/v5.tar", `invalid image reference: docker-archive: paths must not contain ".."`},
	} {
		r := x.request(t, "POST", fmt.Sprintf("/v1/runtimes/outside-%d/executions", i), execBody(src, map[string]any{"image": tt.image}), jsonAccept)
		msg, _ := r.json(t)["message"].(string)
		if r.status != 400 || !strings.HasSuffix(msg, ": "+tt.want) {
			t.Errorf("%s: %d %s, want 400 ending %q", tt.image, r.status, r.body, tt.want)
		}
	}
	x.waitClean(t)
}

// Without OPR_EXECUTOR_IMAGE_ARCHIVE_DIR, an image reference that names a
// host path is a 400, and so is one that names a port on the host itself
// (not in registries.conf); the message is the same whether the file
// exists, the port is open or the service there speaks HTTP.
func TestImagesHostProbesRefused(t *testing.T) {
	x := startExecutor(t)
	_, apiPort, err := net.SplitHostPort(strings.TrimPrefix(x.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	closed, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	src := source(t, map[string]string{"index.js": "x"})
	groups := [][]string{
		{"oci:/etc", "oci:/etc:latest", "oci:/nonexistent-e2e-dir"},
		{"docker-archive:/etc/shadow", "docker-archive:/nonexistent-e2e-file", "docker-archive:/proc/self/environ"},
		{"oci-archive:/etc/passwd", "oci-archive:/nonexistent-e2e.tar", "oci-archive:/dev/zero"},
		{"127.0.0.1:" + apiPort + "/x:v1", fmt.Sprintf("127.0.0.1:%d/x:v1", closed), "localhost:" + apiPort + "/x:v1"},
	}
	n := 0
	for _, group := range groups {
		first := ""
		for _, image := range group {
			n++
			r := x.request(t, "POST", fmt.Sprintf("/v1/runtimes/probe-%d/executions", n), execBody(src, map[string]any{"image": image}), jsonAccept)
			msg, _ := r.json(t)["message"].(string)
			// The message repeats the reference; what follows must not differ.
			_, rest, ok := strings.Cut(msg, strconv.Quote(image))
			host, _, _ := strings.Cut(image, ":")
			rest = strings.ReplaceAll(rest, host, "HOST")
			if r.status != 400 || !ok {
				t.Errorf("%s: %d %s, want a 400", image, r.status, r.body)
				continue
			}
			t.Logf("%s: %s", image, msg)
			if first == "" {
				first = rest
			} else if rest != first {
				t.Errorf("%s: message %q differs from %q", image, rest, first)
			}
		}
	}
	x.waitClean(t)
}

// Two images that share their base layer, started at the same time: every
// blob is downloaded once, the shared one included.
func TestImagesSharedLayersPulledOnce(t *testing.T) {
	reg := imagesRegistry(t, "")
	imagesPush(t, "v5-1", reg.Addr()+"/shared/a:v5-1")
	imagesPush(t, "v4-1", reg.Addr()+"/shared/b:v4-1")
	la, err := testenv.LayoutLayers(imagesLayout("v5-1"), "v5-1")
	if err != nil {
		t.Fatal(err)
	}
	lb, err := testenv.LayoutLayers(imagesLayout("v4-1"), "v4-1")
	if err != nil {
		t.Fatal(err)
	}
	var sharedLayers []string
	for _, d := range la {
		if slices.Contains(lb, d) {
			sharedLayers = append(sharedLayers, d.String())
		}
	}
	if len(sharedLayers) == 0 {
		t.Fatal("the test images share no layer")
	}

	x := startExecutor(t, "CONTAINERS_REGISTRIES_CONF="+imagesRegistriesConf(t, reg.Addr()))
	var wg sync.WaitGroup
	src := source(t, map[string]string{"index.js": "image-test"})
	errs := make([]error, 2)
	for i, image := range []string{reg.Addr() + "/shared/a:v5-1", reg.Addr() + "/shared/b:v4-1"} {
		wg.Go(func() { errs[i] = imagesTryColdStart(x, src, fmt.Sprintf("shared-%d", i), image) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	for _, d := range append(la, lb...) {
		want := 1
		if n := reg.BlobGets(d.String()); n != want {
			t.Errorf("layer %s downloaded %d times, want %d (shared: %v)", d, n, want, slices.Contains(sharedLayers, d.String()))
		}
	}
	for i := range 2 {
		if r := x.request(t, "DELETE", fmt.Sprintf("/v1/runtimes/shared-%d", i), nil, nil); r.status != 200 {
			t.Fatalf("delete: %d %s", r.status, r.body)
		}
	}
	x.waitClean(t)
}

// With a short OPR_EXECUTOR_IMAGE_GC_INTERVAL/AGE the daemon removes an image
// once its runtime is deleted, with the layers only it used, and keeps an
// image in use and a pre-pulled one.
func TestImagesGarbageCollection(t *testing.T) {
	x := startExecutor(t, "OPR_EXECUTOR_IMAGE_GC_INTERVAL=1", "OPR_EXECUTOR_IMAGE_GC_AGE=1",
		"OPR_EXECUTOR_IMAGES=openruntimes/test:v3-1")
	recA := imagesRecord(x, "docker://docker.io/openruntimes/test:v5-1")
	recB := imagesRecord(x, "docker://docker.io/openruntimes/test:v4-1")
	recKeep := imagesRecord(x, "docker://docker.io/openruntimes/test:v3-1")
	imagesWaitFor(t, 20*time.Second, "pre-pull of v3-1", func() bool { return imagesExists(recKeep) })

	imagesColdStart(t, x, "gc-a", "openruntimes/test:v5-1")
	imagesColdStart(t, x, "gc-b", "openruntimes/test:v4-1")
	if !imagesExists(recA) || !imagesExists(recB) {
		t.Fatal("image records missing after the cold starts")
	}
	// A GC run removes the record before it moves the layers out: the
	// record's absence alone does not say the run is over, its log line
	// (written at the end) does.
	gcRuns := func() int { return strings.Count(x.logs.String(), "image garbage collection removed unused images") }
	runs := gcRuns()
	if r := x.request(t, "DELETE", "/v1/runtimes/gc-a", nil, nil); r.status != 200 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	imagesWaitFor(t, 15*time.Second, "GC of the unused v5-1", func() bool { return !imagesExists(recA) && gcRuns() > runs })
	// A later GC run while gc-b keeps v4-1 in use: seen by its removing
	// v5-1 once more, used and let go by gc-c in the meantime (a run that
	// removes nothing leaves no trace to wait for).
	imagesColdStart(t, x, "gc-c", "openruntimes/test:v5-1")
	if !imagesExists(recA) {
		t.Fatal("no image record after pulling v5-1 again")
	}
	runs = gcRuns()
	if r := x.request(t, "DELETE", "/v1/runtimes/gc-c", nil, nil); r.status != 200 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	imagesWaitFor(t, 15*time.Second, "GC of v5-1 again", func() bool { return !imagesExists(recA) && gcRuns() > runs })
	if !imagesExists(recB) || !imagesExists(recKeep) {
		t.Fatalf("GC removed an image in use (%v) or a pre-pulled one (%v)", !imagesExists(recB), !imagesExists(recKeep))
	}
	// Only the layers of the remaining images are left.
	want := map[string]bool{}
	for _, rec := range []string{recB, recKeep} {
		var r struct{ Layers []string }
		b, err := os.ReadFile(rec)
		if err != nil || json.Unmarshal(b, &r) != nil {
			t.Fatalf("record %s: %v", rec, err)
		}
		for _, l := range r.Layers {
			want[strings.TrimPrefix(l, "sha256:")] = true
		}
	}
	layerDirs, _ := filepath.Glob(filepath.Join(x.dataDir, "images", "layers*", "*"))
	var got []string
	for _, d := range layerDirs {
		got = append(got, filepath.Base(d))
		if !want[filepath.Base(d)] {
			t.Errorf("layer %s of no remaining image is left", d)
		}
	}
	if len(got) != len(want) {
		t.Errorf("layers %v, want %v", got, want)
	}
	if !strings.Contains(x.logs.String(), "image garbage collection removed unused images") {
		t.Errorf("GC did not log what it removed")
	}
	// The runtime in use still works, and its image still serves a new runtime.
	if r := x.request(t, "POST", "/v1/runtimes/gc-b/executions", map[string]any{"path": "/echo"}, jsonAccept); r.status != 200 {
		t.Fatalf("warm execution of gc-b: %d %s", r.status, r.body)
	}
	if r := x.request(t, "DELETE", "/v1/runtimes/gc-b", nil, nil); r.status != 200 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	imagesWaitFor(t, 15*time.Second, "GC of v4-1 after its runtime went", func() bool { return !imagesExists(recB) })
	if !imagesExists(recKeep) {
		t.Error("the pre-pulled image was collected")
	}
	x.waitClean(t)
}

func imagesWaitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A runtime that needs an image still being pre-pulled at start waits for
// that pull instead of starting another: each blob is fetched once.
func TestImagesPrePullSharedWithColdStart(t *testing.T) {
	reg := imagesRegistry(t, "")
	image := reg.Addr() + "/prepull/a:v5-1"
	imagesPush(t, "v5-1", image)
	layers, err := testenv.LayoutLayers(imagesLayout("v5-1"), "v5-1")
	if err != nil {
		t.Fatal(err)
	}
	x := startExecutor(t, "CONTAINERS_REGISTRIES_CONF="+imagesRegistriesConf(t, reg.Addr()), "OPR_EXECUTOR_IMAGES="+image)
	imagesColdStart(t, x, "prepulled", image)
	for _, d := range layers {
		if n := reg.BlobGets(d.String()); n != 1 {
			t.Errorf("layer %s downloaded %d times, want once", d, n)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(x.logs.String(), "[ImagePuller] Pulled 1/1 images.") {
		if time.Now().After(deadline) {
			t.Fatalf("no pre-pull progress in the log")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if r := x.request(t, "DELETE", "/v1/runtimes/prepulled", nil, nil); r.status != 200 {
		t.Fatalf("delete: %d", r.status)
	}
	x.waitClean(t)
}

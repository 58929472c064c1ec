package e2e

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"golang.org/x/sys/unix"

	"executor/tests/testenv"
)

// TestS3Storage runs the executor against a real S3-compatible server
// (testenv's Versity S3 Gateway): sources are read from a bucket, build
// artifacts and the build cache are written to it, and failures (a missing
// object, wrong credentials) come back as clear API errors without secrets.
func TestS3Storage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	bin, err := testenv.FindS3Server()
	if err != nil {
		t.Fatal(err) // .ci/run installs it; a missing server is a failure, not a skip
	}
	srv, err := testenv.StartS3(ctx, testenv.S3Config{Dir: t.TempDir(), Binary: bin})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop) // runs after the executors' cleanups
	const bucket = "e2e-functions"
	if err := srv.MakeBucket(ctx, bucket); err != nil {
		t.Fatal(err)
	}
	admin, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}

	// The function source, uploaded where a client (Appwrite) would put it.
	const (
		marker    = "s3-source-marker-7d1"
		sourceKey = "functions/app/code.tar.gz"
		sourceArg = "/" + sourceKey // the path as a client names it in `source`
	)
	tarball := filepath.Join(t.TempDir(), "code.tar.gz")
	if err := testenv.MakeSourceTarball(tarball, map[string]string{"index.js": marker}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.FPutObject(ctx, bucket, sourceKey, tarball, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}

	x := startExecutor(t, "OPR_EXECUTOR_CONNECTION_STORAGE="+srv.DSN(bucket, srv.Access, srv.Secret))
	buildCommand := `tar -zxf /tmp/code.tar.gz -C /mnt/code && sh helpers/build.sh "echo installing"`

	var artifact string // the build's `path`
	ok := t.Run("build reads the source from the bucket and uploads the artifact", func(t *testing.T) {
		r := x.request(t, "POST", "/v1/runtimes", map[string]any{
			"runtimeId": "s3-build", "image": "openruntimes/test:v5-1", "source": sourceArg, "entrypoint": "index.js",
			"destination": "/builds/app", "remove": true, "command": buildCommand,
		}, nil)
		if r.status != 201 {
			t.Fatalf("build: %d %s", r.status, r.body)
		}
		res := r.json(t)
		artifact, _ = res["path"].(string)
		// §5.7/§9: bucket/<destination without leading slash>/<uniqid>.gz
		if !regexp.MustCompile(`^` + bucket + `/builds/app/[0-9a-f]{13}\.gz$`).MatchString(artifact) {
			t.Fatalf("artifact path %q, want %s/builds/app/<uniqid>.gz", artifact, bucket)
		}
		if out := buildOutput(t, res); !strings.Contains(out, "installing") || strings.Contains(out, "[build cache]") {
			t.Errorf("build output %q", out)
		}
		key := strings.TrimPrefix(artifact, bucket+"/")
		info, err := admin.StatObject(ctx, bucket, key, minio.StatObjectOptions{})
		if err != nil {
			t.Fatalf("the artifact is not in the bucket at %s: %v", key, err)
		}
		if size, _ := res["size"].(float64); info.Size != int64(size) || info.Size <= 0 {
			t.Errorf("object size %d, API size %v", info.Size, res["size"])
		}
		if got := artifactFile(t, ctx, admin, bucket, key, "index.js"); got != marker {
			t.Errorf("index.js in the uploaded artifact: %q, want %q", got, marker)
		}
		// Written atomically: the one object, no temporary ones beside it.
		if keys := listKeys(t, ctx, admin, bucket, "builds/"); len(keys) != 1 || keys[0] != key {
			t.Errorf("objects under builds/: %v, want only %s", keys, key)
		}
		x.waitClean(t) // remove=true
	})
	if !ok {
		t.FailNow()
	}

	t.Run("cold start from the uploaded artifact", func(t *testing.T) {
		r := x.request(t, "POST", "/v1/runtimes/s3-run/executions", execBody(artifact, nil), jsonAccept)
		if r.status != 200 {
			t.Fatalf("execution: %d %s", r.status, r.body)
		}
		res := r.json(t)
		var echo struct {
			Code string `json:"code"`
		}
		body, _ := res["body"].(string)
		if err := json.Unmarshal([]byte(body), &echo); err != nil {
			t.Fatalf("echo body %q: %v", body, err)
		}
		if res["statusCode"] != float64(200) || echo.Code != marker {
			t.Fatalf("runtime from the S3 artifact: statusCode %v, code %q, want %q", res["statusCode"], echo.Code, marker)
		}
		if r := x.request(t, "DELETE", "/v1/runtimes/s3-run", nil, nil); r.status != 200 {
			t.Fatalf("delete: %d %s", r.status, r.body)
		}
		x.waitClean(t)
	})

	t.Run("build cache round-trips through the bucket", func(t *testing.T) {
		const cacheKey = "s3-app-1.cache"
		cacheObject := "build-cache/" + cacheKey + "/lz4-b1M/stores.sqfs"
		build := func(id, command string) string {
			t.Helper()
			r := x.request(t, "POST", "/v1/runtimes", map[string]any{
				"runtimeId": id, "image": "openruntimes/test:v5-1", "cacheKey": cacheKey, "command": command, "remove": true,
			}, nil)
			if r.status != 201 {
				t.Fatalf("build %s: %d %s", id, r.status, r.body)
			}
			out := buildOutput(t, r.json(t))
			if strings.Contains(out, "[build cache] Warning") {
				t.Errorf("build %s: cache warning in %q", id, out)
			}
			return out
		}
		if out := build("s3-cache-1", `test -e /cache/stores.sqfs && echo cache-hit || echo cache-miss; echo cached-bytes-s3 > /cache/stores.sqfs`); !strings.Contains(out, "cache-miss") {
			t.Fatalf("first build: %q", out)
		}
		if _, err := admin.StatObject(ctx, bucket, cacheObject, minio.StatObjectOptions{}); err != nil {
			t.Fatalf("the build cache is not in the bucket at %s (%v); the bucket holds %v", cacheObject, err, listKeys(t, ctx, admin, bucket, ""))
		}
		if got := objectText(t, ctx, admin, bucket, cacheObject); got != "cached-bytes-s3\n" {
			t.Fatalf("cache object %s holds %q", cacheObject, got)
		}
		// Replace the entry in the bucket: the next build must get it from
		// there, not from anything the executor kept locally.
		const replaced = "replaced-in-bucket-e41\n"
		if _, err := admin.PutObject(ctx, bucket, cacheObject, strings.NewReader(replaced), int64(len(replaced)), minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
		if out := build("s3-cache-2", `cat /cache/stores.sqfs`); !strings.Contains(out, strings.TrimSpace(replaced)) {
			t.Fatalf("second build did not restore the cache from the bucket: %q", out)
		}
		x.waitClean(t)
	})

	t.Run("missing source object", func(t *testing.T) {
		const missing = "/functions/missing/code.tar.gz"
		for name, req := range map[string]struct {
			path string
			body map[string]any
		}{
			"build": {"/v1/runtimes", map[string]any{
				"runtimeId": "s3-missing", "image": "openruntimes/test:v5-1", "source": missing, "command": buildCommand, "remove": true,
			}},
			// A timeout past the client's 120 s: waiting for it fails the
			// request, so the failure must come from the missing source.
			"cold start": {"/v1/runtimes/s3-missing-run/executions", execBody(missing, map[string]any{"timeout": 600})},
		} {
			t.Run(name, func(t *testing.T) {
				r := x.request(t, "POST", req.path, req.body, jsonAccept)
				msg, _ := r.json(t)["message"].(string)
				if r.status != 500 || !strings.Contains(msg, "Failed to copy source code") || !strings.Contains(msg, missing) {
					t.Fatalf("got %d %s, want 500 naming %s", r.status, r.body, missing)
				}
				x.waitClean(t)
				if r := x.request(t, "GET", "/v1/runtimes", nil, nil); string(r.body) != "[]" {
					t.Fatalf("failed runtime still listed: %s", r.body)
				}
			})
		}
	})

	t.Run("wrong credentials", func(t *testing.T) {
		const wrongSecret = "wrong-secret-never-shown-93c5"
		bad := startExecutor(t, "OPR_EXECUTOR_CONNECTION_STORAGE="+srv.DSN(bucket, srv.Access, wrongSecret))
		noLeak := func(t *testing.T, what, text string) {
			t.Helper()
			for _, s := range []string{wrongSecret, srv.Secret} {
				if strings.Contains(text, s) {
					t.Errorf("%s shows a storage secret (%q):\n%s", what, s, text)
				}
			}
		}

		r := bad.request(t, "POST", "/v1/runtimes", map[string]any{
			"runtimeId": "s3-denied", "image": "openruntimes/test:v5-1", "source": sourceArg, "entrypoint": "index.js",
			"destination": "/builds/denied", "command": buildCommand, "remove": true,
		}, nil)
		msg, _ := r.json(t)["message"].(string)
		if r.status != 500 || !strings.Contains(msg, "Failed to copy source code") || !strings.Contains(msg, sourceArg) {
			t.Errorf("build with a source and wrong credentials: %d %s", r.status, r.body)
		}
		noLeak(t, "the response", string(r.body))
		bad.waitClean(t)

		// No source: the build runs, the cache is skipped with a warning and
		// the upload fails.
		r = bad.request(t, "POST", "/v1/runtimes", map[string]any{
			"runtimeId": "s3-denied-upload", "image": "openruntimes/test:v5-1", "cacheKey": "s3-denied.cache",
			"destination": "/builds/denied", "remove": true,
			"command": `mkdir -p /mnt/code && echo x > /mnt/code/index.js && cd /mnt/code && tar -czf code.tar.gz index.js && echo y > /cache/stores.sqfs`,
		}, nil)
		msg, _ = r.json(t)["message"].(string)
		if r.status != 500 || !strings.Contains(msg, "Failed to move built code to storage") {
			t.Errorf("build with wrong credentials for the upload: %d %s", r.status, r.body)
		}
		noLeak(t, "the response", string(r.body))
		bad.waitClean(t)

		var keys []string
		for _, k := range listKeys(t, ctx, admin, bucket, "") {
			if strings.Contains(k, "denied") {
				keys = append(keys, k)
			}
		}
		if len(keys) > 0 {
			t.Errorf("objects written with wrong credentials: %v", keys)
		}
		logs := bad.logs.String()
		noLeak(t, "the executor log", logs)
		if !strings.Contains(logs, "access denied") || !strings.Contains(logs, sourceArg) {
			t.Errorf("the executor log does not say that the storage refused the credentials for %s:\n%s", sourceArg, logs)
		}
	})

	if r := x.request(t, "GET", "/v1/runtimes", nil, nil); string(r.body) != "[]" {
		t.Errorf("runtimes left: %s", r.body)
	}
	x.waitClean(t)
	if strings.Contains(x.logs.String(), srv.Secret) {
		t.Errorf("the executor log shows the storage secret")
	}
}

// listKeys lists the keys in bucket under prefix.
func listKeys(t testing.TB, ctx context.Context, c *minio.Client, bucket, prefix string) []string {
	t.Helper()
	var keys []string
	for o := range c.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if o.Err != nil {
			t.Fatalf("list %s/%s: %v", bucket, prefix, o.Err)
		}
		keys = append(keys, o.Key)
	}
	return keys
}

// buildOutput joins the contents of a v5 build result's output entries.
func buildOutput(t testing.TB, res map[string]any) string {
	t.Helper()
	entries, ok := res["output"].([]any)
	if !ok {
		t.Fatalf("output is not an array: %v", res["output"])
	}
	var b strings.Builder
	for _, e := range entries {
		m, _ := e.(map[string]any)
		s, _ := m["content"].(string)
		b.WriteString(s)
	}
	return b.String()
}

// objectText reads a (small) object.
func objectText(t testing.TB, ctx context.Context, c *minio.Client, bucket, key string) string {
	t.Helper()
	o, err := c.GetObject(ctx, bucket, key, minio.GetObjectOptions{})
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer o.Close()
	b, err := io.ReadAll(o)
	if err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	return string(b)
}

// artifactFile returns the content of name in the gzip tarball stored at key.
func artifactFile(t testing.TB, ctx context.Context, c *minio.Client, bucket, key, name string) string {
	t.Helper()
	o, err := c.GetObject(ctx, bucket, key, minio.GetObjectOptions{})
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer o.Close()
	zr, err := gzip.NewReader(o)
	if err != nil {
		t.Fatalf("artifact %s is not gzip: %v", key, err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			t.Fatalf("artifact %s has no %s", key, name)
		}
		if err != nil {
			t.Fatalf("artifact %s: %v", key, err)
		}
		if path.Clean(strings.TrimPrefix(h.Name, "./")) == name {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return string(b)
		}
	}
}

// The local device keeps to OPR_EXECUTOR_STORAGE_ROOTS (default /storage and
// /tmp): a source or destination elsewhere is a 400 naming the rule and the
// setting before anything is read, made or built; beneath a root, links that
// lead out, FIFOs, devices and directories are refused without being
// followed or waited on; and nothing is left behind.
func TestLocalStorageRoots(t *testing.T) {
	x := startExecutor(t)
	const canaryText = "HOST-CANARY-never-to-be-read-5b2"
	// A host file outside the roots, and what any host user can plant in
	// /tmp (the test's storage dir is there) to reach it.
	canaryDir, err := os.MkdirTemp("/var/tmp", "executor-e2e-canary-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(canaryDir) })
	canary := filepath.Join(canaryDir, "code.tar.gz")
	noErr(t, os.WriteFile(canary, []byte(canaryText), 0o600))
	dir, err := os.MkdirTemp(shared.storage, "planted-")
	noErr(t, err)
	noErr(t, os.Symlink("/etc/shadow", filepath.Join(dir, "shadow-link.tar.gz")))
	noErr(t, os.Symlink("/proc/self/environ", filepath.Join(dir, "environ-link.tar.gz")))
	noErr(t, os.Symlink(canary, filepath.Join(dir, "canary-link.tar.gz")))
	noErr(t, os.Symlink(strings.Repeat("../", 16)+strings.TrimPrefix(canary, "/"), filepath.Join(dir, "climbing-link.tar.gz")))
	noErr(t, os.Symlink("/dev/zero", filepath.Join(dir, "zero-link.tar.gz")))
	noErr(t, os.Symlink(canaryDir, filepath.Join(dir, "dir-link")))
	noErr(t, unix.Mkfifo(filepath.Join(dir, "fifo.tar.gz"), 0o666))
	noErr(t, os.Mkdir(filepath.Join(dir, "dir.tar.gz"), 0o755))
	const outside = " is outside the storage roots (OPR_EXECUTOR_STORAGE_ROOTS=/storage,/tmp)"

	sources := []struct {
		name, source, want string
	}{
		{"host shadow file", "/etc/shadow", "/etc/shadow" + outside},
		{"daemon environment", "/proc/self/environ", "/proc/self/environ" + outside},
		{"host device", "/dev/zero", "/dev/zero" + outside},
		{"host file beside the roots", canary, canary + outside},
		{"link to /etc/shadow", dir + "/shadow-link.tar.gz", "leads out of its storage root /tmp through a symbolic link"},
		{"link to /proc/self/environ", dir + "/environ-link.tar.gz", "leads out of its storage root /tmp"},
		{"link to a host file", dir + "/canary-link.tar.gz", "leads out of its storage root /tmp"},
		{"relative link climbing out", dir + "/climbing-link.tar.gz", "leads out of its storage root /tmp"},
		{"link to /dev/zero", dir + "/zero-link.tar.gz", "leads out of its storage root /tmp"},
		{"through a linked directory", dir + "/dir-link/code.tar.gz", "leads out of its storage root /tmp"},
		{"FIFO", dir + "/fifo.tar.gz", "is not a regular file"},
		{"directory", dir + "/dir.tar.gz", "is not a regular file"},
	}
	for _, tc := range sources {
		t.Run("source "+tc.name, func(t *testing.T) {
			for route, req := range map[string]struct {
				path string
				body map[string]any
			}{
				"build": {"/v1/runtimes", map[string]any{"runtimeId": "roots-build", "image": "openruntimes/test:v5-1",
					"source": tc.source, "command": "true", "remove": true}},
				"cold start": {"/v1/runtimes/roots-run/executions", execBody(tc.source, nil)},
			} {
				r := x.request(t, "POST", req.path, req.body, jsonAccept)
				e := r.json(t)
				msg, _ := e["message"].(string)
				if r.status != 400 || e["type"] != "runtime_failed" || !strings.HasPrefix(msg, "Failed to copy source code to temporary directory: ") ||
					!strings.Contains(msg, tc.source) || !strings.Contains(msg, tc.want) {
					t.Errorf("%s: %d %s; want 400 runtime_failed naming %s and %q", route, r.status, r.body, tc.source, tc.want)
				}
				if strings.Contains(string(r.body), canaryText) || strings.Contains(string(r.body), secret) {
					t.Errorf("%s: the reply shows host data: %s", route, r.body)
				}
				x.waitClean(t)
				if r := x.request(t, "GET", "/v1/runtimes", nil, nil); string(r.body) != "[]" {
					t.Fatalf("%s: failed runtime still listed: %s", route, r.body)
				}
			}
		})
	}
	if st, err := os.Lstat(filepath.Join(dir, "fifo.tar.gz")); err != nil || st.Mode().Type() != fs.ModeNamedPipe {
		t.Errorf("the FIFO changed: %v, %v", st, err)
	}

	// A missing file beneath a root that this host may not have (/storage)
	// is the reference's "does not exist", not a refusal.
	missing := fmt.Sprintf("/storage/executor-e2e-missing-%d/code.tar.gz", os.Getpid())
	r := x.request(t, "POST", "/v1/runtimes/roots-missing/executions", execBody(missing, nil), jsonAccept)
	if msg, _ := r.json(t)["message"].(string); r.status != 500 || !strings.Contains(msg, missing+" does not exist") {
		t.Errorf("missing source under /storage: %d %s", r.status, r.body)
	}
	x.waitClean(t)

	// Destinations outside the roots fail before the build: `exit 3` would
	// otherwise be the answer.
	rootFile := fmt.Sprintf("/root/executor-e2e-%d", os.Getpid())
	for _, dest := range []string{"/etc", rootFile + "/builds", "/proc/self", canaryDir} {
		t.Run("destination "+dest, func(t *testing.T) {
			r := x.request(t, "POST", "/v1/runtimes", map[string]any{
				"runtimeId": "roots-dest", "image": "openruntimes/test:v5-1", "command": "exit 3",
				"destination": dest, "remove": true,
			}, nil)
			e := r.json(t)
			want := "Failed to move built code to storage: " + dest + outside
			if r.status != 400 || e["type"] != "build_failed" || e["message"] != want {
				t.Errorf("%d %s; want 400 build_failed %q", r.status, r.body, want)
			}
			x.waitClean(t)
		})
	}
	if _, err := os.Lstat(rootFile); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s was made: %v", rootFile, err)
	}
	artifactName := regexp.MustCompile(`^[0-9a-f]{13}\.gz$`)
	for _, d := range []string{"/etc", canaryDir} {
		ents, err := os.ReadDir(d)
		noErr(t, err)
		for _, e := range ents {
			if artifactName.MatchString(e.Name()) || strings.HasPrefix(e.Name(), ".tmp-") {
				t.Errorf("written into %s: %s", d, e.Name())
			}
		}
	}

	// A destination beneath a root that leads out through a link is
	// refused when the artifact is written: the build ran, nothing lands
	// at the link's target.
	src := source(t, map[string]string{"index.js": "built-code"})
	buildCommand := `tar -zxf /tmp/code.tar.gz -C /mnt/code && sh helpers/build.sh "echo installing"`
	r = x.request(t, "POST", "/v1/runtimes", map[string]any{
		"runtimeId": "roots-link-dest", "image": "openruntimes/test:v5-1", "source": src, "command": buildCommand,
		"destination": dir + "/dir-link/builds", "remove": true,
	}, nil)
	if msg, _ := r.json(t)["message"].(string); r.status != 400 || !strings.Contains(msg, "leads out of its storage root /tmp") {
		t.Errorf("destination through a link out: %d %s", r.status, r.body)
	}
	x.waitClean(t)
	if ents, _ := os.ReadDir(canaryDir); len(ents) != 1 {
		t.Errorf("written beside the canary: %v", ents)
	}
	if b, _ := os.ReadFile(canary); string(b) != canaryText {
		t.Errorf("the canary changed: %q", b)
	}

	// Beneath a root everything works as before; what is made there is the
	// daemon's alone (directories 0700, artifacts 0600).
	dest := filepath.Join(dir, "builds", "app")
	r = x.request(t, "POST", "/v1/runtimes", map[string]any{
		"runtimeId": "roots-ok", "image": "openruntimes/test:v5-1", "source": src, "entrypoint": "index.js",
		"command": buildCommand, "destination": dest, "remove": true,
	}, nil)
	if r.status != 201 {
		t.Fatalf("build beneath a root: %d %s", r.status, r.body)
	}
	artifact, _ := r.json(t)["path"].(string)
	if filepath.Dir(artifact) != dest || !artifactName.MatchString(filepath.Base(artifact)) {
		t.Fatalf("artifact %q", artifact)
	}
	for p, want := range map[string]fs.FileMode{filepath.Join(dir, "builds"): fs.ModeDir | 0o700, dest: fs.ModeDir | 0o700, artifact: 0o600} {
		if st, err := os.Lstat(p); err != nil || st.Mode() != want {
			t.Errorf("%s: %v, %v; want mode %v", p, st, err, want)
		}
	}
	if ents, _ := os.ReadDir(dest); len(ents) != 1 {
		t.Errorf("beside the artifact: %v", ents)
	}
	x.waitClean(t)
	r = x.request(t, "POST", "/v1/runtimes/roots-from-artifact/executions", execBody(artifact, nil), jsonAccept)
	if r.status != 200 {
		t.Fatalf("cold start from the artifact: %d %s", r.status, r.body)
	}
	var echo struct {
		Code string `json:"code"`
	}
	_ = json.Unmarshal([]byte(r.json(t)["body"].(string)), &echo)
	if echo.Code != "built-code" {
		t.Fatalf("the runtime sees code %q", echo.Code)
	}
}

// OPR_EXECUTOR_STORAGE_ROOTS replaces the defaults: /tmp is then outside.
// A value that is not a list of absolute directories stops the daemon with a
// message naming the variable.
func TestLocalStorageRootsSetting(t *testing.T) {
	root, err := os.MkdirTemp("/var/tmp", "executor-e2e-roots-")
	noErr(t, err)
	t.Cleanup(func() { os.RemoveAll(root) })
	inRoot := filepath.Join(root, "fn", "code.tar.gz")
	noErr(t, os.MkdirAll(filepath.Dir(inRoot), 0o700))
	noErr(t, testenv.MakeSourceTarball(inRoot, map[string]string{"index.js": "from-custom-root"}))

	x := startExecutor(t, "OPR_EXECUTOR_STORAGE_ROOTS="+root)
	inTmp := source(t, map[string]string{"index.js": "x"})
	r := x.request(t, "POST", "/v1/runtimes/custom-tmp/executions", execBody(inTmp, nil), jsonAccept)
	want := inTmp + " is outside the storage roots (OPR_EXECUTOR_STORAGE_ROOTS=" + root + ")"
	if msg, _ := r.json(t)["message"].(string); r.status != 400 || !strings.Contains(msg, want) {
		t.Errorf("source under /tmp with other roots: %d %s; want 400 %q", r.status, r.body, want)
	}
	x.waitClean(t)
	r = x.request(t, "POST", "/v1/runtimes/custom-root/executions", execBody(inRoot, nil), jsonAccept)
	if r.status != 200 || !strings.Contains(r.json(t)["body"].(string), "from-custom-root") {
		t.Fatalf("source under the configured root: %d %s", r.status, r.body)
	}

	for _, bad := range []string{"storage", "/", "/storage,/tmp/../etc", inRoot} {
		cmd := exec.Command(shared.bin)
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "OPR_EXECUTOR_ENV=development", "OPR_EXECUTOR_LISTEN=127.0.0.1:0",
			"OPR_EXECUTOR_DATA_DIR=" + filepath.Join(t.TempDir(), "data"), "OPR_EXECUTOR_NETWORK=e2e-bad-roots",
			"OPR_EXECUTOR_CGROUP_PARENT=/executor-e2e-bad-roots", "OPR_EXECUTOR_STORAGE_ROOTS=" + bad}
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "OPR_EXECUTOR_STORAGE_ROOTS") {
			t.Errorf("OPR_EXECUTOR_STORAGE_ROOTS=%s: exit %v, output:\n%s", bad, err, out)
		}
	}
}

// noErr fails the test at once on an error of its setup.
func noErr(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

package e2e

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

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
			"cold start": {"/v1/runtimes/s3-missing-run/executions", execBody(missing, nil)},
		} {
			t.Run(name, func(t *testing.T) {
				start := time.Now()
				r := x.request(t, "POST", req.path, req.body, jsonAccept)
				msg, _ := r.json(t)["message"].(string)
				if r.status != 500 || !strings.Contains(msg, "Failed to copy source code") || !strings.Contains(msg, missing) {
					t.Fatalf("got %d %s, want 500 naming %s", r.status, r.body, missing)
				}
				if d := time.Since(start); d > 10*time.Second {
					t.Errorf("the failure took %v", d)
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

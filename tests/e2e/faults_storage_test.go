package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"golang.org/x/sys/unix"

	"executor/tests/testenv"
)

// gatedBuild is a build command that packs the artifact, makes /tmp/built
// and waits for /tmp/go before it ends: the test breaks the destination in
// between, so that the fault hits the upload itself.
const gatedBuild = `tar -zxf /tmp/code.tar.gz -C /mnt/code && sh helpers/build.sh "echo packed" && touch /tmp/built && while [ ! -e /tmp/go ]; do sleep 0.05; done`

// openBuildGate lets a gatedBuild of x's one runtime go on.
func openBuildGate(t *testing.T, x *executor) {
	t.Helper()
	built := runtimeFile(x, "built")
	if built == "" {
		t.Fatal("no gated build is waiting")
	}
	if err := os.WriteFile(filepath.Join(filepath.Dir(built), "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

// startGatedBuild sends a gatedBuild as runtime id and returns once the
// artifact is packed, with the channel its answer comes on.
func startGatedBuild(t *testing.T, x *executor, body map[string]any) <-chan *response {
	t.Helper()
	body["command"] = gatedBuild
	body["timeout"] = 120
	answer := make(chan *response, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r, err := hostileRequest(x, "POST", "/v1/runtimes", body, jsonAccept, faultLimit)
		if err != nil {
			r = &response{status: -1, body: []byte(err.Error())}
		}
		answer <- r
	}()
	// A test that fails before it opens the gate must not leave the build
	// waiting: the daemon's stop would wait for it (the drain timeout).
	t.Cleanup(func() {
		if p := runtimeFile(x, "built"); p != "" {
			_ = os.WriteFile(filepath.Join(filepath.Dir(p), "go"), nil, 0o644)
		}
	})
	waitRuntimeFile(t, x, "built", done)
	return answer
}

// TestFaultsS3Down: the S3 service goes away during a build (its upload
// fails) and stays away for a cold start (its source download fails). Both
// fail with a clear error, within the request's time; once S3 is back, the
// daemon serves from it again, and nothing is left.
func TestFaultsS3Down(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin, err := testenv.FindS3Server()
	if err != nil {
		t.Fatal(err) // .ci/run installs it
	}
	srv, err := testenv.StartS3(ctx, testenv.S3Config{Dir: t.TempDir(), Binary: bin})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	const bucket = "e2e-faults"
	noErr(t, srv.MakeBucket(ctx, bucket))
	admin, err := srv.Client()
	noErr(t, err)
	const sourceKey = "functions/faults/code.tar.gz"
	tarball := filepath.Join(t.TempDir(), "code.tar.gz")
	noErr(t, testenv.MakeSourceTarball(tarball, map[string]string{"index.js": "from-s3"}))
	_, err = admin.FPutObject(ctx, bucket, sourceKey, tarball, minio.PutObjectOptions{})
	noErr(t, err)

	proxy := startSwitchProxy(t, srv.Addr, nil)
	dsn := strings.Replace(srv.DSN(bucket, srv.Access, srv.Secret), url.QueryEscape(srv.URL()), url.QueryEscape("http://"+proxy.addr), 1)
	if !strings.Contains(dsn, url.QueryEscape(proxy.addr)) {
		t.Fatalf("DSN %s does not name the proxy", dsn)
	}
	x := startExecutor(t, "OPR_EXECUTOR_CONNECTION_STORAGE="+dsn)

	t.Run("during upload", func(t *testing.T) {
		answer := startGatedBuild(t, x, map[string]any{"runtimeId": "s3-upload", "image": "openruntimes/test:v5-1",
			"source": "/" + sourceKey, "entrypoint": "index.js", "destination": "/builds/faults", "remove": true})
		proxy.down()
		openBuildGate(t, x)
		assertFault(t, <-answer, 500, "", "Failed to move built code to storage")
		if keys := listKeys(t, ctx, admin, bucket, "builds/"); len(keys) > 0 {
			t.Errorf("objects under builds/ after a failed upload: %v", keys)
		}
		x.waitClean(t)
	})
	t.Run("during source download", func(t *testing.T) {
		r := faultRequest(t, x, "POST", "/v1/runtimes/s3-source/executions", execBody("/"+sourceKey, nil))
		assertFault(t, r, 500, "", "Failed to copy source code to temporary directory")
		x.waitClean(t)
	})
	proxy.up()
	t.Run("serves once S3 is back", func(t *testing.T) {
		r := faultRequest(t, x, "POST", "/v1/runtimes/s3-back/executions", execBody("/"+sourceKey, nil))
		if r.status != 200 || !strings.Contains(fmt.Sprint(r.json(t)["body"]), "from-s3") {
			t.Fatalf("execution from S3 once it is back: %d %.2000s", r.status, r.body)
		}
		deleteRuntime(t, x, "s3-back")
	})
}

// loopFS is a small ext4 file system on a loop device, mounted at dir.
type loopFS struct{ dir string }

func mountLoopFS(t *testing.T, dir string, size int64) *loopFS {
	t.Helper()
	img := filepath.Join(t.TempDir(), "fs.img")
	f, err := os.Create(img)
	noErr(t, err)
	noErr(t, f.Truncate(size))
	noErr(t, f.Close())
	// -m 0: no blocks reserved for root (the daemon is root).
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-m", "0", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	noErr(t, os.MkdirAll(dir, 0o711))
	if out, err := exec.Command("mount", "-o", "loop", img, dir).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v\n%s", err, out)
	}
	noErr(t, os.Chmod(dir, 0o711))
	return &loopFS{dir: dir}
}

// unmount detaches the file system (its loop device goes with it).
func (l *loopFS) unmount(t *testing.T) {
	if err := unix.Unmount(l.dir, 0); err != nil {
		t.Errorf("unmount %s: %v", l.dir, err)
	}
}

// fill takes all but about leave bytes of the file system's free space,
// until the returned function gives it back.
func (l *loopFS) fill(t *testing.T, leave int64) func() {
	t.Helper()
	p := filepath.Join(l.dir, "filler")
	f, err := os.Create(p)
	noErr(t, err)
	defer f.Close()
	var st unix.Statfs_t
	noErr(t, unix.Statfs(l.dir, &st))
	// The file system's own metadata needs blocks too: allocate most at
	// once, then write the rest until it is full enough or full.
	if free := int64(st.Bavail) * st.Bsize; free > leave+(4<<20) {
		noErr(t, unix.Fallocate(int(f.Fd()), 0, 0, free-leave-(4<<20)))
	}
	if _, err := f.Seek(0, io.SeekEnd); err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	for {
		noErr(t, unix.Statfs(l.dir, &st))
		if int64(st.Bavail)*st.Bsize <= leave {
			break
		}
		if _, err := f.Write(chunk); err != nil {
			if errors.Is(err, unix.ENOSPC) {
				break
			}
			t.Fatal(err)
		}
	}
	noErr(t, f.Sync())
	return func() {
		if err := os.Remove(p); err != nil {
			t.Errorf("remove the filler: %v", err)
		}
	}
}

// TestFaultsDiskFull: the file system of the data dir (and of a storage
// root) fills up during an image's unpacking, a source's copy and a build's
// upload. Each fails with a clear error, leaves nothing half-made, and once
// space is back the daemon serves.
func TestFaultsDiskFull(t *testing.T) {
	mnt := filepath.Join(shared.data, fmt.Sprintf("faults-disk-%d", os.Getpid()))
	var fs *loopFS
	// Registered first, so it runs after the executor's own cleanup.
	t.Cleanup(func() {
		if fs != nil {
			fs.unmount(t)
		}
		os.RemoveAll(mnt)
	})
	fs = mountLoopFS(t, mnt, 192<<20)
	storageRoot := filepath.Join(mnt, "storage")
	noErr(t, os.MkdirAll(storageRoot, 0o755))
	x := startExecutor(t, "OPR_EXECUTOR_DISK_LIMIT=0", "OPR_EXECUTOR_STORAGE_ROOTS=/tmp,"+storageRoot)
	// Moved onto the small file system: the harness checks leftovers there.
	x.stop()
	x.dataDir = filepath.Join(mnt, "data")
	x.env = append(x.env, "OPR_EXECUTOR_DATA_DIR="+x.dataDir)
	x.start()
	src := source(t, map[string]string{"index.js": "x"})

	t.Run("during unpack", func(t *testing.T) {
		release := fs.fill(t, 1<<20)
		r := faultRequest(t, x, "POST", "/v1/runtimes/disk-unpack/executions", execBody(src, nil))
		release()
		assertFault(t, r, 500, "", "failed to pull it")
		if ents, _ := os.ReadDir(filepath.Join(x.dataDir, "images", "tmp")); len(ents) > 0 {
			t.Errorf("half-unpacked layers left in images/tmp: %v", ents)
		}
		x.waitClean(t)
		assertServesFresh(t, x, src)
	})
	t.Run("during source copy", func(t *testing.T) {
		big := source(t, map[string]string{"index.js": "x", "blob.bin": randomText(t, 8<<20)})
		release := fs.fill(t, 1<<20)
		r := faultRequest(t, x, "POST", "/v1/runtimes/disk-source/executions", execBody(big, nil))
		release()
		assertFault(t, r, 500, "", "Failed to copy source code to temporary directory: the executor's data dir is out of space")
		x.waitClean(t)
		assertServesFresh(t, x, src)
	})
	t.Run("during upload", func(t *testing.T) {
		big := source(t, map[string]string{"index.js": "x", "blob.bin": randomText(t, 8<<20)})
		answer := startGatedBuild(t, x, map[string]any{"runtimeId": "disk-upload", "image": "openruntimes/test:v5-1",
			"source": big, "entrypoint": "index.js", "destination": storageRoot + "/builds", "remove": true})
		release := fs.fill(t, 0)
		openBuildGate(t, x)
		r := <-answer
		release()
		assertFault(t, r, 500, "", "Failed to move built code to storage")
		if ents, _ := os.ReadDir(filepath.Join(storageRoot, "builds")); len(ents) > 0 {
			t.Errorf("a partial artifact was left at the destination: %v", ents)
		}
		x.waitClean(t)
		assertServesFresh(t, x, src)
	})
}

// randomText is n bytes that gzip cannot shrink much.
func randomText(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	f, err := os.Open("/dev/urandom")
	noErr(t, err)
	defer f.Close()
	_, err = io.ReadFull(f, b)
	noErr(t, err)
	return string(b)
}

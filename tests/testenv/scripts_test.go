package testenv

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The helper scripts only matter if they work on the image's busybox ash, so
// these tests unpack the image into a directory and run the executor's real
// build and start commands chrooted into it (root only; no namespaces needed).

// unpackImage applies the layers of the layout's image to a fresh directory,
// honouring whiteouts the way a container engine does.
func unpackImage(t *testing.T, layoutDir string) string {
	t.Helper()
	root := t.TempDir()
	var index struct {
		Manifests []struct{ Digest string } `json:"manifests"`
	}
	readJSONFile(t, filepath.Join(layoutDir, "index.json"), &index)
	var manifest struct {
		Layers []struct{ Digest string } `json:"layers"`
	}
	readJSONFile(t, blobPath(layoutDir, index.Manifests[0].Digest), &manifest)
	for _, l := range manifest.Layers {
		applyLayer(t, root, blobPath(layoutDir, l.Digest))
	}
	return root
}

func blobPath(layoutDir, digest string) string {
	alg, hex, _ := strings.Cut(digest, ":")
	return filepath.Join(layoutDir, "blobs", alg, hex)
}

func applyLayer(t *testing.T, root, blob string) {
	t.Helper()
	f, err := os.Open(blob)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Clean(hdr.Name)
		target := filepath.Join(root, name)
		dir, base := filepath.Split(target)
		switch {
		case base == ".wh..wh..opq":
			entries, _ := os.ReadDir(dir)
			for _, e := range entries {
				_ = os.RemoveAll(filepath.Join(dir, e.Name()))
			}
			continue
		case strings.HasPrefix(base, ".wh."):
			_ = os.RemoveAll(filepath.Join(dir, strings.TrimPrefix(base, ".wh.")))
			continue
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(target, hdr.FileInfo().Mode()); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			_ = os.Remove(target)
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(target, b, hdr.FileInfo().Mode().Perm()); err != nil {
				t.Fatal(err)
			}
		case tar.TypeSymlink:
			_ = os.Remove(target)
			if err := os.Symlink(hdr.Linkname, target); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("unexpected tar type %c for %s", hdr.Typeflag, hdr.Name)
		}
	}
}

func readJSONFile(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("decode %s: %v", path, err)
	}
}

// chrootRun runs `sh -c script` inside root with a clean environment, the way
// the executor runs build and start commands.
func chrootRun(t *testing.T, root, workDir, script string, env ...string) (string, int) {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.Dir = workDir
	cmd.Env = append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root"}, env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return out.String(), 0
	case errors.As(err, &exitErr):
		return out.String(), exitErr.ExitCode()
	default:
		t.Fatalf("run %q: %v", script, err)
		return "", -1
	}
}

func requireChroot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("these tests need root for chroot (CI runs as root)")
	}
}

// tarMembers lists the files of a (possibly uncompressed) tarball.
func tarMembers(t *testing.T, path string) (names []string, gzipped bool) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var r io.Reader = bytes.NewReader(b)
	if zr, err := gzip.NewReader(bytes.NewReader(b)); err == nil {
		r, gzipped = zr, true
	}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("read %s: %v", path, err)
		}
		if hdr.Typeflag != tar.TypeDir {
			names = append(names, strings.TrimPrefix(hdr.Name, "./"))
		}
	}
	sort.Strings(names)
	return names, gzipped
}

func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

const (
	buildCommand = `tar -zxf /tmp/code.tar.gz -C /mnt/code && bash helpers/build.sh "%s"`
	startCommand = `cp /tmp/code.tar.gz /mnt/code/code.tar.gz && nohup helpers/start.sh "%s"`
)

func TestHelperScriptsBuildAndStart(t *testing.T) {
	requireChroot(t)
	layout := buildTestImage(t, ImageOptions{Protocol: ProtocolV5, WithBash: true})
	source := filepath.Join(t.TempDir(), "code.tar.gz")
	if err := MakeSourceTarball(source, map[string]string{
		"index.js": "module.exports = 'hello';\n",
		".env":     "dotfile\n",
		"lib/a.js": "a\n",
		"other.js": "other\n",
	}); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name        string
		install     string
		env         []string
		wantExit    int
		wantOutput  []string
		wantMembers []string // of the artifact; nil skips the check
		wantGzip    bool
		start       string // start command's server command; "" skips starting
		wantStart   string
	}{
		{
			name:        "gzip artifact with dotfiles",
			install:     "echo installing && touch installed",
			env:         []string{"OPEN_RUNTIMES_ENTRYPOINT=index.js"},
			wantOutput:  []string{"Environment preparation started.", "installing", "Build finished."},
			wantMembers: []string{".env", ".open-runtimes", "index.js", "installed", "lib/a.js", "other.js"},
			wantGzip:    true,
			// The entrypoint saved at build time overrides the start-time one.
			start:     `cat src/function/index.js && echo entry=\$OPEN_RUNTIMES_ENTRYPOINT && pwd`,
			wantStart: "module.exports = 'hello';\nentry=index.js\n/usr/local/server\n",
		},
		{
			name:        "uncompressed output directory",
			install:     "mkdir -p dist && cp other.js dist/index.js",
			env:         []string{"OPEN_RUNTIMES_ENTRYPOINT=index.js", "OPEN_RUNTIMES_BUILD_COMPRESSION=none", "OPEN_RUNTIMES_OUTPUT_DIRECTORY=./dist"},
			wantOutput:  []string{"Build finished."},
			wantMembers: []string{".open-runtimes", "index.js"},
			wantGzip:    false,
			start:       `cat src/function/index.js`,
			wantStart:   "other\n",
		},
		{
			name:       "failing install command",
			install:    "echo before-failure && exit 3",
			wantExit:   3,
			wantOutput: []string{"Environment preparation started.", "before-failure"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := unpackImage(t, layout)
			copyFile(t, source, filepath.Join(root, "tmp/code.tar.gz"))
			if err := os.MkdirAll(filepath.Join(root, "mnt/code"), 0o755); err != nil {
				t.Fatal(err)
			}

			out, code := chrootRun(t, root, "/usr/local/server", strings.ReplaceAll(buildCommand, "%s", tt.install), tt.env...)
			if code != tt.wantExit {
				t.Fatalf("build exit = %d, want %d; output:\n%s", code, tt.wantExit, out)
			}
			for _, want := range tt.wantOutput {
				if !strings.Contains(out, want) {
					t.Errorf("build output lacks %q:\n%s", want, out)
				}
			}
			if tt.wantExit != 0 {
				if strings.Contains(out, "Build finished.") {
					t.Errorf("failed build printed Build finished.")
				}
				return
			}
			artifact := filepath.Join(root, "mnt/code/code.tar.gz")
			members, gz := tarMembers(t, artifact)
			if strings.Join(members, ",") != strings.Join(tt.wantMembers, ",") {
				t.Errorf("artifact members = %q, want %q", members, tt.wantMembers)
			}
			if gz != tt.wantGzip {
				t.Errorf("artifact gzipped = %v, want %v", gz, tt.wantGzip)
			}

			// Execution: the executor mounts the artifact at /tmp/code.tar.gz
			// and a fresh /mnt/code.
			copyFile(t, artifact, filepath.Join(root, "tmp/code.tar.gz"))
			if err := os.RemoveAll(filepath.Join(root, "mnt/code")); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(filepath.Join(root, "mnt/code"), 0o755); err != nil {
				t.Fatal(err)
			}
			out, code = chrootRun(t, root, "/usr/local/server", strings.ReplaceAll(startCommand, "%s", tt.start),
				"OPEN_RUNTIMES_ENTRYPOINT=other.js")
			if code != 0 || out != tt.wantStart {
				t.Fatalf("start exit %d, output %q; want 0 and %q", code, out, tt.wantStart)
			}
		})
	}
}

func TestHelperScriptsV2Build(t *testing.T) {
	requireChroot(t)
	layout := buildTestImage(t, ImageOptions{Protocol: ProtocolV2, WithBash: true})
	root := unpackImage(t, layout)
	if err := MakeSourceTarball(filepath.Join(root, "tmp/code.tar.gz"), map[string]string{"index.js": "v2\n"}); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "usr/code"), 0o755); err != nil {
		t.Fatal(err)
	}
	out, code := chrootRun(t, root, "/usr/code", "tar -zxf /tmp/code.tar.gz -C /usr/code && cd /usr/local/src/ && ./build.sh")
	if code != 0 {
		t.Fatalf("v2 build exit %d:\n%s", code, out)
	}
	members, gz := tarMembers(t, filepath.Join(root, "usr/code/code.tar.gz"))
	if !gz || strings.Join(members, ",") != "index.js" {
		t.Fatalf("v2 artifact = %q (gzip %v), want [index.js] gzipped", members, gz)
	}
}

func TestImageShells(t *testing.T) {
	requireChroot(t)
	tests := []struct {
		name     string
		withBash bool
		wantExit int
	}{
		{"with bash", true, 0},
		{"without bash", false, 127},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := unpackImage(t, buildTestImage(t, ImageOptions{Protocol: ProtocolV5, WithBash: tt.withBash}))
			out, code := chrootRun(t, root, "/", `bash -c 'echo $((1+2))' && nohup echo ok`)
			if code != tt.wantExit {
				t.Fatalf("exit = %d, want %d; output %q", code, tt.wantExit, out)
			}
			if tt.wantExit == 0 && out != "3\nok\n" {
				t.Fatalf("output = %q, want 3 and ok", out)
			}
			// Whatever the shell, the applied whiteouts leave only the new files.
			for path, want := range map[string]bool{
				WhiteoutRemovedPath: false, WhiteoutKeptPath: true, OpaqueOldFile: false, OpaqueNewFile: true,
			} {
				_, err := os.Stat(filepath.Join(root, path))
				if (err == nil) != want {
					t.Errorf("%s exists = %v, want %v", path, err == nil, want)
				}
			}
		})
	}
}

// TestServerRunsInImage starts the static runtime server on the image's
// busybox root through helpers/start.sh and checks what it sees there.
func TestServerRunsInImage(t *testing.T) {
	requireChroot(t)
	root := unpackImage(t, buildTestImage(t, ImageOptions{Protocol: ProtocolV5, WithBash: true}))
	port, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	// exec keeps one process from sh to the server, so SIGTERM reaches it.
	cmd := exec.Command("/bin/sh", "-c", `helpers/start.sh "exec ./runtime-server -protocol v5 -listen `+addr+` -logs-dir /tmp"`)
	cmd.Dir = "/usr/local/server"
	cmd.Env = []string{"PATH=/usr/bin:/bin", "OPEN_RUNTIMES_SECRET=s"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitErr := make(chan error, 1)
	go func() { waitErr <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-waitErr
	})

	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "HTTP server successfully started!\n" {
		t.Fatalf("first line = %q (%v)", line, err)
	}

	tests := []struct {
		path string
		want string
	}{
		{OpaqueDir, `"entries":["new.txt"]`},
		{"/opt", `"entries":["kept.txt","opaque"]`},
		{ImageMarkerPath, `"content":"v5\n"`},
		{WhiteoutRemovedPath, `"exists":false`},
	}
	for _, tt := range tests {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/fs?path="+tt.path, nil)
		req.Header.Set("x-open-runtimes-secret", "s")
		req.Header.Set("x-open-runtimes-logging", "disabled")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET /fs?path=%s: %v", tt.path, err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK || !strings.Contains(string(body), tt.want) {
			t.Errorf("/fs?path=%s = %d %s, want it to contain %s", tt.path, res.StatusCode, body, tt.want)
		}
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-waitErr:
		waitErr <- err // for the cleanup
		if err != nil {
			t.Fatalf("server exit after SIGTERM: %v, want status 0", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("server did not stop on SIGTERM")
	}
}

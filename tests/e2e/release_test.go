package e2e

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// The release (make release) is what a host with neither Go nor libseccomp
// runs: these tests build it once with the Makefile's own target, then check
// that it is static, that it runs in a root holding nothing but itself, and
// that its daemon serves a cold start with the default seccomp profile.

var releaseBuild struct {
	once    sync.Once
	dir     string
	version string
	err     error
}

// releaseDist runs `make release` into a directory of the e2e work dir (removed
// with it) once per test binary and returns that directory.
func releaseDist(t *testing.T) (dir, version string) {
	t.Helper()
	releaseBuild.once.Do(func() {
		root, err := moduleRoot()
		if err != nil {
			releaseBuild.err = err
			return
		}
		dir := filepath.Join(shared.work, "dist")
		version := fmt.Sprintf("e2e-release-%d", os.Getpid())
		cmd := makeCommand(root, "release", "DIST="+dir, "VERSION="+version)
		if out, err := cmd.CombinedOutput(); err != nil {
			releaseBuild.err = fmt.Errorf("make release: %v\n%s", err, out)
			return
		}
		releaseBuild.dir, releaseBuild.version = dir, version
	})
	if releaseBuild.err != nil {
		t.Fatal(releaseBuild.err)
	}
	return releaseBuild.dir, releaseBuild.version
}

// makeCommand runs make in the module root with the test's environment, less
// what would change the Makefile's variables behind the test's back: a make
// running this test (make test) passes its flags and overrides down.
func makeCommand(root string, args ...string) *exec.Cmd {
	cmd := exec.Command("make", append([]string{"-C", root}, args...)...)
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch name {
		case "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "GNUMAKEFLAGS",
			"DESTDIR", "PREFIX", "BINDIR", "DOCDIR", "MANDIR", "UNITDIR", "GENERATE_SECRET", "BIN", "DIST", "VERSION":
			continue
		}
		cmd.Env = append(cmd.Env, kv)
	}
	return cmd
}

// The three binaries are static: no program interpreter (the dynamic loader),
// no shared library needed. executor and executor-spawn are static PIEs
// (ASLR kept, as runc's releases are), so they have a dynamic section, for
// their own relocations only.
// SHA256SUMS lists each with its digest.
func TestReleaseIsStatic(t *testing.T) {
	dir, _ := releaseDist(t)
	sums := readSHA256SUMS(t, filepath.Join(dir, "SHA256SUMS"))
	if len(sums) != 3 {
		t.Errorf("SHA256SUMS lists %d files, want executor, executor-init and executor-spawn: %v", len(sums), sums)
	}
	for _, tc := range []struct {
		name string
		typ  elf.Type
	}{
		{"executor", elf.ET_DYN},       // static PIE
		{"executor-spawn", elf.ET_DYN}, // static PIE
		{"executor-init", elf.ET_EXEC}, // Go without cgo
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name)
			f, err := elf.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if f.Type != tc.typ {
				t.Errorf("ELF type %v, want %v", f.Type, tc.typ)
			}
			for _, p := range f.Progs {
				if p.Type == elf.PT_INTERP {
					t.Errorf("has a program interpreter (PT_INTERP): dynamically linked")
				}
			}
			libs, err := f.ImportedLibraries()
			if err != nil {
				t.Fatal(err)
			}
			if len(libs) > 0 {
				t.Errorf("needs shared libraries %v", libs)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(b)
			if got := sums[tc.name]; got != hex.EncodeToString(sum[:]) {
				t.Errorf("SHA256SUMS says %q, the file's digest is %x", got, sum)
			}
		})
	}
}

// readSHA256SUMS reads sha256sum's output: file name to hex digest.
func readSHA256SUMS(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sums := map[string]string{}
	line := regexp.MustCompile(`^([0-9a-f]{64})  (\S+)$`)
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		m := line.FindStringSubmatch(sc.Text())
		if m == nil {
			t.Fatalf("SHA256SUMS line %q is not sha256sum's", sc.Text())
		}
		sums[m[2]] = m[1]
	}
	return sums
}

// The release runs in a root holding nothing but its binaries: no libc,
// no libseccomp, no dynamic loader. The dynamically linked test build, run
// the same way, must fail there, or the root would prove nothing.
func TestReleaseRunsWithoutLibc(t *testing.T) {
	dir, version := releaseDist(t)
	root := t.TempDir()
	for _, name := range []string{"executor", "executor-init", "executor-spawn"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, name), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	chroot := func(t *testing.T, args ...string) (string, error) {
		cmd := exec.Command("chroot", append([]string{root}, args...)...)
		cmd.Env = []string{} // nothing from this host: no PATH, no OPR_EXECUTOR_*
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"/executor", "--version"}, "executor " + version + "\n"},
		{[]string{"/executor", "version"}, "executor " + version + "\n"},
		{[]string{"/executor", "--help"}, "Usage:\n"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			out, err := chroot(t, tc.args...)
			if err != nil || !strings.HasPrefix(out, tc.want) {
				t.Fatalf("exit %v, output %q, want it to start with %q", err, out, tc.want)
			}
		})
	}
	t.Run("executor-spawn", func(t *testing.T) {
		// Run by hand it refuses, which it can say only once it runs.
		out, err := chroot(t, "/executor-spawn", "x")
		if err == nil || !strings.Contains(out, "executor-spawn: takes no arguments") {
			t.Fatalf("exit %v, output %q", err, out)
		}
	})
	t.Run("dynamic build fails there", func(t *testing.T) {
		f, err := elf.Open(shared.bin)
		if err != nil {
			t.Fatal(err)
		}
		dynamic := false
		for _, p := range f.Progs {
			dynamic = dynamic || p.Type == elf.PT_INTERP
		}
		f.Close()
		if !dynamic {
			t.Skipf("%s (EXECUTOR_BIN) is static itself: no dynamic build to compare with", shared.bin)
		}
		b, err := os.ReadFile(shared.bin)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, "executor-dynamic"), b, 0o755); err != nil {
			t.Fatal(err)
		}
		if out, err := chroot(t, "/executor-dynamic", "--version"); err == nil {
			t.Fatalf("the dynamic build ran in a root without libc: %q", out)
		}
	})
}

// The release's daemon serves a cold start, with executor-init and
// executor-spawn found beside it and moby's default seccomp profile loaded by
// the statically linked libseccomp: the runtime's PID 1 runs under a seccomp
// filter.
func TestReleaseDaemonColdStart(t *testing.T) {
	dir, _ := releaseDist(t)
	// startExecutor runs shared.bin; tests run one at a time, and the daemon
	// is started by the time this returns to the default below.
	dynamic := shared.bin
	shared.bin = filepath.Join(dir, "executor")
	t.Cleanup(func() { shared.bin = dynamic })
	x := startExecutor(t)
	if x.cmd.Path != filepath.Join(dir, "executor") {
		t.Fatalf("the daemon runs %s, not the release", x.cmd.Path)
	}
	src := source(t, map[string]string{"index.js": "static-release-marker"})
	r := x.request(t, "POST", "/v1/runtimes/static/executions", execBody(src, map[string]any{"path": "/echo"}), jsonAccept)
	if r.status != 200 {
		t.Fatalf("cold execution: %d %s\n%s", r.status, r.body, x.logs.String())
	}
	res := r.json(t)
	if res["statusCode"] != float64(200) || !strings.Contains(res["body"].(string), "static-release-marker") {
		t.Fatalf("execution result: %s", r.body)
	}
	if strings.Contains(x.logs.String(), "install executor-spawn") {
		t.Errorf("the release's daemon did not start its containers through its executor-spawn:\n%s", x.logs.String())
	}
	for _, tc := range []struct {
		name, command, want string
	}{
		{"seccomp filter on PID 1", "grep '^Seccomp:' /proc/1/status", "Seccomp:\t2"},
		{"no_new_privs on PID 1", "grep '^NoNewPrivs:' /proc/1/status", "NoNewPrivs:\t1"},
		{"PID 1 is executor-init", "cat /proc/1/comm", "executor-init"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, status := command(t, x, "static", tc.command)
			if status != 200 || !strings.Contains(out, tc.want) {
				t.Fatalf("%s: %d %q, want %q", tc.command, status, out, tc.want)
			}
		})
	}
}

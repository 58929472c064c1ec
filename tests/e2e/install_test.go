package e2e

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// make install DESTDIR=... lays out exactly what a host needs, for each
// PREFIX: the two binaries side by side, the unit pointing at them, the
// environment file (private, its secret never the example's, never written
// over an existing one) and the documentation; make uninstall takes it all
// back but the environment file. The binaries are the release's (BIN=), so
// the test leaves the tree's bin/ alone.
func TestInstallLayout(t *testing.T) {
	dist, version := releaseDist(t)
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	unit := readString(t, filepath.Join(root, "contrib/executor.service"))
	exampleEnv := readString(t, filepath.Join(root, "contrib/executor.env"))
	readme := readString(t, filepath.Join(root, "README.md"))
	help, err := exec.Command(filepath.Join(dist, "executor"), "--help").Output()
	if err != nil {
		t.Fatalf("executor --help: %v", err)
	}
	const ownEnv = "# the operator's own\nOPR_EXECUTOR_SECRET=kept-as-it-is\n"
	const envFile = "etc/executor/executor.env"
	for _, tc := range []struct {
		name      string
		vars      []string
		ownEnv    bool   // an environment file is there before
		bin, unit string // where binaries and unit go, under DESTDIR
		doc, man  string
		secret    *regexp.Regexp // the new environment file's OPR_EXECUTOR_SECRET line
	}{
		{name: "default prefix", bin: "usr/local/bin", unit: "etc/systemd/system",
			doc: "usr/local/share/doc/executor", man: "usr/local/share/man/man8",
			// Staged for a package: no key every host would share.
			secret: regexp.MustCompile(`^OPR_EXECUTOR_SECRET=$`)},
		{name: "prefix /usr", vars: []string{"PREFIX=/usr"}, bin: "usr/bin", unit: "usr/lib/systemd/system",
			doc: "usr/share/doc/executor", man: "usr/share/man/man8",
			secret: regexp.MustCompile(`^OPR_EXECUTOR_SECRET=$`)},
		{name: "prefix /opt/executor", vars: []string{"PREFIX=/opt/executor"}, bin: "opt/executor/bin", unit: "etc/systemd/system",
			doc: "opt/executor/share/doc/executor", man: "opt/executor/share/man/man8",
			secret: regexp.MustCompile(`^OPR_EXECUTOR_SECRET=$`)},
		{name: "generated secret", vars: []string{"GENERATE_SECRET=yes"}, bin: "usr/local/bin", unit: "etc/systemd/system",
			doc: "usr/local/share/doc/executor", man: "usr/local/share/man/man8",
			secret: regexp.MustCompile(`^OPR_EXECUTOR_SECRET=[0-9a-f]{32}$`)},
		{name: "existing environment file kept", vars: []string{"GENERATE_SECRET=yes"}, ownEnv: true,
			bin: "usr/local/bin", unit: "etc/systemd/system", doc: "usr/local/share/doc/executor", man: "usr/local/share/man/man8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dest := t.TempDir()
			if tc.ownEnv {
				if err := os.MkdirAll(filepath.Join(dest, "etc/executor"), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dest, envFile), []byte(ownEnv), 0o640); err != nil {
					t.Fatal(err)
				}
			}
			vars := append([]string{"DESTDIR=" + dest, "BIN=" + dist}, tc.vars...)
			if out, err := makeCommand(root, append([]string{"install"}, vars...)...).CombinedOutput(); err != nil {
				t.Fatalf("make install: %v\n%s", err, out)
			}

			// Exactly these files, with these modes.
			want := map[string]fs.FileMode{
				tc.bin + "/executor":          0o755,
				tc.bin + "/executor-init":     0o755,
				tc.bin + "/executor-spawn":    0o755,
				tc.unit + "/executor.service": 0o644,
				envFile:                       0o600,
				tc.doc + "/README.md":         0o644,
				tc.doc + "/executor.env":      0o644,
				tc.doc + "/executor-help.txt": 0o644,
				tc.man + "/executor.8":        0o644,
			}
			if tc.ownEnv {
				want[envFile] = 0o640
			}
			got := installedFiles(t, dest)
			for name, mode := range want {
				if m, ok := got[name]; !ok {
					t.Errorf("%s not installed", name)
				} else if m != mode {
					t.Errorf("%s has mode %v, want %v", name, m, mode)
				}
			}
			for name := range got {
				if _, ok := want[name]; !ok {
					t.Errorf("%s installed, not expected", name)
				}
			}

			// The binaries are the release's, and run from there.
			for _, name := range []string{"executor", "executor-init", "executor-spawn"} {
				if !bytes.Equal(readBytes(t, filepath.Join(dest, tc.bin, name)), readBytes(t, filepath.Join(dist, name))) {
					t.Errorf("%s/%s is not the release's %s", tc.bin, name, name)
				}
			}
			if out, err := exec.Command(filepath.Join(dest, tc.bin, "executor"), "--version").Output(); err != nil ||
				!strings.HasPrefix(string(out), "executor "+version+"\n") {
				t.Errorf("installed executor --version: %v %q", err, out)
			}

			// The unit is contrib's, started from where the binary went.
			gotUnit := readString(t, filepath.Join(dest, tc.unit, "executor.service"))
			if gotUnit != strings.ReplaceAll(unit, "/usr/local/bin", "/"+tc.bin) {
				t.Errorf("installed unit differs from contrib/executor.service beyond its binary's path:\n%s", gotUnit)
			}
			if !slices.Contains(strings.Split(gotUnit, "\n"), "ExecStart=/"+tc.bin+"/executor") {
				t.Errorf("installed unit has no ExecStart=/%s/executor", tc.bin)
			}

			// The environment file: the example with a secret of its own, or
			// the operator's own untouched.
			gotEnv := readString(t, filepath.Join(dest, envFile))
			if tc.ownEnv {
				if gotEnv != ownEnv {
					t.Errorf("existing environment file overwritten:\n%s", gotEnv)
				}
			} else {
				checkEnvFile(t, gotEnv, exampleEnv, tc.secret)
			}

			// The documentation.
			if readString(t, filepath.Join(dest, tc.doc, "README.md")) != readme {
				t.Error("installed README.md differs from the tree's")
			}
			if readString(t, filepath.Join(dest, tc.doc, "executor.env")) != exampleEnv {
				t.Error("installed example executor.env differs from contrib's")
			}
			if readString(t, filepath.Join(dest, tc.doc, "executor-help.txt")) != string(help) {
				t.Error("installed executor-help.txt is not executor --help")
			}
			man := readString(t, filepath.Join(dest, tc.man, "executor.8"))
			if !strings.HasPrefix(man, ".TH EXECUTOR 8") || !strings.Contains(man, "\n.nf\nUsage:\n") {
				t.Errorf("executor.8 is not a man page around --help:\n%s", man)
			}

			// make uninstall: everything but the environment file goes.
			if out, err := makeCommand(root, append([]string{"uninstall"}, vars...)...).CombinedOutput(); err != nil {
				t.Fatalf("make uninstall: %v\n%s", err, out)
			}
			left := installedFiles(t, dest)
			if len(left) != 1 || left[envFile] == 0 {
				t.Errorf("after make uninstall: %v, want only %s", left, envFile)
			}
			if readString(t, filepath.Join(dest, envFile)) != gotEnv {
				t.Error("make uninstall changed the environment file")
			}
		})
	}

	// Bad input: a clear error, and nothing installed.
	for _, tc := range []struct {
		name string
		vars []string
		want string
	}{
		{"bad GENERATE_SECRET", []string{"BIN=" + dist, "GENERATE_SECRET=maybe"}, "GENERATE_SECRET must be yes or no"},
		{"no binaries", []string{"BIN=" + t.TempDir()}, "to install"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dest := t.TempDir()
			out, err := makeCommand(root, append([]string{"install", "DESTDIR=" + dest}, tc.vars...)...).CombinedOutput()
			if err == nil || !strings.Contains(string(out), tc.want) {
				t.Fatalf("make install: %v, output:\n%s\nwant a failure saying %q", err, out, tc.want)
			}
			if ents, _ := os.ReadDir(dest); len(ents) > 0 {
				t.Errorf("a failed make install left %v in DESTDIR", ents)
			}
		})
	}
}

// checkEnvFile checks that an installed environment file is the example
// line for line but its OPR_EXECUTOR_SECRET line, which matches secret.
func checkEnvFile(t *testing.T, got, example string, secret *regexp.Regexp) {
	t.Helper()
	gl, el := strings.Split(got, "\n"), strings.Split(example, "\n")
	if len(gl) != len(el) {
		t.Fatalf("environment file has %d lines, the example %d:\n%s", len(gl), len(el), got)
	}
	seen := false
	for i := range gl {
		if strings.HasPrefix(el[i], "OPR_EXECUTOR_SECRET=") {
			seen = true
			if !secret.MatchString(gl[i]) {
				t.Errorf("secret line %q, want %v", gl[i], secret)
			}
			if gl[i] == el[i] {
				t.Errorf("the example's secret %q was installed as it is", el[i])
			}
			continue
		}
		if gl[i] != el[i] {
			t.Errorf("line %d: %q, the example's is %q", i+1, gl[i], el[i])
		}
	}
	if !seen {
		t.Error("the example has no OPR_EXECUTOR_SECRET line")
	}
}

// installedFiles lists the regular files under dir, relative, with their
// permission bits; anything else but directories is an error.
func installedFiles(t *testing.T, dir string) map[string]fs.FileMode {
	t.Helper()
	files := map[string]fs.FileMode{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		info, err := d.Info()
		if err != nil {
			return err
		}
		if !info.Mode().IsRegular() {
			t.Errorf("%s is not a regular file: %v", rel, info.Mode())
		}
		files[rel] = info.Mode().Perm()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func readBytes(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func readString(t *testing.T, path string) string { return string(readBytes(t, path)) }

package images

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"executor/tests/testenv"
)

// sandbox is a temp dir with a layer directory ("dest") and, beside it, a
// directory the layer must not be able to touch ("outside").
type sandbox struct {
	base, dest, outside string
}

func newSandbox(t testing.TB) sandbox {
	t.Helper()
	base := t.TempDir()
	sb := sandbox{base: base, dest: filepath.Join(base, "dest"), outside: filepath.Join(base, "outside")}
	for _, d := range []string{sb.dest, sb.outside, filepath.Join(sb.outside, "sub")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(sb.outside, "secret"), []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	return sb
}

// hostPaths are host files a broken unpacker would most likely reach.
var hostPaths = []string{"/etc/passwd", "/etc", "/x", "/escape", "/pwned", "/tmp/pwned"}

// lockHostEtc holds off the tests that change /etc (the rootless tests'
// accounts, another package run in parallel) while a snapshot of hostPaths
// is compared.
func lockHostEtc(t testing.TB) func() {
	t.Helper()
	unlock, err := testenv.LockHostEtc()
	if err != nil {
		t.Fatal(err)
	}
	return unlock
}

// snapshot describes everything outside dest: what a layer must never change.
func (sb sandbox) snapshot(t testing.TB) map[string]string {
	t.Helper()
	out := map[string]string{}
	describe := func(path string) {
		fi, err := os.Lstat(path)
		if err != nil {
			out[path] = "absent"
			return
		}
		st := fi.Sys().(*syscall.Stat_t)
		desc := fmt.Sprintf("mode=%v uid=%d gid=%d nlink=%d size=%d mtime=%d", fi.Mode(), st.Uid, st.Gid, st.Nlink, st.Size, st.Mtim.Nano())
		if fi.Mode().IsRegular() && fi.Size() < 1<<20 {
			data, _ := os.ReadFile(path)
			desc += fmt.Sprintf(" sha=%x", sha256.Sum256(data))
		}
		if fi.Mode()&fs.ModeSymlink != 0 {
			link, _ := os.Readlink(path)
			desc += " link=" + link
		}
		buf := make([]byte, 1024)
		names, _ := listXattrs(path, &buf)
		slices.Sort(names)
		desc += " xattrs=" + strings.Join(names, ",")
		out[path] = desc
	}
	filepath.WalkDir(sb.base, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if path == sb.dest {
			return filepath.SkipDir
		}
		describe(path)
		return nil
	})
	for _, p := range hostPaths {
		describe(p)
	}
	return out
}

func (sb sandbox) assertUntouched(t testing.TB, before map[string]string) {
	t.Helper()
	after := sb.snapshot(t)
	for p, b := range before {
		if a := after[p]; a != b {
			t.Errorf("%s changed:\n before %s\n after  %s", p, b, a)
		}
	}
	for p, a := range after {
		if _, ok := before[p]; !ok {
			t.Errorf("%s appeared outside the layer: %s", p, a)
		}
	}
}

func TestUnpackHostileLayers(t *testing.T) {
	requireRoot(t)
	type check func(t *testing.T, sb sandbox)
	exists := func(rel string) check {
		return func(t *testing.T, sb sandbox) {
			if _, err := os.Lstat(filepath.Join(sb.dest, rel)); err != nil {
				t.Errorf("%s should have been written inside the layer: %v", rel, err)
			}
		}
	}
	tests := []struct {
		name    string
		entries func(sb sandbox) []entry
		wantErr bool
		check   check
	}{
		{name: "dot-dot name", wantErr: true, entries: func(sandbox) []entry {
			return []entry{file("../escape", "x")}
		}},
		{name: "dot-dot inside a name", wantErr: true, entries: func(sandbox) []entry {
			return []entry{dir("a/"), file("a/../../escape", "x")}
		}},
		{name: "absolute name climbing above root", check: exists("x"), entries: func(sandbox) []entry {
			return []entry{file("/abs/../../x", "x")}
		}},
		{name: "absolute symlink then write through it", entries: func(sb sandbox) []entry {
			return []entry{symlink("link", sb.outside), file("link/pwned", "x")}
		}, check: func(t *testing.T, sb sandbox) {
			// securejoin keeps the absolute target but roots it at the layer.
			exists(filepath.Join(sb.outside, "pwned"))(t, sb)
		}},
		{name: "relative escaping symlink then write through it", check: exists("outside/pwned"), entries: func(sandbox) []entry {
			return []entry{symlink("link", "../../../../outside"), file("link/pwned", "x")}
		}},
		{name: "symlink to /tmp then write through it", check: exists("tmp/pwned"), entries: func(sandbox) []entry {
			return []entry{symlink("t", "/tmp"), file("t/pwned", "x")}
		}},
		{name: "file replacing a symlink to an outside file", entries: func(sb sandbox) []entry {
			return []entry{symlink("s", filepath.Join(sb.outside, "secret")), file("s", "overwritten")}
		}},
		{name: "hard link to /etc/passwd", wantErr: true, entries: func(sandbox) []entry {
			return []entry{hardlink("pw", "/etc/passwd")}
		}},
		{name: "hard link climbing out", wantErr: true, entries: func(sandbox) []entry {
			return []entry{hardlink("pw", "../outside/secret")}
		}},
		{name: "hard link through a symlink", wantErr: true, entries: func(sb sandbox) []entry {
			return []entry{symlink("l", sb.outside), hardlink("h", "l/secret")}
		}},
		{name: "hard link to an escaping symlink, then written", entries: func(sb sandbox) []entry {
			return []entry{symlink("s", filepath.Join(sb.outside, "secret")), hardlink("h", "s"), file("h", "overwritten")}
		}},
		{name: "whiteout through a symlink", entries: func(sb sandbox) []entry {
			return []entry{symlink("d", sb.outside), {name: "d/.wh.secret", typ: tar.TypeReg}}
		}},
		{name: "opaque marker through a symlink", entries: func(sb sandbox) []entry {
			return []entry{symlink("d", sb.outside), {name: "d/.wh..wh..opq", typ: tar.TypeReg}}
		}},
		{name: "directory later replaced by an escaping symlink", entries: func(sb sandbox) []entry {
			return []entry{{name: "d", typ: tar.TypeDir, mode: 0o777}, symlink("d", sb.outside)}
		}},
		{name: "xattrs on an escaping symlink", entries: func(sb sandbox) []entry {
			return []entry{{name: "s", typ: tar.TypeSymlink, link: filepath.Join(sb.outside, "secret"), xattrs: map[string]string{"trusted.evil": "1"}}}
		}},
		{name: "root entry as a symlink", wantErr: true, entries: func(sb sandbox) []entry {
			return []entry{symlink("./", sb.outside)}
		}},
		{name: "symlink loop", wantErr: true, entries: func(sandbox) []entry {
			return []entry{symlink("a", "b"), symlink("b", "a"), file("a/x", "x")}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sb := newSandbox(t)
			unlock := lockHostEtc(t)
			defer unlock()
			before := sb.snapshot(t)
			_, err := unpackLayer(bytes.NewReader(buildTar(t, tt.entries(sb)...)), sb.dest, unpackOptions{})
			t.Logf("unpack: %v", err)
			if (err != nil) != tt.wantErr {
				t.Errorf("err = %v, wantErr %v", err, tt.wantErr)
			}
			sb.assertUntouched(t, before)
			if tt.check != nil && err == nil {
				tt.check(t, sb)
			}
		})
	}
}

func TestUnpackWhiteoutsAndXattrs(t *testing.T) {
	requireRoot(t)
	sb := newSandbox(t)
	_, err := unpackLayer(bytes.NewReader(buildTar(t,
		dir("etc/"), entry{name: "etc/.wh.passwd", typ: tar.TypeReg},
		dir("opq/"), entry{name: "opq/.wh..wh..opq", typ: tar.TypeReg}, file("opq/kept", "x"),
		entry{name: "redirect", typ: tar.TypeDir, mode: 0o755, xattrs: map[string]string{
			"trusted.overlay.redirect": "/etc", "trusted.overlay.origin": "x", "user.overlay.redirect": "/etc", "user.kept": "1",
		}},
		entry{name: "fake-opaque", typ: tar.TypeDir, mode: 0o755, xattrs: map[string]string{"trusted.overlay.opaque": "x"}},
		entry{name: "meta", typ: tar.TypeReg, mode: 0o644, xattrs: map[string]string{"trusted.overlay.metacopy": ""}},
		entry{name: "cap", typ: tar.TypeReg, mode: 0o755, xattrs: map[string]string{"security.capability": string(netRawCap)}},
	)), sb.dest, unpackOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(filepath.Join(sb.dest, "etc/passwd")); err != nil || !isWhiteout(fi) {
		t.Errorf("AUFS whiteout not converted: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(sb.dest, "etc/.wh.passwd")); err == nil {
		t.Error("AUFS whiteout file kept")
	}
	if !isOpaqueDir(filepath.Join(sb.dest, "opq"), overlayXattrs{}) {
		t.Error("opaque marker not converted")
	}
	if _, err := os.Lstat(filepath.Join(sb.dest, "opq/.wh..wh..opq")); err == nil {
		t.Error("opaque marker file kept")
	}
	buf := make([]byte, 1024)
	for path, want := range map[string][]string{
		"redirect":    {"user.kept"},
		"fake-opaque": nil,
		"meta":        nil,
		"cap":         {"security.capability"},
	} {
		got, err := listXattrs(filepath.Join(sb.dest, path), &buf)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s xattrs = %v, want %v", path, got, want)
		}
	}
}

// netRawCap is a VFS_CAP_REVISION_2 security.capability granting cap_net_raw (as ping has).
var netRawCap = []byte{0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}

// Device nodes are left out of the layer store (a hard link to one too),
// with their count reported for the one warning per layer; overlay
// whiteouts (0/0), FIFOs and setuid bits are kept as the image says.
func TestUnpackLeavesOutDevices(t *testing.T) {
	requireRoot(t)
	sb := newSandbox(t)
	st, err := unpackLayer(bytes.NewReader(buildTar(t,
		dir("dev/"),
		entry{name: "dev/null", typ: tar.TypeChar, mode: 0o666, major: 1, minor: 3},
		entry{name: "dev/sda", typ: tar.TypeBlock, mode: 0o660, major: 8, minor: 0},
		entry{name: "mem-link", typ: tar.TypeLink, link: "dev/sda"},
		entry{name: "whiteout", typ: tar.TypeChar, mode: 0o600},
		entry{name: "fifo", typ: tar.TypeFifo, mode: 0o600},
		entry{name: "su", typ: tar.TypeReg, mode: 0o4755, body: "x"},
		entry{name: "sg", typ: tar.TypeReg, mode: 0o2755, body: "x", uid: 1000},
	)), sb.dest, unpackOptions{budget: newPullBudget(DefaultSizeLimit, DefaultMaxEntries)})
	if err != nil {
		t.Fatal(err)
	}
	if st.devices != 3 || st.firstDevice != "dev/null" {
		t.Errorf("stats = %+v, want 3 devices left out, dev/null first", st)
	}
	for _, name := range []string{"dev/null", "dev/sda", "mem-link"} {
		if _, err := os.Lstat(filepath.Join(sb.dest, name)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s was created: %v", name, err)
		}
	}
	if fi, err := os.Lstat(filepath.Join(sb.dest, "dev")); err != nil || !fi.IsDir() {
		t.Errorf("dev/ itself should stay: %v", err)
	}
	if fi, err := os.Lstat(filepath.Join(sb.dest, "whiteout")); err != nil || !isWhiteout(fi) {
		t.Errorf("overlay whiteout not kept: %v", err)
	}
	if fi, err := os.Lstat(filepath.Join(sb.dest, "fifo")); err != nil || fi.Mode()&fs.ModeNamedPipe == 0 {
		t.Errorf("fifo: %v", err)
	}
	if fi, err := os.Lstat(filepath.Join(sb.dest, "su")); err != nil || fi.Mode()&fs.ModeSetuid == 0 {
		t.Errorf("setuid bit not kept: %v", err)
	}
	if fi, err := os.Lstat(filepath.Join(sb.dest, "sg")); err != nil || fi.Mode()&fs.ModeSetgid == 0 || fi.Sys().(*syscall.Stat_t).Gid != 1000 {
		t.Errorf("setgid bit or group not kept: %v", err)
	}
	// Nothing in the whole layer is a device but the whiteout.
	filepath.WalkDir(sb.dest, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type()&(fs.ModeDevice|fs.ModeCharDevice) != 0 && p != filepath.Join(sb.dest, "whiteout") {
			t.Errorf("device node %s in the layer", p)
		}
		return nil
	})
}

// FuzzUnpack feeds arbitrary tar streams to the unpacker and checks that
// nothing outside the layer directory changes. Inputs are tars of several KiB,
// which the fuzzer's default minimisation (up to a minute per new input) makes
// look stalled; cap it:
//
//	go test -tags containers_image_openpgp,containers_image_storage_stub -run '^$' \
//	    -fuzz FuzzUnpack -fuzzminimizetime 2s -fuzztime 5m ./images/
func FuzzUnpack(f *testing.F) {
	if os.Geteuid() != 0 {
		f.Skip("needs root")
	}
	seeds := [][]entry{
		{file("../escape", "x")},
		{symlink("link", "../outside"), file("link/pwned", "x")},
		{symlink("link", "/tmp"), file("link/pwned", "x")},
		{symlink("s", "../outside/secret"), file("s", "overwritten")},
		{hardlink("pw", "/etc/passwd")},
		{symlink("s", "../outside/secret"), hardlink("h", "s"), file("h", "x")},
		{symlink("d", "../outside"), {name: "d/.wh.secret", typ: tar.TypeReg}},
		{symlink("d", "../outside"), {name: "d/.wh..wh..opq", typ: tar.TypeReg}},
		{{name: "d", typ: tar.TypeDir, mode: 0o777}, symlink("d", "../outside")},
		{dir("a/"), file("a/b", "x"), {name: "a/.wh.b", typ: tar.TypeReg}, symlink("a/c", "/"), hardlink("a/d", "a/b")},
	}
	for _, s := range seeds {
		f.Add(buildTar(f, s...))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		sb := newSandbox(t)
		unlock := lockHostEtc(t)
		defer unlock()
		before := sb.snapshot(t)
		_, _ = unpackLayer(bytes.NewReader(data), sb.dest, unpackOptions{budget: newPullBudget(DefaultSizeLimit, DefaultMaxEntries)})
		sb.assertUntouched(t, before)
	})
}

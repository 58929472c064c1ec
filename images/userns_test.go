package images

import (
	"executor/tests/testenv"

	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/moby/sys/userns"
	"golang.org/x/sys/unix"

	"executor/oci"
)

// The daemon runs rootless as root of a user namespace (ns uid 0 is the
// user, ns uids 1..N its subuid range). These tests run the store there: a
// test starts its own test binary again in a new user and mount namespace
// and passes when the copy does. They need root to make the namespace with
// a range of ids, as CI has; they fail, never skip, when it cannot be made.

// usernsChildEnv names, in the copy started in a user namespace, the test
// it is to run.
const usernsChildEnv = "IMAGES_TEST_USERNS_CHILD"

// The test namespace's ids on the host: ns root is one id (the rootless
// user's), ns 1..65536 a range (its subuids), both unused on CI.
const (
	usernsRootHostID = 1_600_000_000
	usernsRangeHost  = 1_600_100_000
	usernsRangeSize  = 1 << 16
)

// inUserNS reports whether this process is the copy of the test binary
// started for t in a user namespace, where t does its work. In the
// original process it starts that copy, waits for it and fails t if the
// copy does not pass; t then has nothing more to do.
func inUserNS(t *testing.T) bool {
	t.Helper()
	if name := os.Getenv(usernsChildEnv); name != "" {
		if name != t.Name() {
			t.Fatalf("%s runs in the copy started for %s", t.Name(), name)
		}
		if !userns.RunningInUserNS() || os.Geteuid() != 0 {
			t.Fatalf("the copy started in a user namespace is not its root (uid %d)", os.Geteuid())
		}
		return true
	}
	requireRoot(t)
	// The copy is ns root, host id usernsRootHostID: it owns its temp
	// directory and nothing of the parent's (the test binary's directory
	// is root's, 0700), so the binary is linked into that directory too.
	tmp, err := os.MkdirTemp("", "images-userns-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })
	if err := os.Chown(tmp, usernsRootHostID, usernsRootHostID); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(tmp, "images.test")
	if err := os.Link(self, bin); err != nil {
		if err := testenv.CopyExecutable(self, bin); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(bin, "-test.run=^"+regexp.QuoteMeta(t.Name())+"$", "-test.v", "-test.count=1", "-test.timeout=5m")
	cmd.Dir = tmp
	var env []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); k != "TMPDIR" && k != "HOME" && k != "XDG_RUNTIME_DIR" && k != usernsChildEnv {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, usernsChildEnv+"="+t.Name(), "TMPDIR="+tmp, "HOME="+tmp, "XDG_RUNTIME_DIR="+tmp)
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS,
		UidMappings: []syscall.SysProcIDMap{
			{ContainerID: 0, HostID: usernsRootHostID, Size: 1},
			{ContainerID: 1, HostID: usernsRangeHost, Size: usernsRangeSize},
		},
		GidMappings: []syscall.SysProcIDMap{
			{ContainerID: 0, HostID: usernsRootHostID, Size: 1},
			{ContainerID: 1, HostID: usernsRangeHost, Size: usernsRangeSize},
		},
		// ns root, as the daemon is (a process keeps its host uid 0, unmapped there, until it sets one).
		Credential: &syscall.Credential{Uid: 0, Gid: 0, NoSetGroups: true},
		Pdeathsig:  syscall.SIGKILL,
	}
	out, err := cmd.CombinedOutput()
	t.Logf("in a user namespace (ns 0 = host %d, ns 1..%d = host %d..):\n%s",
		usernsRootHostID, usernsRangeSize, usernsRangeHost, out)
	if err != nil {
		t.Fatalf("%s in a user namespace: %v", t.Name(), err)
	}
	if !bytes.Contains(out, []byte("--- PASS: "+t.Name()+" ")) {
		t.Fatalf("%s in a user namespace did not run", t.Name())
	}
	return false
}

// recreatedImage has a layer that deletes a directory and makes it again
// (Docker's opaque marker), whiteouts in both forms, and overlay xattrs an
// image tries to plant, in both namespaces.
func recreatedImage() testImage {
	planted := map[string]string{
		"user.overlay.opaque": "y", "trusted.overlay.opaque": "y",
		"user.overlay.redirect": "/d", "trusted.overlay.redirect": "/d",
		"user.overlay.origin": "x", "user.kept": "1",
	}
	return testImage{layers: []testLayer{
		{compression: "gzip", entries: []entry{
			dir("d/"), file("d/old", "old"), dir("d/sub/"), file("d/sub/deep", "old"),
			dir("etc/"), file("etc/gone", "deleted above"), file("etc/chargone", "deleted above"), file("etc/kept", "kept"),
			dir("planted/"), file("planted/lower", "lower"),
			dir("keep/"), file("keep/a", "a"),
		}},
		{compression: "zstd", entries: []entry{
			// rm -rf /d && mkdir /d && echo new > /d/new
			dir("d/"), {name: "d/.wh..wh..opq", typ: tar.TypeReg}, file("d/new", "new"),
			dir("etc/"), {name: "etc/.wh.gone", typ: tar.TypeReg},
			// A whiteout already in overlay's form, as some tools write them.
			{name: "etc/chargone", typ: tar.TypeChar, mode: 0o600},
			{name: "planted/", typ: tar.TypeDir, mode: 0o755, xattrs: planted},
			file("planted/upper", "upper"),
			{name: "meta", typ: tar.TypeReg, mode: 0o644, body: "m", xattrs: map[string]string{
				"user.overlay.metacopy": "", "trusted.overlay.metacopy": "", "user.overlay.redirect": "/etc/kept",
			}},
		}},
	}}
}

// checkOverlayLayers pulls recreatedImage into s, mounts it with ov and
// checks the root the way a runtime sees it, and the layers' xattrs: the
// only overlayfs xattr there is the store's opaque marker on "d".
func checkOverlayLayers(t *testing.T, s *Store, ov overlaySupport) {
	ctx := context.Background()
	forceOverlay(s, ov)
	l := newLayout(t, t.TempDir())
	img, err := s.Pull(ctx, l.tag(l.image(recreatedImage()), "v1"))
	if err != nil {
		t.Fatal(err)
	}

	top := img.Layers[1]
	if !isOpaqueDir(filepath.Join(top, "d"), s.xattrs) {
		t.Errorf("layer dir d has no %s", s.xattrs.opaque())
	}
	if isOpaqueDir(filepath.Join(top, "planted"), s.xattrs) {
		t.Errorf("layer dir planted kept the image's %s", s.xattrs.opaque())
	}
	for _, p := range []string{"etc/gone", "etc/chargone"} {
		if fi, err := os.Lstat(filepath.Join(top, p)); err != nil || !isWhiteout(fi) {
			t.Errorf("layer %s is no whiteout: %v", p, err)
		}
	}
	buf := make([]byte, 1024)
	err = filepath.WalkDir(top, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		names, err := listXattrs(path, &buf)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(top, path)
		for _, name := range names {
			if isOverlayXattr(name) && (rel != "d" || name != s.xattrs.opaque()) {
				t.Errorf("layer %s has %s", rel, name)
			}
		}
		if rel == "planted" && !slices.Contains(names, "user.kept") {
			t.Errorf("layer planted lost user.kept: %v", names)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	dir := filepath.Join(t.TempDir(), "runtime")
	rootfs := mountRoot(t, s, img, dir)
	if got := names(t, filepath.Join(rootfs, "d")); !slices.Equal(got, []string{"new"}) {
		t.Errorf("recreated dir d lists %v, want [new]", got)
	}
	for _, p := range []string{"d/old", "d/sub/deep", "etc/gone", "etc/chargone"} {
		if _, err := os.Lstat(filepath.Join(rootfs, p)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s: %v, want not exist", p, err)
		}
	}
	if got := names(t, filepath.Join(rootfs, "etc")); !slices.Equal(got, []string{"kept"}) {
		t.Errorf("etc lists %v, want [kept]", got)
	}
	if got := names(t, filepath.Join(rootfs, "planted")); !slices.Equal(got, []string{"lower", "upper"}) {
		t.Errorf("planted lists %v, want [lower upper]: the image's opaque xattr was honoured", got)
	}
	if got := readFile(t, filepath.Join(rootfs, "meta")); got != "m" {
		t.Errorf("meta = %q, want m: the image's redirect or metacopy xattr was honoured", got)
	}

	// The runtime's own changes: overlayfs writes its whiteouts and opaque
	// markers into the upper layer, in the namespace of the mount.
	if err := os.RemoveAll(filepath.Join(rootfs, "keep")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(rootfs, "keep"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(rootfs, "etc/kept")); err != nil {
		t.Fatal(err)
	}
	if got := names(t, filepath.Join(rootfs, "keep")); len(got) != 0 {
		t.Errorf("keep, removed and made again, lists %v", got)
	}
	if _, err := os.Lstat(filepath.Join(rootfs, "etc/kept")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("etc/kept after removal: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(img.Layers[0], "keep/a")); err != nil {
		t.Errorf("base layer keep/a removed by a runtime: %v", err)
	}
}

// The store as real root: trusted.overlay.* markers in "layers", as before.
func TestOverlayXattrsRoot(t *testing.T) {
	requireRoot(t)
	if userns.RunningInUserNS() {
		t.Fatal("real root expected: the test is about a store outside user namespaces")
	}
	for _, tc := range rootModes {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestStore(t, Config{})
			if s.xattrs.user {
				t.Fatal("store outside a user namespace uses user.overlay xattrs")
			}
			if got := filepath.Base(s.layersDir()); got != "layers" {
				t.Errorf("layers dir %s", got)
			}
			checkOverlayLayers(t, s, tc.ov)
		})
	}
}

// The store as root of a user namespace, as the rootless daemon runs it:
// user.overlay.* markers, "userxattr" mounts, layers of their own.
func TestOverlayXattrsUserNS(t *testing.T) {
	if !inUserNS(t) {
		return
	}
	t.Run("probe", func(t *testing.T) {
		s := newTestStore(t, Config{})
		if !s.xattrs.user {
			t.Fatal("store in a user namespace uses trusted.overlay xattrs")
		}
		if got := filepath.Base(s.layersDir()); got != "layers-userxattr" {
			t.Errorf("layers dir %s, want layers-userxattr", got)
		}
		var uts unix.Utsname
		if err := unix.Uname(&uts); err != nil {
			t.Fatal(err)
		}
		var major, minor int
		fmt.Sscanf(unix.ByteSliceToString(uts.Release[:]), "%d.%d", &major, &minor)
		// overlayfs mounts in a user namespace since 5.11, lowerdir+ since 6.8.
		if (major > 6 || major == 6 && minor >= 8) && (s.overlay.mode != overlayFsconfig || !s.overlay.volatile) {
			t.Errorf("kernel %d.%d: probe chose %v volatile=%v", major, minor, s.overlay.mode, s.overlay.volatile)
		}
		t.Logf("kernel %d.%d: %v volatile=%v", major, minor, s.overlay.mode, s.overlay.volatile)
	})
	for _, idmap := range []*oci.IDMap{nil, {HostUID: 1, HostGID: 1, Size: usernsRangeSize}} {
		for _, tc := range rootModes {
			name := tc.name
			if idmap != nil {
				name += "-idmap"
			}
			t.Run(name, func(t *testing.T) {
				s := newTestStore(t, Config{IDMap: idmap})
				want := "layers-userxattr"
				if idmap != nil {
					want += "-1-1-65536"
				}
				if got := filepath.Base(s.layersDir()); got != want {
					t.Errorf("layers dir %s, want %s", got, want)
				}
				checkOverlayLayers(t, s, tc.ov)
			})
		}
	}
	// A root daemon's layers in the same Root are not this store's.
	t.Run("root-layers", func(t *testing.T) {
		l := newLayout(t, t.TempDir())
		ref := l.tag(l.image(recreatedImage()), "v1")
		first, err := newTestStore(t, Config{}).Pull(context.Background(), ref)
		if err != nil {
			t.Fatal(err)
		}
		// What a root daemon left in another Root: the same layers, under
		// the same names, with what root reads in them.
		root := filepath.Join(t.TempDir(), "images")
		for _, p := range first.Layers {
			d := filepath.Join(root, "layers", filepath.Base(p))
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(d, "root-daemon"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		s := newTestStore(t, Config{Root: root})
		img, err := s.Pull(context.Background(), ref)
		if err != nil {
			t.Fatal(err)
		}
		for i, p := range img.Layers {
			if filepath.Dir(p) != s.layersDir() || filepath.Base(p) != filepath.Base(first.Layers[i]) {
				t.Errorf("layer %d is %s, want %s in %s", i, p, filepath.Base(first.Layers[i]), s.layersDir())
			}
			if _, err := os.Lstat(filepath.Join(p, "root-daemon")); err == nil {
				t.Errorf("layer %d is the root daemon's", i)
			}
		}
	})
}

// Unpacking in a user namespace: the opaque marker is user.overlay.opaque,
// whiteouts are 0/0 devices, and no overlay xattr of the image's survives.
func TestUnpackUserNS(t *testing.T) {
	if !inUserNS(t) {
		return
	}
	sb := newSandbox(t)
	_, err := unpackLayer(bytes.NewReader(buildTar(t,
		dir("etc/"), entry{name: "etc/.wh.passwd", typ: tar.TypeReg}, entry{name: "etc/shadow", typ: tar.TypeChar},
		dir("opq/"), entry{name: "opq/.wh..wh..opq", typ: tar.TypeReg}, file("opq/kept", "x"),
		entry{name: "redirect", typ: tar.TypeDir, mode: 0o755, xattrs: map[string]string{
			"trusted.overlay.redirect": "/etc", "user.overlay.redirect": "/etc", "user.overlay.origin": "x", "user.kept": "1",
		}},
		entry{name: "fake-opaque", typ: tar.TypeDir, mode: 0o755, xattrs: map[string]string{"user.overlay.opaque": "y"}},
		entry{name: "meta", typ: tar.TypeReg, mode: 0o644, xattrs: map[string]string{"user.overlay.metacopy": ""}},
		entry{name: "dev", typ: tar.TypeChar, mode: 0o600, major: 1, minor: 3},
	)), sb.dest, unpackOptions{xattrs: overlayXattrs{user: true}})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"etc/passwd", "etc/shadow"} {
		if fi, err := os.Lstat(filepath.Join(sb.dest, p)); err != nil || !isWhiteout(fi) {
			t.Errorf("%s: no whiteout: %v", p, err)
		}
	}
	if _, err := os.Lstat(filepath.Join(sb.dest, "etc/.wh.shadow")); err == nil {
		t.Error("etc/.wh.shadow kept")
	}
	if _, err := os.Lstat(filepath.Join(sb.dest, "dev")); err == nil {
		t.Error("device node created")
	}
	buf := make([]byte, 1024)
	for path, want := range map[string][]string{
		"opq":         {"user.overlay.opaque"},
		"redirect":    {"user.kept"},
		"fake-opaque": nil,
		"meta":        nil,
	} {
		got, err := listXattrs(filepath.Join(sb.dest, path), &buf)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s xattrs = %v, want %v", path, got, want)
		}
	}
	if !isOpaqueDir(filepath.Join(sb.dest, "opq"), overlayXattrs{user: true}) {
		t.Error("opq is not opaque")
	}
}

package images

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

var rootModes = []struct {
	name string
	ov   overlaySupport
}{
	{"fsconfig", overlaySupport{mode: overlayFsconfig, volatile: true}},
	{"mount", overlaySupport{mode: overlayMountData, volatile: true}},
	{"mount-nonvolatile", overlaySupport{mode: overlayMountData}},
	{"copy", overlaySupport{mode: overlayNone}},
}

func TestMountRoot(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	for _, tc := range rootModes {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestStore(t, Config{})
			forceOverlay(s, tc.ov)
			l := newLayout(t, t.TempDir())
			ref := l.tag(l.image(baseImage()), "v1")
			img, err := s.Pull(ctx, ref)
			if err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join(t.TempDir(), "runtime", "root")
			rootfs := mountRoot(t, s, img, dir)
			if rootfs != filepath.Join(dir, "rootfs") {
				t.Fatalf("rootfs = %s", rootfs)
			}
			overlay := tc.ov.mode != overlayNone
			if got := slices.Contains(mountPoints(t, dir), rootfs); got != overlay {
				t.Fatalf("rootfs mounted = %v, want %v", got, overlay)
			}

			// Upper layers win, whiteouts and opaque directories hide lower files.
			if got := readFile(t, filepath.Join(rootfs, "etc/hello")); got != "layer2" {
				t.Errorf("etc/hello = %q, want layer2", got)
			}
			if _, err := os.Lstat(filepath.Join(rootfs, "etc/gone")); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("whiteout: etc/gone: %v, want not exist", err)
			}
			if got := names(t, filepath.Join(rootfs, "opq")); !slices.Equal(got, []string{"upper1"}) {
				t.Errorf("opaque dir lists %v, want [upper1]", got)
			}
			if got := names(t, filepath.Join(rootfs, "keep")); !slices.Equal(got, []string{"a", "b"}) {
				t.Errorf("merged dir lists %v, want [a b]", got)
			}
			if got := readFile(t, filepath.Join(rootfs, "newdir/file")); got != "new" {
				t.Errorf("newdir/file = %q", got)
			}
			if link, err := os.Readlink(filepath.Join(rootfs, "bin/tool-link")); err != nil || link != "tool" {
				t.Errorf("symlink: %q, %v", link, err)
			}
			a, err := os.Stat(filepath.Join(rootfs, "bin/tool"))
			if err != nil {
				t.Fatal(err)
			}
			b, err := os.Stat(filepath.Join(rootfs, "bin/tool-hard"))
			if err != nil {
				t.Fatal(err)
			}
			if !os.SameFile(a, b) {
				t.Error("hard link: bin/tool and bin/tool-hard are different files")
			}
			if a.Mode().Perm() != 0o755 {
				t.Errorf("bin/tool mode %v", a.Mode())
			}
			if st, err := os.Stat(filepath.Join(rootfs, "usr/local/server")); err != nil || st.Sys().(*syscall.Stat_t).Uid != 1000 {
				t.Errorf("ownership of usr/local/server not kept: %v", err)
			}
			if st, err := os.Stat(rootfs); err != nil || st.Mode().Perm() != 0o755 {
				t.Errorf("rootfs mode: %v %v", st.Mode(), err)
			}

			// Writes land in the runtime's own layer, never in the image's.
			if err := os.WriteFile(filepath.Join(rootfs, "etc/hello"), []byte("runtime"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(rootfs, "created"), []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Remove(filepath.Join(rootfs, "keep/a")); err != nil {
				t.Fatal(err)
			}
			for i, layer := range img.Layers {
				if _, err := os.Lstat(filepath.Join(layer, "created")); err == nil {
					t.Errorf("layer %d got the runtime's new file", i)
				}
			}
			if got := readFile(t, filepath.Join(img.Layers[0], "etc/hello")); got != "base" {
				t.Errorf("base layer etc/hello = %q after a runtime write", got)
			}
			if got := readFile(t, filepath.Join(img.Layers[1], "etc/hello")); got != "layer2" {
				t.Errorf("layer 2 etc/hello = %q after a runtime write", got)
			}
			if _, err := os.Lstat(filepath.Join(img.Layers[0], "keep/a")); err != nil {
				t.Errorf("base layer keep/a removed by a runtime: %v", err)
			}
			if overlay {
				upper := filepath.Join(dir, "upper")
				if got := readFile(t, filepath.Join(upper, "etc/hello")); got != "runtime" {
					t.Errorf("upper etc/hello = %q", got)
				}
				if got := readFile(t, filepath.Join(upper, "created")); got != "x" {
					t.Errorf("upper created = %q", got)
				}
				if fi, err := os.Lstat(filepath.Join(upper, "keep/a")); err != nil || !isWhiteout(fi) {
					t.Errorf("upper keep/a should be a whiteout: %v", err)
				}
			}

			if err := s.UnmountRoot(dir); err != nil {
				t.Fatal(err)
			}
			if m := mountPoints(t, dir); len(m) != 0 {
				t.Errorf("still mounted: %v", m)
			}
			for _, p := range []string{"rootfs", "upper", "work"} {
				if _, err := os.Lstat(filepath.Join(dir, p)); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("%s left behind: %v", p, err)
				}
			}
			if err := s.UnmountRoot(dir); err != nil {
				t.Errorf("second UnmountRoot: %v", err)
			}
			// The image is untouched and can give the next runtime a fresh root.
			rootfs = mountRoot(t, s, img, dir)
			if got := readFile(t, filepath.Join(rootfs, "etc/hello")); got != "layer2" {
				t.Errorf("fresh root etc/hello = %q", got)
			}
			if _, err := os.Lstat(filepath.Join(rootfs, "created")); err == nil {
				t.Error("fresh root shows the previous runtime's file")
			}
		})
	}
}

func names(t testing.TB, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

// More layers than fit in one page of mount options with their full paths.
func TestMountRootManyLayers(t *testing.T) {
	requireRoot(t)
	const n = 70
	img := testImage{}
	for i := range n {
		img.layers = append(img.layers, testLayer{compression: "gzip", entries: []entry{
			dir("layers/"), file(fmt.Sprintf("layers/%02d", i), "x"), file("top", fmt.Sprint(i)),
		}})
	}
	for _, tc := range rootModes {
		if tc.ov.mode == overlayNone {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			s := newTestStore(t, Config{})
			forceOverlay(s, tc.ov)
			l := newLayout(t, t.TempDir())
			pulled, err := s.Pull(context.Background(), l.tag(l.image(img), "many"))
			if err != nil {
				t.Fatal(err)
			}
			if opts := overlayOptions(lowerDirs(pulled.Layers, ""), "u", "w", mountFlags{volatile: true}); len(opts) < os.Getpagesize() {
				t.Fatalf("test image too small: options are %d bytes", len(opts))
			}
			rootfs := mountRoot(t, s, pulled, filepath.Join(t.TempDir(), "root"))
			if got := len(names(t, filepath.Join(rootfs, "layers"))); got != n {
				t.Errorf("%d layer files visible, want %d", got, n)
			}
			if got := readFile(t, filepath.Join(rootfs, "top")); got != fmt.Sprint(n-1) {
				t.Errorf("top = %s, want the top layer's %d", got, n-1)
			}
		})
	}
}

// Paths longer than fsconfig accepts for one value (255 bytes) still mount.
func TestMountRootLongPaths(t *testing.T) {
	requireRoot(t)
	long := t.TempDir()
	for len(long) < 300 {
		long = filepath.Join(long, strings.Repeat("d", 60))
	}
	for _, tc := range rootModes {
		if tc.ov.mode == overlayNone {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			s := newTestStore(t, Config{Root: filepath.Join(long, tc.name, "images")})
			forceOverlay(s, tc.ov)
			l := newLayout(t, t.TempDir())
			img, err := s.Pull(context.Background(), l.tag(l.image(baseImage()), "v1"))
			if err != nil {
				t.Fatal(err)
			}
			rootfs := mountRoot(t, s, img, filepath.Join(long, tc.name, "runtime"))
			if got := readFile(t, filepath.Join(rootfs, "etc/hello")); got != "layer2" {
				t.Errorf("etc/hello = %q", got)
			}
		})
	}
}

func TestMountDataLimit(t *testing.T) {
	requireRoot(t)
	layer := t.TempDir()
	lowers := make([]string, 300) // 300 x "/proc/self/fd/NNN:" > one page
	for i := range lowers {
		lowers[i] = layer
	}
	target := t.TempDir()
	err := mountData(lowers, target, target, target, mountFlags{volatile: true})
	if err == nil || !strings.Contains(err.Error(), "one page") {
		t.Fatalf("err = %v, want the page limit named", err)
	}
}

func TestMountRootRefusesExistingRoot(t *testing.T) {
	requireRoot(t)
	s := newTestStore(t, Config{})
	l := newLayout(t, t.TempDir())
	img, err := s.Pull(context.Background(), l.tag(l.image(baseImage()), "v1"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rootfs := mountRoot(t, s, img, dir)
	if err := os.WriteFile(filepath.Join(rootfs, "state"), []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.MountRoot(context.Background(), img, dir); err == nil {
		t.Fatal("second MountRoot on one dir succeeded")
	}
	if got := readFile(t, filepath.Join(rootfs, "state")); got != "keep" {
		t.Errorf("the first root was disturbed: %q", got)
	}
}

func TestUnmountRootNothingThere(t *testing.T) {
	for _, dir := range []string{filepath.Join(t.TempDir(), "missing"), t.TempDir()} {
		if err := UnmountRoot(dir); err != nil {
			t.Errorf("UnmountRoot(%s): %v", dir, err)
		}
	}
}

func TestMountRootEmptyImage(t *testing.T) {
	requireRoot(t)
	s := newTestStore(t, Config{})
	l := newLayout(t, t.TempDir())
	img, err := s.Pull(context.Background(), l.tag(l.image(testImage{}), "empty"))
	if err != nil {
		t.Fatal(err)
	}
	rootfs := mountRoot(t, s, img, t.TempDir())
	if got := names(t, rootfs); len(got) != 0 {
		t.Errorf("empty image root lists %v", got)
	}
}

func TestLowerDirs(t *testing.T) {
	tests := []struct {
		layers []string
		want   []string
	}{
		{nil, []string{"E"}},
		{[]string{"a"}, []string{"a"}},
		{[]string{"a", "b", "c"}, []string{"c", "b", "a"}},
		{[]string{"a", "b", "a"}, []string{"a", "b"}},
		{[]string{"a", "a"}, []string{"a"}},
	}
	for _, tt := range tests {
		if got := lowerDirs(tt.layers, "E"); !slices.Equal(got, tt.want) {
			t.Errorf("lowerDirs(%v) = %v, want %v", tt.layers, got, tt.want)
		}
	}
}

func TestOverlayOptionsEscaping(t *testing.T) {
	got := overlayOptions([]string{"/a:b", "/c,d"}, `/u\x`, "/w", mountFlags{volatile: true})
	want := `lowerdir=/a\:b:/c\,d,upperdir=/u\\x,workdir=/w,volatile`
	if got != want {
		t.Errorf("got %s\nwant %s", got, want)
	}
}

func TestOverlayProbe(t *testing.T) {
	requireRoot(t)
	s := newTestStore(t, Config{})
	ov := s.overlay
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		t.Fatal(err)
	}
	var major, minor int
	fmt.Sscanf(unix.ByteSliceToString(uts.Release[:]), "%d.%d", &major, &minor)
	// lowerdir+ arrived in 6.8, volatile in 5.10.
	if (major > 6 || major == 6 && minor >= 8) && (ov.mode != overlayFsconfig || !ov.volatile) {
		t.Errorf("kernel %d.%d: probe chose %v volatile=%v", major, minor, ov.mode, ov.volatile)
	}
	t.Logf("kernel %d.%d: %v volatile=%v", major, minor, ov.mode, ov.volatile)
	if entries, _ := os.ReadDir(s.tmpDir()); len(entries) != 0 {
		t.Errorf("probe left %d entries in tmp", len(entries))
	}
}

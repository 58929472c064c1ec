package images

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
)

// unpackLayers unpacks each tar into its own dir, each with the ones before
// it as its lower layers, and returns the dirs.
func unpackLayers(t *testing.T, layers ...[]entry) ([]string, unpackStats) {
	t.Helper()
	var dirs []string
	var st unpackStats
	for i, l := range layers {
		dest := filepath.Join(t.TempDir(), "layer")
		if err := os.Mkdir(dest, 0o755); err != nil {
			t.Fatal(err)
		}
		lowers := dirs[:i:i]
		var err error
		st, err = unpackLayer(bytes.NewReader(buildTar(t, l...)), dest, unpackOptions{
			lower: func() ([]string, error) { return lowers, nil },
		})
		if err != nil {
			t.Fatalf("layer %d: %v", i, err)
		}
		dirs = append(dirs, dest)
	}
	return dirs, st
}

// A hard link to a file of a lower layer copies the file up from the
// topmost layer below that has it, with its metadata, and links to the
// copy; a second link to it in the same layer joins the same inode.
func TestUnpackHardlinkToLowerLayer(t *testing.T) {
	requireRoot(t)
	dirs, st := unpackLayers(t,
		[]entry{dir("srv/"), {name: "srv/lower", typ: tar.TypeReg, body: "lower", mode: 0o640, uid: 1000, gid: 20,
			xattrs: map[string]string{"user.origin": "lower"}},
			file("srv/replaced", "old"), dir("deep/"), {name: "deep/dir/", typ: tar.TypeDir, mode: 0o700, uid: 7}, file("deep/dir/f", "deep")},
		[]entry{dir("srv/"), file("srv/replaced", "new")},
		[]entry{dir("srv/"), hardlink("srv/link", "srv/lower"), hardlink("srv/again", "srv/lower"),
			hardlink("srv/replaced-link", "srv/replaced"), hardlink("srv/deep-link", "deep/dir/f")},
	)
	if st.copied != 3 {
		t.Errorf("copied = %d, want 3", st.copied)
	}
	top := dirs[2]
	var lowerIno uint64
	for _, name := range []string{"srv/lower", "srv/link", "srv/again"} {
		fi, err := os.Lstat(filepath.Join(top, name))
		if err != nil {
			t.Fatal(err)
		}
		sys := fi.Sys().(*syscall.Stat_t)
		if fi.Mode().Perm() != 0o640 || sys.Uid != 1000 || sys.Gid != 20 || sys.Nlink != 3 {
			t.Errorf("%s: mode %v owner %d:%d links %d, want 0640 1000:20 3", name, fi.Mode(), sys.Uid, sys.Gid, sys.Nlink)
		}
		if lowerIno == 0 {
			lowerIno = sys.Ino
		} else if sys.Ino != lowerIno {
			t.Errorf("%s is not linked to srv/lower", name)
		}
		if v, err := getXattr(filepath.Join(top, name), "user.origin"); err != nil || string(v) != "lower" {
			t.Errorf("%s: user.origin = %q, %v", name, v, err)
		}
	}
	if got := readFile(t, filepath.Join(top, "srv/replaced-link")); got != "new" {
		t.Errorf("srv/replaced-link = %q, want the topmost layer's", got)
	}
	fi, err := os.Lstat(filepath.Join(top, "deep/dir"))
	if err != nil || fi.Mode().Perm() != 0o700 || fi.Sys().(*syscall.Stat_t).Uid != 7 {
		t.Errorf("deep/dir copied up as %v, %v; want the lower one's 0700, owner 7", fi, err)
	}
}

// A link to a name that is in no layer, or that a layer in between (or
// this one) hides, fails the layer naming the link and its target.
func TestUnpackHardlinkToHiddenLowerFile(t *testing.T) {
	requireRoot(t)
	lower, _ := unpackLayers(t,
		[]entry{dir("srv/"), file("srv/wh", "x"), dir("opq/"), file("opq/f", "x"), file("srv/here", "x")},
		[]entry{dir("srv/"), {name: "srv/.wh.wh", typ: tar.TypeReg}, dir("opq/"), {name: "opq/.wh..wh..opq", typ: tar.TypeReg}},
	)
	for _, tc := range []struct {
		name    string
		entries []entry
	}{
		{"missing", []entry{hardlink("srv/l", "srv/nothing")}},
		{"whiteout below", []entry{hardlink("srv/l", "srv/wh")}},
		{"opaque below", []entry{hardlink("srv/l", "opq/f")}},
		{"whiteout here", []entry{dir("srv/"), {name: "srv/.wh.here", typ: tar.TypeReg}, hardlink("srv/l", "srv/here")}},
		{"directory", []entry{hardlink("l", "srv")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := unpackLayer(bytes.NewReader(buildTar(t, tc.entries...)), t.TempDir(), unpackOptions{
				lower: func() ([]string, error) { return lower, nil },
			})
			if !errors.Is(err, errLowerHardlink) || !strings.Contains(err.Error(), `hard link "`) {
				t.Errorf("err = %v, want %v naming the link", err, errLowerHardlink)
			}
		})
	}
}

// An entry followed by its own whiteout in one layer stays: a whiteout
// hides only the layers below, and the entry hides their name by itself.
func TestUnpackWhiteoutAfterEntry(t *testing.T) {
	requireRoot(t)
	sb := newSandbox(t)
	_, err := unpackLayer(bytes.NewReader(buildTar(t,
		dir("opt/"), file("opt/x", "x"), entry{name: "opt/.wh.x", typ: tar.TypeReg}, entry{name: "opt/.wh.y", typ: tar.TypeReg},
	)), sb.dest, unpackOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(sb.dest, "opt/x")); got != "x" {
		t.Errorf("opt/x = %q", got)
	}
	if fi, err := os.Lstat(filepath.Join(sb.dest, "opt/y")); err != nil || !isWhiteout(fi) {
		t.Errorf("opt/y: %v, want a whiteout of the lower one", err)
	}
}

// A layer with a hard link to a lower file is stored under its chain ID,
// so another image with the same layer over other layers does not share
// it, and the record names it.
func TestPullHardlinkToLowerLayerKeyedByChain(t *testing.T) {
	requireRoot(t)
	s := newTestStore(t, Config{})
	l := newLayout(t, t.TempDir())
	upper := testLayer{entries: []entry{dir("srv/"), hardlink("srv/link", "srv/f")}}
	refA := l.tag(l.image(testImage{layers: []testLayer{{entries: []entry{dir("srv/"), file("srv/f", "A")}}, upper}}), "a")
	refB := l.tag(l.image(testImage{layers: []testLayer{{entries: []entry{dir("srv/"), file("srv/f", "B")}}, upper}}), "b")
	ctx := context.Background()
	for ref, want := range map[string]string{refA: "A", refB: "B"} {
		img, err := s.Pull(ctx, ref)
		if err != nil {
			t.Fatal(err)
		}
		root := mountRoot(t, s, img, filepath.Join(t.TempDir(), "rt"))
		if got := readFile(t, filepath.Join(root, "srv/link")); got != want {
			t.Errorf("%s: srv/link = %q, want %q", ref, got, want)
		}
		chain := identity.ChainID([]digest.Digest{
			digest.FromBytes(buildTar(t, dir("srv/"), file("srv/f", want))),
			digest.FromBytes(buildTar(t, upper.entries...)),
		})
		if img.Layers[1] != s.layerPath(chain) {
			t.Errorf("%s: upper layer at %s, want its chain ID %s", ref, img.Layers[1], chain)
		}
	}
}

package images

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// sharedImages writes two images into one layout: "a" is baseImage, "b" has
// baseImage's first two layers plus one of its own.
func sharedImages(t testing.TB) (refA, refB string) {
	t.Helper()
	l := newLayout(t, t.TempDir())
	a := baseImage()
	b := baseImage()
	b.layers = append(b.layers[:2:2], testLayer{compression: "gzip", entries: []entry{dir("only-b/"), file("only-b/f", "b")}})
	return l.tag(l.image(a), "a"), l.tag(l.image(b), "b")
}

// age makes the image ref names look unused since d ago.
func age(t testing.TB, s *Store, ref string, d time.Duration) {
	t.Helper()
	r, err := s.resolveReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-d)
	if err := os.Chtimes(s.recordPath(imageKey(r)), old, old); err != nil {
		t.Fatal(err)
	}
}

func lastUse(t testing.TB, s *Store, ref string) time.Time {
	t.Helper()
	r, err := s.resolveReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(s.recordPath(imageKey(r)))
	if err != nil {
		t.Fatal(err)
	}
	return fi.ModTime()
}

func layerNames(t testing.TB, s *Store) []string {
	t.Helper()
	entries, err := os.ReadDir(s.layersDir())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

func recordCount(t testing.TB, s *Store) int {
	t.Helper()
	entries, err := os.ReadDir(s.imagesDir())
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

func assertTmpEmpty(t testing.TB, s *Store) {
	t.Helper()
	if entries, _ := os.ReadDir(s.tmpDir()); len(entries) != 0 {
		t.Errorf("tmp holds %v", entries)
	}
}

func TestGC(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	s := newTestStore(t, Config{})
	refA, refB := sharedImages(t)
	imgA, err := s.Pull(ctx, refA)
	if err != nil {
		t.Fatal(err)
	}
	imgB, err := s.Pull(ctx, refB)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(layerNames(t, s)); n != 4 {
		t.Fatalf("%d layers, want 4 (2 shared)", n)
	}
	dir := filepath.Join(t.TempDir(), "rt")
	rootfs := mountRoot(t, s, imgA, dir)
	if s.InUse(refA) != 1 || s.InUse(refB) != 0 {
		t.Fatalf("in use: a %d, b %d", s.InUse(refA), s.InUse(refB))
	}

	// Used just now: nothing is old enough.
	st, err := s.GC(ctx, time.Hour)
	if err != nil || len(st.Images) != 0 || st.Layers != 0 || st.Kept != 2 {
		t.Fatalf("GC(1h) of fresh images: %+v %v", st, err)
	}

	// Everything unused goes; a (mounted) stays with its layers, b's own layer goes.
	age(t, s, refA, 48*time.Hour)
	age(t, s, refB, 48*time.Hour)
	st, err = s.GC(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(st.Images, []string{refB}) || st.Layers != 1 || st.Bytes != 1 || st.Kept != 1 {
		t.Fatalf("GC with a mounted: %+v", st)
	}
	if recordCount(t, s) != 1 || len(layerNames(t, s)) != 3 {
		t.Fatalf("after GC: %d records, layers %v", recordCount(t, s), layerNames(t, s))
	}
	if _, err := os.Stat(imgB.Layers[2]); !os.IsNotExist(err) {
		t.Errorf("b's own layer still there: %v", err)
	}
	if got := readFile(t, filepath.Join(rootfs, "etc/hello")); got != "layer2" {
		t.Errorf("mounted root after GC reads %q", got)
	}
	assertTmpEmpty(t, s)

	// Unmounting is a use: a stays until it has been unused long enough.
	before := time.Now()
	if err := s.UnmountRoot(dir); err != nil {
		t.Fatal(err)
	}
	if s.InUse(refA) != 0 {
		t.Fatal("still in use after UnmountRoot")
	}
	if lastUse(t, s, refA).Before(before.Add(-time.Second)) {
		t.Errorf("UnmountRoot did not record a use: %v", lastUse(t, s, refA))
	}
	if st, err := s.GC(ctx, time.Hour); err != nil || len(st.Images) != 0 {
		t.Fatalf("GC right after unmount: %+v %v", st, err)
	}

	// The keep list wins over age.
	age(t, s, refA, 48*time.Hour)
	if st, err := s.GC(ctx, time.Hour, "oci:/nowhere:x", "Not A Reference", refA); err != nil || len(st.Images) != 0 || st.Kept != 1 {
		t.Fatalf("GC with a keep list: %+v %v", st, err)
	}

	// Last use survives a restart: a new Store sees a as old, and removes it.
	s2, err := New(s.cfg)
	if err != nil {
		t.Fatal(err)
	}
	st, err = s2.GC(ctx, time.Hour)
	if err != nil || len(st.Images) != 1 || st.Layers != 3 {
		t.Fatalf("GC after a restart: %+v %v", st, err)
	}
	if recordCount(t, s2) != 0 || len(layerNames(t, s2)) != 0 {
		t.Fatalf("store not empty: %d records, layers %v", recordCount(t, s2), layerNames(t, s2))
	}
	assertTmpEmpty(t, s2)

	// A Pull after GC pulls again.
	if _, err := s2.Pull(ctx, refA); err != nil {
		t.Fatal(err)
	}
	if n := len(layerNames(t, s2)); n != 3 {
		t.Fatalf("%d layers after pulling again", n)
	}
}

func TestPullAndMountRecordUse(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	s := newTestStore(t, Config{})
	refA, _ := sharedImages(t)
	if _, err := s.Pull(ctx, refA); err != nil {
		t.Fatal(err)
	}
	age(t, s, refA, 48*time.Hour)
	before := time.Now().Add(-time.Second)
	img, err := s.Pull(ctx, refA) // from the store
	if err != nil {
		t.Fatal(err)
	}
	if lastUse(t, s, refA).Before(before) {
		t.Errorf("Pull from the store did not record a use")
	}
	age(t, s, refA, 48*time.Hour)
	mountRoot(t, s, img, filepath.Join(t.TempDir(), "rt"))
	if lastUse(t, s, refA).Before(before) {
		t.Errorf("MountRoot did not record a use")
	}
}

// GC between Pull and MountRoot: MountRoot pulls the image again instead of
// mounting layers that are gone.
func TestMountRootAfterGC(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	s := newTestStore(t, Config{})
	refA, _ := sharedImages(t)
	img, err := s.Pull(ctx, refA)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := s.GC(ctx, 0); err != nil || len(st.Images) != 1 || st.Layers != 3 {
		t.Fatalf("GC(0): %+v %v", st, err)
	}
	rootfs := mountRoot(t, s, img, filepath.Join(t.TempDir(), "rt"))
	if got := readFile(t, filepath.Join(rootfs, "keep/b")); got != "b" {
		t.Errorf("root after a re-pull reads %q", got)
	}
	if s.InUse(refA) != 1 {
		t.Errorf("in use = %d", s.InUse(refA))
	}
}

// Layers nobody refers to (a pull that died before writing its record) go;
// what is not a layer name is left alone.
func TestGCOrphans(t *testing.T) {
	requireRoot(t)
	s := newTestStore(t, Config{})
	orphan := filepath.Join(s.layersDir(), digest.FromString("orphan").Encoded())
	stranger := filepath.Join(s.layersDir(), "not-a-layer")
	for _, d := range []string{orphan, stranger} {
		if err := os.MkdirAll(filepath.Join(d, "x"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Layers of other id mappings: an old one goes, a recent one stays.
	oldMap, newMap := filepath.Join(s.root, "layers-1-1-65536"), filepath.Join(s.root, "layers-2-2-65536")
	for _, d := range []string{oldMap, newMap} {
		if err := os.MkdirAll(filepath.Join(d, digest.FromString(d).Encoded()), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-48 * time.Hour)
	if err := os.Chtimes(oldMap, past, past); err != nil {
		t.Fatal(err)
	}
	// A record that cannot be read refers to nothing.
	if err := os.WriteFile(filepath.Join(s.imagesDir(), "broken.json"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := s.GC(context.Background(), time.Hour)
	if err != nil || st.Layers != 1 || st.Kept != 1 {
		t.Fatalf("GC: %+v %v", st, err)
	}
	if exists(orphan) || !exists(stranger) {
		t.Errorf("orphan there: %v, stranger there: %v", exists(orphan), exists(stranger))
	}
	if exists(oldMap) || !exists(newMap) {
		t.Errorf("old mapping's layers there: %v, recent mapping's: %v", exists(oldMap), exists(newMap))
	}
	assertTmpEmpty(t, s)
}

// Pulls, mounts and unmounts of images sharing layers while GC(0) runs in a
// loop: every mount sees complete layers and every operation succeeds.
func TestGCConcurrentWithPullAndMount(t *testing.T) {
	requireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := newTestStore(t, Config{})
	refA, refB := sharedImages(t)
	base := t.TempDir()
	stop := make(chan struct{})
	var gcs sync.WaitGroup
	gcs.Add(1)
	runs := 0
	go func() {
		defer gcs.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := s.GC(ctx, 0); err != nil {
				t.Errorf("GC: %v", err)
				return
			}
			runs++
		}
	}()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ref, want := refA, "b"
			if w%2 == 1 {
				ref, want = refB, "b"
			}
			for i := range 15 {
				img, err := s.Pull(ctx, ref)
				if err != nil {
					t.Errorf("Pull: %v", err)
					return
				}
				dir := filepath.Join(base, fmt.Sprintf("%d-%d", w, i))
				rootfs, err := s.MountRoot(ctx, img, dir)
				if err != nil {
					t.Errorf("MountRoot: %v", err)
					return
				}
				got, err := os.ReadFile(filepath.Join(rootfs, "etc/hello"))
				if err != nil || string(got) != "layer2" {
					t.Errorf("root %s: etc/hello = %q, %v", dir, got, err)
				}
				if w%2 == 0 {
					if got, err := os.ReadFile(filepath.Join(rootfs, "keep/b")); err != nil || string(got) != want {
						t.Errorf("root %s: keep/b = %q, %v", dir, got, err)
					}
				}
				if err := s.UnmountRoot(dir); err != nil {
					t.Errorf("UnmountRoot: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	gcs.Wait()
	t.Logf("%d GC runs alongside", runs)
	if _, err := s.GC(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if recordCount(t, s) != 0 || len(layerNames(t, s)) != 0 {
		t.Errorf("final GC(0) left %d records, layers %v", recordCount(t, s), layerNames(t, s))
	}
	assertTmpEmpty(t, s)
}

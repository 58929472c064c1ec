package images

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// restartedStore is what a restarted daemon opens: a new Store on s's Root,
// mounting roots the way s does, with nothing in use in memory.
func restartedStore(t testing.TB, s *Store) *Store {
	t.Helper()
	s2, err := New(s.cfg)
	if err != nil {
		t.Fatal(err)
	}
	forceOverlay(s2, s.overlay)
	return s2
}

// pinCount is how many layer pins s holds.
func pinCount(s *Store) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.pins {
		n += c
	}
	return n
}

// A root MountRoot made before a restart is in use again once adopted: GC
// keeps its image and layers however old, until UnmountRoot.
func TestAdoptRoot(t *testing.T) {
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
			t.Cleanup(func() {
				if err := UnmountRoot(dir); err != nil {
					t.Errorf("cleanup: %v", err)
				}
			})
			rootfs, err := s.MountRoot(ctx, img, dir)
			if err != nil {
				t.Fatal(err)
			}
			overlay := tc.ov.mode != overlayNone

			// The daemon restarts; the runtime and its root stay.
			s2 := restartedStore(t, s)
			if n := s2.InUse(ref); n != 0 {
				t.Fatalf("in use on a fresh store: %d", n)
			}
			// What the daemon knows of the runtime: its image's name and layers.
			if err := s2.AdoptRoot(&Image{Ref: ref, Layers: slices.Clone(img.Layers)}, dir); err != nil {
				t.Fatalf("AdoptRoot: %v", err)
			}
			if n := s2.InUse(ref); n != 1 {
				t.Fatalf("in use after AdoptRoot: %d, want 1", n)
			}
			if n := pinCount(s2); n != len(img.Layers) {
				t.Errorf("%d layer pins after AdoptRoot, want %d", n, len(img.Layers))
			}
			// Nothing was mounted or changed.
			if got := slices.Contains(mountPoints(t, dir), rootfs); got != overlay {
				t.Errorf("rootfs mounted = %v, want %v", got, overlay)
			}
			if n := len(mountPoints(t, dir)); overlay && n != 1 {
				t.Errorf("%d mounts under %s, want 1", n, dir)
			}

			// Unused for long by the record's clock, yet in use: GC keeps it all.
			layersBefore := layerNames(t, s2)
			age(t, s2, ref, 48*time.Hour)
			st, err := s2.GC(ctx, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			if len(st.Images) != 0 || st.Layers != 0 || st.Kept != 1 {
				t.Fatalf("GC of an adopted root's image: %+v", st)
			}
			if got := layerNames(t, s2); !slices.Equal(got, layersBefore) {
				t.Errorf("layers after GC: %v, want %v", got, layersBefore)
			}
			for _, layer := range img.Layers {
				if _, err := os.Lstat(layer); err != nil {
					t.Errorf("layer removed by GC: %v", err)
				}
			}
			if got := readFile(t, filepath.Join(rootfs, "etc/hello")); got != "layer2" {
				t.Errorf("adopted root reads etc/hello = %q after GC", got)
			}

			// UnmountRoot on the new store ends the use.
			if err := s2.UnmountRoot(dir); err != nil {
				t.Fatal(err)
			}
			if n := s2.InUse(ref); n != 0 {
				t.Fatalf("in use after UnmountRoot: %d", n)
			}
			if n := pinCount(s2); n != 0 {
				t.Errorf("%d layer pins after UnmountRoot", n)
			}
			if m := mountPoints(t, dir); len(m) != 0 {
				t.Errorf("still mounted: %v", m)
			}
			if _, err := os.Lstat(rootfs); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("rootfs left behind: %v", err)
			}
			age(t, s2, ref, 48*time.Hour)
			st, err = s2.GC(ctx, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(st.Images, []string{ref}) || st.Layers != len(layersBefore) {
				t.Fatalf("GC after UnmountRoot: %+v, want %s and %d layers removed", st, ref, len(layersBefore))
			}
			if got := layerNames(t, s2); len(got) != 0 {
				t.Errorf("layers left: %v", got)
			}
		})
	}
}

// AdoptRoot of a dir that holds no root fails with ErrNoRoot and uses nothing.
func TestAdoptRootNoRoot(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string)
		// copyOK: a root in copy mode looks like this (a plain directory).
		copyOK bool
	}{
		{name: "missing dir", setup: func(t *testing.T, dir string) {}},
		{name: "empty dir", setup: func(t *testing.T, dir string) {
			if err := os.Mkdir(dir, 0o711); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "upper and work without rootfs", setup: func(t *testing.T, dir string) {
			for _, d := range []string{"upper", "work"} {
				if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
					t.Fatal(err)
				}
			}
		}},
		{name: "rootfs is a file", setup: func(t *testing.T, dir string) {
			if err := os.MkdirAll(dir, 0o711); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "rootfs"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "rootfs is a symlink to a directory", setup: func(t *testing.T, dir string) {
			if err := os.MkdirAll(dir, 0o711); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(t.TempDir(), filepath.Join(dir, "rootfs")); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "rootfs is a plain directory", copyOK: true, setup: func(t *testing.T, dir string) {
			if err := os.MkdirAll(filepath.Join(dir, "rootfs"), 0o755); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, mode := range rootModes {
		t.Run(mode.name, func(t *testing.T) {
			s := newTestStore(t, Config{})
			forceOverlay(s, mode.ov)
			l := newLayout(t, t.TempDir())
			ref := l.tag(l.image(baseImage()), "v1")
			img, err := s.Pull(ctx, ref)
			if err != nil {
				t.Fatal(err)
			}
			s = restartedStore(t, s)
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					dir := filepath.Join(t.TempDir(), "rt")
					tc.setup(t, dir)
					err := s.AdoptRoot(&Image{Ref: ref, Layers: img.Layers}, dir)
					if tc.copyOK && mode.ov.mode == overlayNone {
						if err != nil {
							t.Fatalf("AdoptRoot of a copied root: %v", err)
						}
						if n := s.InUse(ref); n != 1 {
							t.Errorf("in use after AdoptRoot: %d, want 1", n)
						}
						if err := s.UnmountRoot(dir); err != nil {
							t.Fatal(err)
						}
						if n := s.InUse(ref); n != 0 {
							t.Errorf("in use after UnmountRoot: %d", n)
						}
						return
					}
					if !errors.Is(err, ErrNoRoot) {
						t.Fatalf("AdoptRoot: %v, want ErrNoRoot", err)
					}
					if n := s.InUse(ref); n != 0 {
						t.Errorf("in use after a failed AdoptRoot: %d", n)
					}
					if n := pinCount(s); n != 0 {
						t.Errorf("%d layer pins after a failed AdoptRoot", n)
					}
				})
			}
		})
	}
}

// A mounted root whose layers are gone cannot be adopted: the caller removes
// the runtime instead.
func TestAdoptRootLayersGone(t *testing.T) {
	requireRoot(t)
	ctx := context.Background()
	for _, tc := range rootModes {
		for _, gone := range []struct {
			name   string
			remove func(t *testing.T, s *Store, img *Image)
		}{
			// A restarted store knows of no use: GC takes what it finds.
			{"GC before AdoptRoot", func(t *testing.T, s *Store, img *Image) {
				if st, err := s.GC(ctx, 0); err != nil || st.Layers != len(img.Layers) {
					t.Fatalf("GC(0): %+v %v", st, err)
				}
			}},
			{"one layer removed by hand", func(t *testing.T, s *Store, img *Image) {
				if err := os.RemoveAll(img.Layers[1]); err != nil {
					t.Fatal(err)
				}
			}},
		} {
			t.Run(tc.name+"/"+gone.name, func(t *testing.T) {
				s := newTestStore(t, Config{})
				forceOverlay(s, tc.ov)
				l := newLayout(t, t.TempDir())
				ref := l.tag(l.image(baseImage()), "v1")
				img, err := s.Pull(ctx, ref)
				if err != nil {
					t.Fatal(err)
				}
				dir := filepath.Join(t.TempDir(), "rt")
				t.Cleanup(func() {
					if err := UnmountRoot(dir); err != nil {
						t.Errorf("cleanup: %v", err)
					}
				})
				if _, err := s.MountRoot(ctx, img, dir); err != nil {
					t.Fatal(err)
				}
				s2 := restartedStore(t, s)
				gone.remove(t, s2, img)
				err = s2.AdoptRoot(&Image{Ref: ref, Layers: img.Layers}, dir)
				if err == nil {
					t.Fatal("AdoptRoot succeeded with a layer gone")
				}
				if !errors.Is(err, errLayersGone) || errors.Is(err, ErrNoRoot) {
					t.Errorf("AdoptRoot: %v, want errLayersGone", err)
				}
				if n := s2.InUse(ref); n != 0 {
					t.Errorf("in use after a failed AdoptRoot: %d", n)
				}
				if n := pinCount(s2); n != 0 {
					t.Errorf("%d layer pins after a failed AdoptRoot", n)
				}
				// The root is left for the caller to remove.
				if _, err := os.Lstat(filepath.Join(dir, "rootfs")); err != nil {
					t.Errorf("AdoptRoot touched the root: %v", err)
				}
				if err := s2.UnmountRoot(dir); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
}

func TestAdoptRootNilImage(t *testing.T) {
	s := &Store{}
	if err := s.AdoptRoot(nil, t.TempDir()); err == nil {
		t.Error("AdoptRoot(nil) succeeded")
	}
}

func TestIsMountPoint(t *testing.T) {
	requireRoot(t)
	// mount mounts a small tmpfs at dir until the test ends.
	mount := func(t *testing.T, dir string) {
		t.Helper()
		if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
				t.Error(err)
			}
		})
	}
	tests := []struct {
		name    string
		path    func(t *testing.T) string
		want    bool
		wantErr error
	}{
		{"tmpfs", func(t *testing.T) string {
			dir := t.TempDir()
			mount(t, dir)
			return dir
		}, true, nil},
		{"bind mount on the same filesystem", func(t *testing.T) string {
			dir := t.TempDir()
			if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
					t.Error(err)
				}
			})
			return dir
		}, true, nil},
		{"mount point named with a trailing slash", func(t *testing.T) string {
			dir := t.TempDir()
			mount(t, dir)
			return dir + "/"
		}, true, nil},
		{"plain directory", func(t *testing.T) string { return t.TempDir() }, false, nil},
		{"directory in a mount", func(t *testing.T) string {
			dir := t.TempDir()
			mount(t, dir)
			sub := filepath.Join(dir, "sub")
			if err := os.Mkdir(sub, 0o755); err != nil {
				t.Fatal(err)
			}
			return sub
		}, false, nil},
		{"symlink to a mount point", func(t *testing.T) string {
			parent := t.TempDir()
			mnt := filepath.Join(parent, "mnt")
			if err := os.Mkdir(mnt, 0o755); err != nil {
				t.Fatal(err)
			}
			mount(t, mnt)
			link := filepath.Join(parent, "link")
			if err := os.Symlink(mnt, link); err != nil {
				t.Fatal(err)
			}
			return link
		}, false, nil},
		{"missing", func(t *testing.T) string { return filepath.Join(t.TempDir(), "missing") }, false, fs.ErrNotExist},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := tc.path(t)
			got, err := isMountPoint(path)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("isMountPoint(%s) = %v, %v; want error %v", path, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("isMountPoint(%s) = %v, %v; want %v", path, got, err, tc.want)
			}
		})
	}
}

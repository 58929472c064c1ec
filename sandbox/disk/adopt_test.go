package disk

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// A restarted daemon takes over the disk an earlier process mounted, without
// the Disk that Mount returned, and unmounts it like any other.
func TestAdopt(t *testing.T) {
	requireHost(t)
	for _, f := range formats {
		t.Run(f.name, func(t *testing.T) {
			parent := t.TempDir()
			dir := filepath.Join(parent, "rt")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			cfg := f.config(t, Config{Size: 16 << 20})
			first, err := Mount(context.Background(), dir, cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = first.Unmount() })
			if err := os.WriteFile(filepath.Join(dir, "state"), []byte("kept"), 0o600); err != nil {
				t.Fatal(err)
			}

			d, err := Adopt(dir)
			if err != nil {
				t.Fatalf("Adopt: %v", err)
			}
			if d == nil {
				t.Fatal("Adopt of a mounted disk returned no Disk")
			}
			if d.Dir() != dir {
				t.Errorf("Dir() = %s, want %s", d.Dir(), dir)
			}
			if d.dev != first.dev || d.dev == 0 {
				t.Errorf("adopted device %d, want the mounted disk's %d", d.dev, first.dev)
			}
			// Adopting changes nothing: the disk is still mounted, its data there.
			if dev, err := mountedDisk(dir); err != nil || dev != first.dev {
				t.Fatalf("after Adopt, mountedDisk = %d, %v; want %d", dev, err, first.dev)
			}
			if b, err := os.ReadFile(filepath.Join(dir, "state")); err != nil || string(b) != "kept" {
				t.Errorf("state after Adopt: %q, %v", b, err)
			}

			if err := d.Unmount(); err != nil {
				t.Fatalf("Unmount: %v", err)
			}
			if dev, err := mountedDisk(dir); err != nil || dev != 0 {
				t.Fatalf("after Unmount, mountedDisk = %d, %v; want not mounted", dev, err)
			}
			assertGone(t, parent, "rt")

			// A second Unmount does nothing, even to a disk mounted there since.
			again, err := Mount(context.Background(), dir, cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = again.Unmount() })
			if err := d.Unmount(); err != nil {
				t.Errorf("second Unmount: %v", err)
			}
			if dev, err := mountedDisk(dir); err != nil || dev != again.dev {
				t.Errorf("second Unmount of the adopted disk touched the next one: mountedDisk = %d, %v; want %d", dev, err, again.dev)
			}
			if err := again.Unmount(); err != nil {
				t.Fatal(err)
			}
			assertGone(t, parent, "rt")
		})
	}
}

// Where there is no disk (the runtime had none), Adopt returns none and no
// error.
func TestAdoptNoDisk(t *testing.T) {
	requireHost(t)
	tests := []struct {
		name string
		dir  func(t *testing.T) string
	}{
		{"plain directory", func(t *testing.T) string { return t.TempDir() }},
		{"directory with files", func(t *testing.T) string {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "x"), []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
			return dir
		}},
		{"missing directory", func(t *testing.T) string { return filepath.Join(t.TempDir(), "missing") }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := tc.dir(t)
			d, err := Adopt(dir)
			if d != nil || err != nil {
				t.Fatalf("Adopt(%s) = %+v, %v; want nil, nil", dir, d, err)
			}
		})
	}
}

// A mount this package did not make is refused and left alone.
func TestAdoptForeignMount(t *testing.T) {
	requireHost(t)
	t.Run("tmpfs", func(t *testing.T) {
		dir := t.TempDir()
		mountTmpfs(t, dir, 1<<20)
		d, err := Adopt(dir)
		if !errors.Is(err, ErrNotDisk) || d != nil {
			t.Fatalf("Adopt of a tmpfs = %+v, %v; want nil, ErrNotDisk", d, err)
		}
		if opts := mountOptions(t, dir); len(opts) == 0 {
			t.Errorf("tmpfs at %s unmounted", dir)
		}
		if err := os.WriteFile(filepath.Join(dir, "x"), []byte("x"), 0o600); err != nil {
			t.Errorf("tmpfs no longer writable: %v", err)
		}
	})
	t.Run("another's ext4 on a loop device", func(t *testing.T) {
		parent := t.TempDir()
		dir := filepath.Join(parent, "rt")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		mountForeignExt4(t, parent, dir)
		d, err := Adopt(dir)
		if !errors.Is(err, ErrNotDisk) || d != nil {
			t.Fatalf("Adopt of another's ext4 = %+v, %v; want nil, ErrNotDisk", d, err)
		}
		if m := mountsUnder(t, parent); len(m) != 1 {
			t.Errorf("mounts in %s: %v, want the foreign ext4", parent, m)
		}
	})
}

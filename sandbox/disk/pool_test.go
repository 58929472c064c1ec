package disk

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

// waitReady waits until the pool holds all the disks it keeps ready: the
// channel full, and the one the filler holds mounted too.
func waitReady(t testing.TB, p *Pool) {
	t.Helper()
	full := func() bool {
		return len(p.ready) == cap(p.ready) && len(mountsUnder(t, p.cfg.Dir)) == p.cfg.Size
	}
	if !eventually(full) {
		t.Fatalf("pool holds %d of %d ready disks; mounted: %v", len(p.ready), cap(p.ready), mountsUnder(t, p.cfg.Dir))
	}
}

func newPool(t testing.TB, size int) (*Pool, PoolConfig) {
	t.Helper()
	cfg := PoolConfig{
		Disk: Config{Size: 16 << 20, Inodes: 2048, TemplateDir: filepath.Join(t.TempDir(), "templates")},
		Dir:  filepath.Join(t.TempDir(), "pool"),
		Size: size,
	}
	p, err := NewPool(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
	})
	return p, cfg
}

func TestPool(t *testing.T) {
	requireHost(t)
	p, pcfg := newPool(t, 3)
	waitReady(t, p)
	// The pool's Dir is a private mount of its own holding the ready disks.
	if opts := mountOptions(t, pcfg.Dir); len(opts) == 0 {
		t.Errorf("pool dir %s is not a mount", pcfg.Dir)
	}
	if m := mountsUnder(t, pcfg.Dir); len(m) != 3 {
		t.Errorf("ready disks mounted: %v, want 3", m)
	}

	parent := t.TempDir()
	dir := filepath.Join(parent, "rt")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := pcfg.Disk
	cfg.UID, cfg.GID, cfg.Mode = 1000000000, 1000000000, 0o711
	d, err := p.Mount(context.Background(), dir, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != 1000000000 || st.Gid != 1000000000 || st.Mode&0o7777 != 0o711 {
		t.Errorf("root is %d:%d %o, want 1000000000:1000000000 711", st.Uid, st.Gid, st.Mode&0o7777)
	}
	if got := entries(t, dir); len(got) > 0 {
		t.Errorf("disk from the pool holds %v", got)
	}
	if fs := statfs(t, dir); fs.Type != unix.EXT4_SUPER_MAGIC || fs.Files != 2048 {
		t.Errorf("disk from the pool: type %#x, %d inodes; want ext4, 2048", fs.Type, fs.Files)
	}
	opts := mountOptions(t, dir)
	for _, want := range []string{"nosuid", "nodev"} {
		if !slices.Contains(opts, want) {
			t.Errorf("mount options %v lack %s", opts, want)
		}
	}
	// The pool refills.
	waitReady(t, p)
	if m := mountsUnder(t, pcfg.Dir); len(m) != 3 {
		t.Errorf("ready disks after a refill: %v, want 3", m)
	}

	if err := d.Unmount(); err != nil {
		t.Fatal(err)
	}
	assertGone(t, parent, "rt")

	// Another shape is made on the spot.
	other := filepath.Join(parent, "other")
	if err := os.Mkdir(other, 0o700); err != nil {
		t.Fatal(err)
	}
	d, err = p.Mount(context.Background(), other, Config{Size: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if fs := statfs(t, other); fs.Files != 512 {
		t.Errorf("disk of another shape has %d inodes, want 512", fs.Files)
	}
	if err := d.Unmount(); err != nil {
		t.Fatal(err)
	}

	// A bad directory costs no ready disk.
	if _, err := p.Mount(context.Background(), filepath.Join(parent, "missing"), cfg); !errors.Is(err, unix.ENOENT) {
		t.Errorf("Mount at a missing dir: %v, want ENOENT", err)
	}
	if len(p.ready) != cap(p.ready) {
		t.Errorf("pool holds %d of %d after a failed Mount", len(p.ready), cap(p.ready))
	}

	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if opts := mountOptions(t, pcfg.Dir); len(opts) > 0 {
		t.Errorf("pool dir still mounted after Close")
	}
	assertGone(t, pcfg.Dir)
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestPoolOff(t *testing.T) {
	requireHost(t)
	p, _ := newPool(t, 0)
	dir := newDir(t)
	d, err := p.Mount(context.Background(), dir, Config{Size: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if fs := statfs(t, dir); fs.Type != unix.EXT4_SUPER_MAGIC {
		t.Errorf("filesystem type %#x, want ext4", fs.Type)
	}
	if err := d.Unmount(); err != nil {
		t.Fatal(err)
	}
}

// What a crash leaves in the pool's Dir (its own mount, ready disks) is
// cleared by the next NewPool; a mount there that is not a disk stops it.
func TestPoolLeftovers(t *testing.T) {
	requireHost(t)
	dir := filepath.Join(t.TempDir(), "pool")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	for _, name := range []string{"old-1", "old-2"} {
		if err := os.Mkdir(filepath.Join(dir, name), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Mount(context.Background(), filepath.Join(dir, "old-1"), Config{Size: 16 << 20}); err != nil {
		t.Fatal(err)
	}

	p, err := NewPool(PoolConfig{Disk: Config{Size: 16 << 20}, Dir: dir, Size: 1})
	if err != nil {
		t.Fatal(err)
	}
	waitReady(t, p)
	for _, name := range []string{"old-1", "old-2"} {
		if _, err := os.Stat(filepath.Join(dir, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("leftover %s: %v", name, err)
		}
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	assertGone(t, dir)

	// A foreign mount in the pool's Dir.
	foreign := filepath.Join(dir, "x")
	if err := os.Mkdir(foreign, 0o700); err != nil {
		t.Fatal(err)
	}
	mountTmpfs(t, foreign, 1<<20)
	if _, err := NewPool(PoolConfig{Disk: Config{Size: 16 << 20}, Dir: dir, Size: 1}); !errors.Is(err, ErrNotDisk) {
		t.Errorf("NewPool over a foreign mount: %v, want ErrNotDisk", err)
	}
}

package disk

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// newSpares starts spares of cfg in a fresh parent directory, and has the
// test wait until count are ready.
func newSpares(t *testing.T, cfg Config, count int) (*Spares, string) {
	t.Helper()
	parent := t.TempDir()
	s, err := NewSpares(SparesConfig{Disk: cfg, Dir: parent, Count: count})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	waitReady(t, s, count)
	return s, parent
}

func waitReady(t *testing.T, s *Spares, n int) {
	t.Helper()
	if !eventually(func() bool { return s.Ready() == n }) {
		t.Fatalf("%d spares ready, want %d", s.Ready(), n)
	}
}

func TestSparesMount(t *testing.T) {
	requireHost(t)
	for _, f := range formats {
		t.Run(f.name, func(t *testing.T) {
			const uid, gid = 1000000000, 1000000001
			cfg := f.config(t, Config{Size: 16 << 20, UID: uid, GID: gid, Mode: 0o751})
			s, parent := newSpares(t, cfg, 2)
			// Made, and mounted nowhere: only their loop devices show.
			if l := boundLoops(t, parent); len(l) != 2 {
				t.Fatalf("loop devices on %s: %v, want the two spares'", parent, l)
			}
			if m := mountsUnder(t, parent); len(m) > 0 {
				t.Fatalf("spares mounted at %v", m)
			}
			if got := entries(t, parent); len(got) > 0 {
				t.Fatalf("spares left names in %s: %v", parent, got)
			}

			dir := filepath.Join(parent, "rt")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			d, err := s.Mount(context.Background(), dir, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if n := s.Ready(); n != 1 || !d.Spare() {
				t.Errorf("%d spares ready after one was taken (Spare() %t), want 1", n, d.Spare())
			}
			checkDisk(t, dir, d, cfg)

			s.Refill()
			waitReady(t, s, 2)
			if err := d.Unmount(); err != nil {
				t.Fatal(err)
			}
			s.Close()
			assertGone(t, parent, "rt")
		})
	}
}

// checkDisk checks that the disk d at dir is what Mount makes of cfg: an
// empty ext4 root with cfg's owner and mode, mounted nosuid, nodev,
// without barriers, and writable.
func checkDisk(t *testing.T, dir string, d *Disk, cfg Config) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != uint32(cfg.UID) || st.Gid != uint32(cfg.GID) || st.Mode&0o7777 != uint32(cfg.mode()) {
		t.Errorf("root is %d:%d %o, want %d:%d %o", st.Uid, st.Gid, st.Mode&0o7777, cfg.UID, cfg.GID, cfg.mode())
	}
	if got := entries(t, dir); len(got) > 0 {
		t.Errorf("new disk holds %v, want nothing", got)
	}
	for _, want := range []string{"nosuid", "nodev", "rw"} {
		if opts := mountOptions(t, dir); !slices.Contains(opts, want) {
			t.Errorf("mount options %v lack %s", opts, want)
		}
	}
	for _, want := range []string{"nobarrier", "noauto_da_alloc"} {
		if opts := superOptions(t, dir); !slices.Contains(opts, want) {
			t.Errorf("filesystem options %v lack %s", opts, want)
		}
	}
	if fs := statfs(t, dir); fs.Type != unix.EXT4_SUPER_MAGIC {
		t.Errorf("filesystem type %#x, want ext4", fs.Type)
	}
	if err := os.WriteFile(filepath.Join(dir, "x"), []byte("x"), 0o600); err != nil {
		t.Error(err)
	}
	if d.Dir() != dir {
		t.Errorf("Dir() = %s, want %s", d.Dir(), dir)
	}
}

// A Mount the spares were not made for, or one that must fail, leaves
// them as they are.
func TestSparesMountOthers(t *testing.T) {
	requireHost(t)
	cfg := Config{Size: 16 << 20}
	s, parent := newSpares(t, cfg, 1)

	other := filepath.Join(parent, "other")
	if err := os.Mkdir(other, 0o700); err != nil {
		t.Fatal(err)
	}
	d, err := s.Mount(context.Background(), other, Config{Size: 32 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if d.Spare() {
		t.Error("a disk of another size is a spare")
	}
	if got := statfs(t, other); got.Blocks*uint64(got.Bsize) <= 16<<20 {
		t.Errorf("a 32 MiB disk has %d bytes", got.Blocks*uint64(got.Bsize))
	}
	if n := s.Ready(); n != 1 {
		t.Errorf("%d spares ready after a Mount of another size, want 1", n)
	}
	if err := d.Unmount(); err != nil {
		t.Fatal(err)
	}

	full := filepath.Join(parent, "full")
	if err := os.MkdirAll(filepath.Join(full, "x"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Mount(context.Background(), full, cfg); !errors.Is(err, unix.ENOTEMPTY) {
		t.Errorf("Mount at a directory that is not empty: %v, want ENOTEMPTY", err)
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Mount(cancelled, other, cfg); !errors.Is(err, context.Canceled) {
		t.Errorf("Mount with a cancelled context: %v, want context.Canceled", err)
	}
	if n := s.Ready(); n != 1 {
		t.Errorf("%d spares ready after failed Mounts, want 1", n)
	}

	// The second is taken while none is ready (none is made again before
	// Refill): Mount makes it itself.
	for i, name := range []string{"a", "b"} {
		dir := filepath.Join(parent, name)
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		d, err := s.Mount(context.Background(), dir, cfg)
		if err != nil {
			t.Fatal(err)
		}
		checkDisk(t, dir, d, cfg)
		if d.Spare() != (i == 0) {
			t.Errorf("%s: Spare() %t, want %t", dir, d.Spare(), i == 0)
		}
		defer d.Unmount()
	}
}

// When the process holding spares dies, the kernel frees them: nothing is
// left on the host, with nobody to clean up.
func TestSparesFreedWhenKilled(t *testing.T) {
	requireHost(t)
	parent := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestSparesHelperProcess$")
	cmd.Env = append(os.Environ(), "DISK_SPARES_HELPER_DIR="+parent)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	sc := bufio.NewScanner(out)
	for sc.Scan() && sc.Text() != "ready" {
	}
	if l := boundLoops(t, parent); len(l) != 3 {
		t.Fatalf("loop devices of the helper's spares: %v, want 3", l)
	}
	if err := cmd.Process.Signal(unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	assertGone(t, parent)
}

// TestSparesHelperProcess is TestSparesFreedWhenKilled's process to kill:
// it makes three spares, says "ready" and waits. Run on its own, it has
// nothing to do.
func TestSparesHelperProcess(t *testing.T) {
	dir := os.Getenv("DISK_SPARES_HELPER_DIR")
	if dir == "" {
		return
	}
	s, err := NewSpares(SparesConfig{Disk: Config{Size: 16 << 20}, Dir: dir, Count: 3})
	if err != nil {
		t.Fatal(err)
	}
	waitReady(t, s, 3)
	os.Stdout.WriteString("ready\n")
	time.Sleep(time.Minute)
}

// The spares' refill waits Grace after Refill, and makes what was taken.
func TestSparesRefillGrace(t *testing.T) {
	requireHost(t)
	parent := t.TempDir()
	const grace = 300 * time.Millisecond
	cfg := Config{Size: 16 << 20}
	s, err := NewSpares(SparesConfig{Disk: cfg, Dir: parent, Count: 2, Grace: grace})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	waitReady(t, s, 2)
	for i := range 2 {
		dir := filepath.Join(parent, strconv.Itoa(i))
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		d, err := s.Mount(context.Background(), dir, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Unmount()
	}
	start := time.Now()
	s.Refill()
	waitReady(t, s, 2)
	if took := time.Since(start); took < grace {
		t.Errorf("refilled %v after Refill, want at least the grace of %v", took, grace)
	}
}

func TestNewSparesNone(t *testing.T) {
	for _, c := range []SparesConfig{{Disk: Config{Size: 16 << 20}}, {Count: 2}} {
		s, err := NewSpares(c)
		if s != nil || err != nil {
			t.Errorf("NewSpares(%+v) = %v, %v; want nil, nil", c, s, err)
		}
		// A nil *Spares mounts as Mount does.
		s.Refill()
		s.Close()
		if n := s.Ready(); n != 0 {
			t.Errorf("nil spares: %d ready", n)
		}
	}
	if _, err := NewSpares(SparesConfig{Disk: Config{Size: 1}, Count: 1}); err == nil {
		t.Error("NewSpares of a 1-byte disk: no error")
	}
}

// A refill that fails is tried again, without a Refill, once the cause is
// gone.
func TestSparesRetry(t *testing.T) {
	requireHost(t)
	dir := filepath.Join(t.TempDir(), "later")
	s, err := NewSpares(SparesConfig{Disk: Config{Size: 16 << 20}, Dir: dir, Count: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	time.Sleep(100 * time.Millisecond)
	if n := s.Ready(); n != 0 {
		t.Fatalf("%d spares ready with their directory missing", n)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	waitReady(t, s, 1)
}

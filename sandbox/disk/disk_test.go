package disk

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// format is a way of formatting disks: every behaviour must hold for each.
type format struct {
	name     string
	template bool
}

var formats = []format{
	{"mkfs", false},
	{"template", true},
}

func (f format) config(t testing.TB, cfg Config) Config {
	if f.template {
		cfg.TemplateDir = filepath.Join(t.TempDir(), "templates")
	}
	return cfg
}

// requireHost fails (never skips) where the test cannot run: CI is root on a
// host with loop devices.
func requireHost(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("needs root (loop devices, mount)")
	}
	if err := Check(); err != nil {
		t.Fatal(err)
	}
}

// newDir makes an empty runtime directory in a fresh parent and registers a
// cleanup that unmounts whatever a failed test left there.
func newDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "rt")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// mountTmpfs makes dir a small filesystem of its own, so that the space a
// disk's backing file takes there can be measured without other processes'
// writes to the host's disk in the way.
func mountTmpfs(t testing.TB, dir string, size int64) {
	t.Helper()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Error(err)
		}
	})
}

// boundLoops lists the loop devices whose backing file lies in dir.
func boundLoops(t testing.TB, dir string) []string {
	t.Helper()
	names, err := filepath.Glob("/sys/block/loop*/loop/backing_file")
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, n := range names {
		b, err := os.ReadFile(n)
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO) {
			// Freed between the glob and the read: a detached loop
			// device's sysfs file answers ENODEV until it goes.
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(string(b), dir+"/") {
			found = append(found, strings.Split(n, "/")[3]+": "+strings.TrimSpace(string(b)))
		}
	}
	return found
}

// mountsUnder lists the mount points below dir.
func mountsUnder(t testing.TB, dir string) []string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var found []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], dir+"/") {
			found = append(found, fields[4])
		}
	}
	if err := s.Err(); err != nil {
		t.Fatal(err)
	}
	return found
}

// mountInfo gives the mountinfo line of the mount at dir (the last one
// there wins), as its fields before and after the " - " separator.
func mountInfo(t testing.TB, dir string) (mount, fs []string) {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		before, after, _ := strings.Cut(line, " - ")
		if f := strings.Fields(before); len(f) > 5 && f[4] == dir {
			mount, fs = f, strings.Fields(after)
		}
	}
	return mount, fs
}

// mountOptions gives the per-mount options of the mount at dir.
func mountOptions(t testing.TB, dir string) []string {
	t.Helper()
	if mount, _ := mountInfo(t, dir); mount != nil {
		return strings.Split(mount[5], ",")
	}
	return nil
}

// superOptions gives the filesystem options of the mount at dir.
func superOptions(t testing.TB, dir string) []string {
	t.Helper()
	if _, fs := mountInfo(t, dir); len(fs) > 2 {
		return strings.Split(fs[2], ",")
	}
	return nil
}

// entries lists dir's names.
func entries(t testing.TB, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	return names
}

// assertGone checks that no disk is left in parent: no mount, no loop device
// backed by a file there, no file but the expected ones.
func assertGone(t testing.TB, parent string, wantEntries ...string) {
	t.Helper()
	if m := mountsUnder(t, parent); len(m) > 0 {
		t.Errorf("mounts left: %v", m)
	}
	// With autoclear the kernel frees the device when the filesystem's last
	// reference goes. That is the unmount itself, unless at that moment
	// another process holds one: a mount namespace being made (every new one
	// copies the host's mounts; a container start by any process on this
	// machine), or udev's blkid probe on hosts that run udev. Wait for it to
	// let go rather than fail on it.
	if !eventually(func() bool { return len(boundLoops(t, parent)) == 0 }) {
		t.Errorf("loop devices left: %v", boundLoops(t, parent))
	}
	if got := entries(t, parent); !slices.Equal(got, wantEntries) {
		t.Errorf("entries of %s: %v, want %v", parent, got, wantEntries)
	}
}

// eventually says whether cond holds within a generous deadline: what it
// waits for is up to other processes (see assertGone), not to this package's
// speed.
func eventually(cond func() bool) bool {
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

func statfs(t testing.TB, dir string) unix.Statfs_t {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func TestSizeCap(t *testing.T) {
	requireHost(t)
	const size = 64 << 20
	for _, f := range formats {
		t.Run(f.name, func(t *testing.T) {
			// The runtime directory's parent is a filesystem of its own
			// (room for four times the cap), so its usage is the host's
			// cost of this disk alone.
			host := filepath.Join(t.TempDir(), "host")
			if err := os.Mkdir(host, 0o700); err != nil {
				t.Fatal(err)
			}
			mountTmpfs(t, host, 4*size)
			dir := filepath.Join(host, "rt")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			before := statfs(t, host)

			d, err := Mount(context.Background(), dir, f.config(t, Config{Size: size}))
			if err != nil {
				t.Fatal(err)
			}
			defer d.Unmount()

			written, err := fill(filepath.Join(dir, "big"))
			if !errors.Is(err, unix.ENOSPC) {
				t.Fatalf("after %d bytes: %v, want ENOSPC", written, err)
			}
			// Metadata takes a little of the size, never much.
			if written > size || written < size*9/10 {
				t.Errorf("wrote %d bytes into a %d-byte disk", written, size)
			}
			// Still full for a second file.
			if n, err := fill(filepath.Join(dir, "more")); !errors.Is(err, unix.ENOSPC) || n > 64<<10 {
				t.Errorf("second file: %d bytes, %v; want ENOSPC at once", n, err)
			}
			// Push everything into the backing file, then measure the host.
			if err := syncDir(dir); err != nil {
				t.Fatal(err)
			}
			after := statfs(t, host)
			used := int64(before.Bfree-after.Bfree) * after.Bsize
			t.Logf("wrote %d bytes; host used %d bytes for a %d-byte disk", written, used, size)
			if used > size {
				t.Errorf("host gave %d bytes to a %d-byte disk", used, size)
			}
			if used < written*9/10 {
				t.Errorf("host gave %d bytes for %d written: the backing file is not where the test looks", used, written)
			}

			if err := d.Unmount(); err != nil {
				t.Fatal(err)
			}
			assertGone(t, host, "rt")
			// The backing file goes with the loop device's last close (see
			// assertGone).
			if !eventually(func() bool { return statfs(t, host).Bfree == before.Bfree }) {
				t.Errorf("host has %d fewer free blocks after unmount", before.Bfree-statfs(t, host).Bfree)
			}
		})
	}
}

// fill writes to a new file at path until a write fails.
func fill(path string) (int64, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i) | 1 // not zeros, in case zeros were ever elided
	}
	var total int64
	for {
		n, err := f.Write(buf)
		total += int64(n)
		if err != nil {
			return total, err
		}
		if err := f.Sync(); err != nil {
			return total, err
		}
	}
}

func syncDir(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Syncfs(fd)
}

func TestInodeCap(t *testing.T) {
	requireHost(t)
	// 1024 inodes fill 64 inode-table blocks of the disk's one block group
	// exactly, so mke2fs does not round the count up.
	const inodes = 1024
	for _, f := range formats {
		t.Run(f.name, func(t *testing.T) {
			dir := newDir(t)
			d, err := Mount(context.Background(), dir, f.config(t, Config{Size: 64 << 20, Inodes: inodes}))
			if err != nil {
				t.Fatal(err)
			}
			defer d.Unmount()
			if st := statfs(t, dir); st.Files != inodes {
				t.Errorf("disk has %d inodes, want %d", st.Files, inodes)
			}
			var created int
			for ; ; created++ {
				fd, err := unix.Open(filepath.Join(dir, strconv.Itoa(created)), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
				if err != nil {
					if !errors.Is(err, unix.ENOSPC) {
						t.Fatalf("file %d: %v, want ENOSPC", created, err)
					}
					break
				}
				unix.Close(fd)
			}
			// The first ten inodes are ext4's own (root among them);
			// lost+found's was freed.
			if created != inodes-10 {
				t.Errorf("created %d files, want %d", created, inodes-10)
			}
			if err := os.Mkdir(filepath.Join(dir, "d"), 0o700); !errors.Is(err, unix.ENOSPC) {
				t.Errorf("mkdir on a full disk: %v, want ENOSPC", err)
			}
		})
	}
}

func TestMountRoot(t *testing.T) {
	requireHost(t)
	const uid, gid = 1000000000, 1000000001
	dir := newDir(t)
	cfg := Config{Size: 16 << 20, UID: uid, GID: gid, Mode: 0o751}
	d, err := Mount(context.Background(), dir, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Unmount()
	checkDisk(t, dir, d, cfg)
	sys := fmt.Sprintf("/sys/dev/block/%d:%d/", unix.Major(d.dev), unix.Minor(d.dev))
	if sectors, err := os.ReadFile(sys + "size"); err != nil || strings.TrimSpace(string(sectors)) != strconv.Itoa(16<<20/512) {
		t.Errorf("loop device of %q sectors, %v; want %d", sectors, err, 16<<20/512)
	}
	want := "0"
	if supportsDirectIO(t, filepath.Dir(dir)) {
		want = "1"
	}
	if dio, err := os.ReadFile(sys + "loop/dio"); err != nil || strings.TrimSpace(string(dio)) != want {
		t.Errorf("loop device direct I/O: %q, %v; want %s", dio, err, want)
	}
}

// supportsDirectIO says whether files in dir can be opened with O_DIRECT
// (tmpfs could not before Linux 6.6).
func supportsDirectIO(t *testing.T, dir string) bool {
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_DIRECT|unix.O_CLOEXEC, 0o600)
	if errors.Is(err, unix.EINVAL) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	return true
}

func TestSizeZero(t *testing.T) {
	requireHost(t)
	dir := newDir(t)
	d, err := Mount(context.Background(), dir, Config{UID: 1000000000, GID: 1000000000})
	if err != nil {
		t.Fatal(err)
	}
	if m := mountsUnder(t, dir); len(m) > 0 {
		t.Errorf("Size 0 mounted %v", m)
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Uid != 1000000000 || st.Mode&0o7777 != uint32(DefaultMode) {
		t.Errorf("dir is %d %o, want 1000000000 %o", st.Uid, st.Mode&0o7777, DefaultMode)
	}
	if err := d.Unmount(); err != nil {
		t.Fatal(err)
	}
}

func TestUnmount(t *testing.T) {
	requireHost(t)
	for _, f := range formats {
		t.Run(f.name, func(t *testing.T) {
			parent := t.TempDir()
			dir := filepath.Join(parent, "rt")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			cfg := f.config(t, Config{Size: 32 << 20})
			d, err := Mount(context.Background(), dir, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if l := boundLoops(t, parent); len(l) != 1 {
				t.Fatalf("loop devices on %s: %v, want one", parent, l)
			}
			// Dirty data, a busy subdirectory and a submount (as the
			// runtime's overlay root will be) must not stop it.
			if err := os.WriteFile(filepath.Join(dir, "data"), make([]byte, 8<<20), 0o600); err != nil {
				t.Fatal(err)
			}
			sub := filepath.Join(dir, "root")
			if err := os.Mkdir(sub, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := unix.Mount("tmpfs", sub, "tmpfs", 0, "size=1m"); err != nil {
				t.Fatal(err)
			}
			if err := d.Unmount(); err != nil {
				t.Fatal(err)
			}
			assertGone(t, parent, "rt")
			if got := entries(t, dir); len(got) > 0 {
				t.Errorf("mount point holds %v after unmount", got)
			}
			if err := d.Unmount(); err != nil {
				t.Errorf("second Unmount: %v", err)
			}
			// The directory is usable again.
			d, err = Mount(context.Background(), dir, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if err := d.Unmount(); err != nil {
				t.Fatal(err)
			}
			assertGone(t, parent, "rt")
		})
	}
}

func TestMountErrors(t *testing.T) {
	requireHost(t)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string) // makes dir's trouble
		cfg   Config
		ctx   context.Context
		want  error // matched with errors.Is when set
	}{
		{name: "missing dir", setup: func(t *testing.T, dir string) { os.Remove(dir) }, cfg: Config{Size: 16 << 20}, want: unix.ENOENT},
		{name: "dir is a file", setup: func(t *testing.T, dir string) {
			os.Remove(dir)
			if err := os.WriteFile(dir, nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}, cfg: Config{Size: 16 << 20}, want: unix.ENOTDIR},
		{name: "dir is a symlink", setup: func(t *testing.T, dir string) {
			os.Remove(dir)
			if err := os.Symlink(t.TempDir(), dir); err != nil {
				t.Fatal(err)
			}
		}, cfg: Config{Size: 16 << 20}, want: unix.ENOTDIR},
		{name: "dir not empty", setup: func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, "x"), nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}, cfg: Config{Size: 16 << 20}, want: unix.ENOTEMPTY},
		{name: "dir is a mount point", setup: func(t *testing.T, dir string) {
			mountTmpfs(t, dir, 1<<20)
		}, cfg: Config{Size: 16 << 20}, want: unix.EBUSY},
		{name: "size too small", cfg: Config{Size: MinSize - 1}},
		{name: "size negative", cfg: Config{Size: -1}},
		{name: "too many inodes for ext4", cfg: Config{Size: 16 << 20, Inodes: 1 << 33}},
		{name: "too many inodes for the size", cfg: Config{Size: 1 << 20, Inodes: 1 << 20}},
		{name: "too many inodes for the size, template", cfg: Config{Size: 1 << 20, Inodes: 1 << 20, TemplateDir: "templates"}},
		{name: "cancelled", cfg: Config{Size: 16 << 20}, ctx: cancelled, want: context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parent := t.TempDir()
			dir := filepath.Join(parent, "rt")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if tt.cfg.TemplateDir != "" {
				tt.cfg.TemplateDir = filepath.Join(t.TempDir(), tt.cfg.TemplateDir)
			}
			if tt.setup != nil {
				tt.setup(t, dir)
			}
			wantEntries := entries(t, parent)
			mountsBefore := mountsUnder(t, parent)
			ctx := tt.ctx
			if ctx == nil {
				ctx = context.Background()
			}
			d, err := Mount(ctx, dir, tt.cfg)
			if err == nil {
				d.Unmount()
				t.Fatal("Mount succeeded")
			}
			t.Log(err)
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("error %v, want %v", err, tt.want)
			}
			if m := mountsUnder(t, parent); !slices.Equal(m, mountsBefore) {
				t.Errorf("mounts %v, were %v", m, mountsBefore)
			}
			if l := boundLoops(t, parent); len(l) > 0 {
				t.Errorf("loop devices left: %v", l)
			}
			if got := entries(t, parent); !slices.Equal(got, wantEntries) {
				t.Errorf("entries of %s: %v, want %v", parent, got, wantEntries)
			}
			if tt.cfg.TemplateDir != "" {
				if got := entriesIfAny(t, tt.cfg.TemplateDir); len(got) > 0 {
					t.Errorf("template dir holds %v after a failed format", got)
				}
			}
		})
	}
}

func entriesIfAny(t testing.TB, dir string) []string {
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return entries(t, dir)
}

// A damaged template fails the mount after the loop device is bound: the
// device must be freed, and the template dropped so the next Mount works.
func TestDamagedTemplate(t *testing.T) {
	requireHost(t)
	parent := t.TempDir()
	dir := filepath.Join(parent, "rt")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := Config{Size: 16 << 20, TemplateDir: t.TempDir()}
	junk := make([]byte, 1<<20)
	for i := range junk {
		junk[i] = byte(i*7 + 1)
	}
	if err := os.WriteFile(templatePath(cfg), junk, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(templatePath(cfg), cfg.Size); err != nil {
		t.Fatal(err)
	}
	_, err := Mount(context.Background(), dir, cfg)
	if err == nil {
		t.Fatal("Mount of a junk template succeeded")
	}
	t.Log(err)
	assertGone(t, parent, "rt")
	if _, err := os.Stat(templatePath(cfg)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("damaged template kept: %v", err)
	}
	d, err := Mount(context.Background(), dir, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Unmount(); err != nil {
		t.Fatal(err)
	}
	assertGone(t, parent, "rt")
}

// Concurrent Mounts race for the same free loop device; all must succeed.
func TestConcurrentMounts(t *testing.T) {
	requireHost(t)
	const n = 8
	for _, f := range formats {
		t.Run(f.name, func(t *testing.T) {
			parent := t.TempDir()
			cfg := f.config(t, Config{Size: 16 << 20})
			disks := make([]*Disk, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i := range n {
				dir := filepath.Join(parent, strconv.Itoa(i))
				if err := os.Mkdir(dir, 0o700); err != nil {
					t.Fatal(err)
				}
				wg.Go(func() { disks[i], errs[i] = Mount(context.Background(), dir, cfg) })
			}
			wg.Wait()
			devs := map[uint64]bool{}
			for i, err := range errs {
				if err != nil {
					t.Errorf("Mount %d: %v", i, err)
					continue
				}
				devs[disks[i].dev] = true
				if err := os.WriteFile(filepath.Join(disks[i].Dir(), "x"), []byte("x"), 0o600); err != nil {
					t.Error(err)
				}
			}
			if len(devs) != n {
				t.Errorf("%d distinct devices for %d disks", len(devs), n)
			}
			for _, d := range disks {
				if d != nil {
					if err := d.Unmount(); err != nil {
						t.Error(err)
					}
				}
			}
			var names []string
			for i := range n {
				names = append(names, strconv.Itoa(i))
			}
			assertGone(t, parent, names...)
		})
	}
}

func TestUnmountLeftover(t *testing.T) {
	requireHost(t)
	t.Run("disk", func(t *testing.T) {
		parent := t.TempDir()
		dir := filepath.Join(parent, "rt")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		// What a crash leaves: the mount, with no Disk to unmount it.
		if _, err := Mount(context.Background(), dir, Config{Size: 16 << 20}); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "x"), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := Unmount(dir); err != nil {
			t.Fatal(err)
		}
		assertGone(t, parent, "rt")
		if err := Unmount(dir); err != nil {
			t.Errorf("second Unmount: %v", err)
		}
	})
	t.Run("no mount", func(t *testing.T) {
		dir := t.TempDir()
		if err := Unmount(dir); err != nil {
			t.Error(err)
		}
		if err := Unmount(filepath.Join(dir, "missing")); err != nil {
			t.Error(err)
		}
	})
	t.Run("tmpfs", func(t *testing.T) {
		dir := t.TempDir()
		mountTmpfs(t, dir, 1<<20)
		if err := Unmount(dir); !errors.Is(err, ErrNotDisk) {
			t.Errorf("Unmount of a tmpfs: %v, want ErrNotDisk", err)
		}
		if opts := mountOptions(t, dir); len(opts) == 0 {
			t.Errorf("tmpfs at %s unmounted", dir)
		}
	})
	t.Run("another's ext4 on a loop device", func(t *testing.T) {
		parent := t.TempDir()
		dir := filepath.Join(parent, "rt")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		mountForeignExt4(t, parent, dir)
		if err := Unmount(dir); !errors.Is(err, ErrNotDisk) {
			t.Errorf("Unmount of another's ext4: %v, want ErrNotDisk", err)
		}
		// Untouched: still mounted, still writable (not shut down).
		if m := mountsUnder(t, parent); len(m) != 1 {
			t.Errorf("mounts in %s: %v, want the foreign ext4", parent, m)
		}
		if err := os.WriteFile(filepath.Join(dir, "x"), []byte("x"), 0o600); err != nil {
			t.Errorf("foreign ext4 no longer writable: %v", err)
		}
	})
}

// mountForeignExt4 mounts at dir an ext4 on a loop device that this package
// did not make (no mark), the way another tool would.
func mountForeignExt4(t *testing.T, parent, dir string) {
	t.Helper()
	cfg := Config{Size: 16 << 20}
	f, err := newTempFile(parent, cfg.size())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := mkfs(context.Background(), f, cfg); err != nil {
		t.Fatal(err)
	}
	ctl, err := unix.Open(loopControl, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ctl)
	lc := unix.LoopConfig{Fd: uint32(f.Fd()), Size: blockSize, Info: unix.LoopInfo64{Flags: unix.LO_FLAGS_AUTOCLEAR}}
	copy(lc.Info.File_name[:], "someone-else")
	for {
		n, err := unix.IoctlRetInt(ctl, unix.LOOP_CTL_GET_FREE)
		if err != nil {
			t.Fatal(err)
		}
		path := "/dev/loop" + strconv.Itoa(n)
		fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := unix.IoctlLoopConfigure(fd, &lc); errors.Is(err, unix.EBUSY) {
			unix.Close(fd)
			continue
		} else if err != nil {
			unix.Close(fd)
			t.Fatal(err)
		}
		defer unix.Close(fd)
		if err := unix.Mount(path, dir, "ext4", 0, ""); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := unix.Unmount(dir, 0); err != nil {
				t.Error(err)
			}
		})
		return
	}
}

// BenchmarkMountUnmount measures a runtime's disk on the cold-start path:
// Mount, one small write, Unmount, for a 1 GiB disk. "dirty" writes 64 MiB (a
// build's dependencies, say) before Unmount, to show that Unmount does not
// write them back.
func BenchmarkMountUnmount(b *testing.B) {
	requireHost(b)
	for _, bc := range []struct {
		name     string
		template bool
		write    int
	}{
		{"template", true, 4096},
		{"mkfs", false, 4096},
		{"template-dirty-64MiB", true, 64 << 20},
	} {
		b.Run(bc.name, func(b *testing.B) {
			parent := b.TempDir()
			cfg := Config{Size: DefaultSize}
			if bc.template {
				cfg.TemplateDir = filepath.Join(b.TempDir(), "templates")
			}
			data := make([]byte, bc.write)
			for i := range data {
				data[i] = byte(i) | 1
			}
			var mountT, unmountT time.Duration
			for i := 0; b.Loop(); i++ {
				dir := filepath.Join(parent, strconv.Itoa(i))
				if err := os.Mkdir(dir, 0o700); err != nil {
					b.Fatal(err)
				}
				start := time.Now()
				d, err := Mount(context.Background(), dir, cfg)
				if err != nil {
					b.Fatal(err)
				}
				mountT += time.Since(start)
				if err := os.WriteFile(filepath.Join(dir, "x"), data, 0o600); err != nil {
					b.Fatal(err)
				}
				start = time.Now()
				if err := d.Unmount(); err != nil {
					b.Fatal(err)
				}
				unmountT += time.Since(start)
			}
			n := float64(b.N)
			b.ReportMetric(float64(mountT.Microseconds())/n/1000, "mount-ms/op")
			b.ReportMetric(float64(unmountT.Microseconds())/n/1000, "unmount-ms/op")
			b.ReportMetric(float64((mountT+unmountT).Microseconds())/n/1000, "ms/op")
		})
	}
}

// Validate needs no root: it is the start-up check of the settings.
func TestConfigValidate(t *testing.T) {
	tests := []struct {
		cfg Config
		ok  bool
	}{
		{Config{}, true},
		{Config{Size: DefaultSize}, true},
		{Config{Size: MinSize}, true},
		{Config{Size: MinSize - 1}, false},
		{Config{Size: -1}, false},
		{Config{Size: DefaultSize, Inodes: 1 << 20}, true},
		{Config{Size: DefaultSize, Inodes: 1 << 33}, false},
		{Config{Size: DefaultSize, Inodes: 8}, false},
	}
	for _, tt := range tests {
		if err := tt.cfg.Validate(); (err == nil) != tt.ok {
			t.Errorf("%+v: Validate() = %v, want ok %v", tt.cfg, err, tt.ok)
		}
	}
}

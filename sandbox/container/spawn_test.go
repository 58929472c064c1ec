package container

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"

	"executor/netns/nettest"
	"executor/oci"
	"executor/tests/cmd/benchtable/samples"
)

// mountTmpfs mounts a small tmpfs on dir (made if missing) until the test
// ends.
func mountTmpfs(t testing.TB, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dir, unix.MNT_DETACH) })
}

// bindMount binds src on dst (made as a directory or empty file like src)
// until the test ends.
func bindMount(t testing.TB, src, dst string) {
	t.Helper()
	st, err := os.Stat(src)
	if err != nil {
		t.Fatal(err)
	}
	if st.IsDir() {
		err = os.MkdirAll(dst, 0o755)
	} else {
		err = os.WriteFile(dst, nil, 0o644)
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(dst, unix.MNT_DETACH) })
}

// spawnMountsBelow lists the mount points below dir in s's namespace, read
// from a thread that joined it.
func spawnMountsBelow(t testing.TB, s *spawnNS, dir string) []string {
	t.Helper()
	type result struct {
		mps []string
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with us
		mps, err := func() ([]string, error) {
			if err := unix.Unshare(unix.CLONE_FS); err != nil {
				return nil, err
			}
			if err := unix.Setns(int(s.ns.Fd()), unix.CLONE_NEWNS); err != nil {
				return nil, err
			}
			f, err := os.Open("/proc/thread-self/mountinfo")
			if err != nil {
				return nil, err
			}
			defer f.Close()
			ms, err := mountinfo.GetMountsFromReader(f, nil)
			var mps []string
			for _, m := range ms {
				if isBelow(dir, m.Mountpoint) {
					mps = append(mps, m.Mountpoint)
				}
			}
			return mps, err
		}()
		done <- result{mps, err}
	}()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	return r.mps
}

func newTestSpawnNS(t testing.TB, dirs, needed []string) *spawnNS {
	t.Helper()
	s, err := newSpawnNS(dirs, needed)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.close() })
	return s
}

func TestSpawnCarried(t *testing.T) {
	requireRoot(t)
	d := t.TempDir()
	// A runtime with a disk: the disk at its directory, its root on it.
	mountTmpfs(t, filepath.Join(d, "disk"))
	mountTmpfs(t, filepath.Join(d, "disk", "root", "rootfs"))
	os.MkdirAll(filepath.Join(d, "disk", "tmp"), 0o755)
	// One without: a plain directory, its root a mount of its own.
	os.MkdirAll(filepath.Join(d, "plain", "tmp"), 0o755)
	mountTmpfs(t, filepath.Join(d, "plain", "root", "rootfs"))
	// A pinned namespace: a file with a bind mount on it.
	os.MkdirAll(filepath.Join(d, "ns"), 0o755)
	bindMount(t, "/proc/self/ns/net", filepath.Join(d, "ns", "pin"))
	outside := t.TempDir()
	s := newTestSpawnNS(t, []string{d}, nil)

	bind := func(src string) *configs.Mount {
		return &configs.Mount{Source: src, Destination: "/x", Device: "bind", Flags: unix.MS_BIND}
	}
	for _, c := range []struct {
		name   string
		rootfs string
		mounts []*configs.Mount
		ns     string
		want   []string
	}{
		{"disk: the disk, with the root on it", "disk/root/rootfs", []*configs.Mount{bind("disk/tmp")}, "", []string{"disk"}},
		{"no disk: the root alone", "plain/root/rootfs", []*configs.Mount{bind("plain/tmp")}, "", []string{"plain/root/rootfs"}},
		{"pinned namespace", "plain/root/rootfs", nil, "ns/pin", []string{"ns/pin", "plain/root/rootfs"}},
		{"nothing mounted below the directory", "plain/tmp", []*configs.Mount{bind("plain")}, "", nil},
		{"a bind's source outside the directories", "plain/root/rootfs", []*configs.Mount{bind(outside)}, "", []string{"plain/root/rootfs"}},
		{"not a bind", "plain/root/rootfs", []*configs.Mount{{Source: "proc", Destination: "/proc", Device: "proc"}}, "", []string{"plain/root/rootfs"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			abs := func(p string) string {
				if p == "" || filepath.IsAbs(p) {
					return p
				}
				return filepath.Join(d, p)
			}
			cfg := &configs.Config{Rootfs: abs(c.rootfs)}
			for _, m := range c.mounts {
				m := *m
				if m.IsBind() {
					m.Source = abs(m.Source)
				}
				cfg.Mounts = append(cfg.Mounts, &m)
			}
			cfg.Namespaces = configs.Namespaces{{Type: configs.NEWNS}, {Type: configs.NEWNET, Path: abs(c.ns)}}
			got, err := s.carried(cfg)
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, w := range c.want {
				want = append(want, abs(w))
			}
			if !slices.Equal(got, want) {
				t.Errorf("carried %q, want %q", got, want)
			}
		})
	}
	t.Run("a path that is gone", func(t *testing.T) {
		if _, err := s.carried(&configs.Config{Rootfs: filepath.Join(d, "gone", "rootfs")}); err == nil {
			t.Error("no error")
		}
	})
}

// TestSpawnNamespace: the spawn namespace holds none of the mounts below its
// directories, whether made before it (an adopted runtime's) or after (it
// takes no propagation), keeps a mount on a directory itself, the mounts of
// and below the needed paths and the kernel's filesystems, holds no other
// mount (it would keep a filesystem the host unmounts alive), and sees the
// files the daemon makes later.
func TestSpawnNamespace(t *testing.T) {
	requireRoot(t)
	base := t.TempDir()
	d := filepath.Join(base, "runtimes")
	mountTmpfs(t, d)
	mountTmpfs(t, filepath.Join(d, "old"))
	mountTmpfs(t, filepath.Join(d, "old", "rootfs"))
	mountTmpfs(t, filepath.Join(d, "other"))
	needed := filepath.Join(base, "data")
	mountTmpfs(t, needed)
	mountTmpfs(t, filepath.Join(needed, "below"))
	unrelated := filepath.Join(base, "unrelated")
	mountTmpfs(t, unrelated)
	s := newTestSpawnNS(t, []string{d}, []string{needed})
	if got := spawnMountsBelow(t, s, d); len(got) > 0 {
		t.Errorf("mounts below %s in the spawn namespace: %q", d, got)
	}
	mountTmpfs(t, filepath.Join(d, "new"))
	if got := spawnMountsBelow(t, s, d); len(got) > 0 {
		t.Errorf("a mount made after reached the spawn namespace: %q", got)
	}
	if got, want := spawnMountsBelow(t, s, base), []string{needed, filepath.Join(needed, "below"), d}; !slices.Equal(sorted(got), sorted(want)) {
		t.Errorf("mounts below %s in the spawn namespace: %q, want %q", base, got, want)
	}
	if got := spawnMountsBelow(t, s, "/sys"); !slices.Contains(got, "/sys/fs/cgroup") && !slices.ContainsFunc(got, func(p string) bool { return isBelow("/sys/fs/cgroup", p) }) {
		t.Errorf("the cgroup hierarchies are gone from the spawn namespace: %q", got)
	}
	// The daemon still has its own.
	if root, err := mountinfo.Mounted(filepath.Join(d, "old", "rootfs")); err != nil || !root {
		t.Errorf("the daemon's mount is gone: %v %v", root, err)
	}
	if _, err := newSpawnNS([]string{"relative"}, nil); err == nil {
		t.Error("a relative directory was taken")
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func TestKeepMount(t *testing.T) {
	dirs := []string{"/data/runtimes", "/data/networks/br/ns"}
	needed := []string{"/data", "/opt/executor/bin"}
	for _, c := range []struct {
		mp   string
		keep bool
	}{
		{"/", true},
		{"/data", true},
		{"/data/runtimes", true},
		{"/data/runtimes/rt-1", false},
		{"/data/runtimes/rt-1/root/rootfs", false},
		{"/data/networks/br/ns/rt-1", false},
		{"/data/images", true},
		{"/opt", true},
		{"/opt/executor/bin/plugins", true},
		{"/opt/other", false},
		{"/proc", true},
		{"/proc/sys/fs/binfmt_misc", true},
		{"/sys/fs/cgroup/memory", true},
		{"/dev/mqueue", true},
		{"/devices", false},
		{"/mnt/volume", false},
		{"/run", false},
		{"/var/lib/kubelet/pods/x/volumes/y", false},
	} {
		if got := keepMount(c.mp, dirs, needed); got != c.keep {
			t.Errorf("keepMount(%q) = %v, want %v", c.mp, got, c.keep)
		}
	}
}

// TestStartFromSpawnNamespace starts, restarts and execs into a container
// whose root, bind source and network namespace are mounts below the
// runner's MountDirs, beside mounts of other runtimes: it runs with its own
// mounts, and the spawn namespace holds none after each start.
func TestStartFromSpawnNamespace(t *testing.T) {
	forEachStarter(t, testStartFromSpawnNamespace)
}

func testStartFromSpawnNamespace(t *testing.T, cfg Config) {
	r, spec, d := spawnFixture(t, cfg)
	// Other runtimes' mounts.
	for i := range 20 {
		mountTmpfs(t, filepath.Join(d, "runtimes", fmt.Sprintf("other-%d", i)))
	}
	c := start(t, r, IDPrefix+"spawn", spec, shell("cat /data; ls /bin | grep -c busybox; cat /proc/net/dev | grep -c lo:"))
	waitDone(t, c)
	if out, code := c.Output(), c.Exit().Code; out != "from the disk\n1\n1\n" || code != 0 {
		t.Errorf("output %q, exit %d", out, code)
	}
	if got := spawnMountsBelow(t, r.spawn, d); len(got) > 0 {
		t.Errorf("left in the spawn namespace after the start: %q", got)
	}
	c2, err := c.Restart()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { destroy(t, c2) })
	waitDone(t, c2)
	if out := c2.Output(); out != "from the disk\n1\n1\n" {
		t.Errorf("restart's output %q", out)
	}
	if got := spawnMountsBelow(t, r.spawn, d); len(got) > 0 {
		t.Errorf("left in the spawn namespace after the restart: %q", got)
	}
}

// A command runs in a container started from the spawn namespace, whose
// root, disk and network namespace the spawn namespace does not hold.
func TestExecFromSpawnNamespace(t *testing.T) {
	forEachStarter(t, func(t *testing.T, cfg Config) {
		r, spec, d := spawnFixture(t, cfg)
		c := start(t, r, IDPrefix+"exec", spec, shell("echo up; exec sleep 60"))
		waitOutput(t, c, "up")
		var out strings.Builder
		code, err := c.Exec(t.Context(), []string{"sh", "-c", "cat /data; exit 3"}, &out, nil)
		if err != nil || code != 3 || out.String() != "from the disk\n" {
			t.Errorf("exec: code %d, %v, output %q", code, err, out.String())
		}
		// A command the context ends is killed, and Exec says so.
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		if code, err := c.Exec(ctx, []string{"sleep", "60"}, nil, nil); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("exec past its context: code %d, %v", code, err)
		}
		if got := spawnMountsBelow(t, r.spawn, d); len(got) > 0 {
			t.Errorf("left in the spawn namespace: %q", got)
		}
	})
}

// spawnFixture is a runner made with cfg and mount directories below d, a
// temporary directory, and the spec of a container whose root, bind source
// (/data, reading "from the disk") and network namespace are mounts below
// them: what a runtime's start carries into the spawn namespace.
func spawnFixture(t *testing.T, cfg Config) (r *Runner, spec oci.Spec, d string) {
	t.Helper()
	requireRoot(t)
	d = t.TempDir()
	cfg.MountDirs = []string{filepath.Join(d, "runtimes"), filepath.Join(d, "ns")}
	r = newRunner(t, cfg)
	if r.spawn == nil {
		t.Fatalf("no spawn namespace: %v", r.SpawnErr())
	}
	rt := filepath.Join(d, "runtimes", "rt")
	mountTmpfs(t, rt) // a disk
	bindMount(t, busyboxRoot(t), filepath.Join(rt, "root", "rootfs"))
	if err := os.WriteFile(filepath.Join(rt, "data"), []byte("from the disk\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(d, "ns"), 0o755); err != nil {
		t.Fatal(err)
	}
	netns := filepath.Join(d, "ns", "pin")
	pinNetNS(t, netns)
	spec = testSpec(filepath.Join(rt, "root", "rootfs"))
	spec.NetNSPath = netns
	spec.Binds = []oci.Bind{{Source: filepath.Join(rt, "data"), Destination: "/data", ReadOnly: true}}
	return r, spec, d
}

// pinNetNS pins a new network namespace on path until the test ends.
func pinNetNS(t testing.TB, path string) {
	t.Helper()
	if err := nettest.CreateNamespace(path); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nettest.RemoveNamespace(path) })
}

// BenchmarkSpawnNamespace starts containers while 3,000 other mounts (what
// 1,000 runtimes' disks, roots and network namespace pins add) are below
// the runner's mount directories: from the daemon's namespace (the baseline,
// which every start copies and walks) and from the spawn namespace.
func BenchmarkSpawnNamespace(b *testing.B) {
	requireRoot(b)
	d := b.TempDir()
	dir := filepath.Join(d, "runtimes")
	root := busyboxRoot(b)
	chownTree(b, root, 1000000000)
	rootfs := filepath.Join(dir, "rt", "rootfs")
	bindMount(b, root, rootfs)
	for i := range 3000 {
		mountTmpfs(b, filepath.Join(dir, fmt.Sprintf("m-%d", i)))
	}
	for _, v := range []struct {
		name      string
		mountDirs []string
	}{{"daemon-namespace", nil}, {"spawn-namespace", []string{dir}}} {
		b.Run(v.name, func(b *testing.B) {
			r := newRunner(b, Config{MountDirs: v.mountDirs})
			var first []time.Duration
			for i := 0; b.Loop(); i++ {
				spec := testSpec(rootfs)
				spec.UserNS = &oci.IDMap{HostUID: 1000000000, HostGID: 1000000000, Size: 65536}
				f, _ := timeStart(b, r, fmt.Sprintf("%sspawn-%d", IDPrefix, i), spec)
				first = append(first, f)
			}
			samples.Report(b, "first-byte", first)
		})
	}
}

// TestStartFromSpawnNamespaceFails: a start that reads a path the spawn
// namespace does not keep (a bind source on a mount made outside the mount
// directories and the needed paths) fails, and leaves no container state,
// no cgroup (newRunner's cleanup checks) and nothing in the spawn namespace.
func TestStartFromSpawnNamespaceFails(t *testing.T) {
	forEachStarter(t, testStartFromSpawnNamespaceFails)
}

func testStartFromSpawnNamespaceFails(t *testing.T, cfg Config) {
	requireRoot(t)
	d := t.TempDir()
	dir := filepath.Join(d, "runtimes")
	elsewhere := filepath.Join(d, "elsewhere")
	mountTmpfs(t, elsewhere)
	if err := os.WriteFile(filepath.Join(elsewhere, "data"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg.MountDirs = []string{dir}
	r := newRunner(t, cfg)
	if r.spawn == nil {
		t.Fatalf("no spawn namespace: %v", r.SpawnErr())
	}
	rt := filepath.Join(dir, "rt")
	mountTmpfs(t, rt)
	bindMount(t, busyboxRoot(t), filepath.Join(rt, "rootfs"))
	spec := testSpec(filepath.Join(rt, "rootfs"))
	spec.Binds = []oci.Bind{{Source: filepath.Join(elsewhere, "data"), Destination: "/data", ReadOnly: true}}
	id := IDPrefix + "spawn-fails"
	c, err := r.Start(id, spec, shell("cat /data"))
	if err == nil {
		destroy(t, c)
		t.Fatal("the start succeeded with a bind source the spawn namespace lacks")
	}
	if _, serr := os.Stat(filepath.Join(r.cfg.StateDir, id)); !os.IsNotExist(serr) {
		t.Errorf("container state left after %v: %v", err, serr)
	}
	if got := spawnMountsBelow(t, r.spawn, d); len(got) > 0 {
		t.Errorf("left in the spawn namespace: %q", got)
	}
}

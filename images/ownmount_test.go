package images

import (
	"context"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// With OwnMount the store's root is a mount of its own, once: a second
// store on the root a store that died left mounted adopts that mount
// rather than stacking another, and Close removes it. A filesystem the
// operator mounted there is neither adopted nor unmounted.
func TestOwnMount(t *testing.T) {
	requireRoot(t)
	root := filepath.Join(t.TempDir(), "images")
	s := newTestStore(t, Config{Root: root, OwnMount: true})
	if n := len(mountPoints(t, root)); n != 1 || !mounted(t, root) {
		t.Fatalf("%s: %d mounts, mount point %v; want its own mount", root, n, mounted(t, root))
	}
	// Roots mount through it, and outlive it (a live restore's runtimes).
	l := newLayout(t, t.TempDir())
	img, err := s.Pull(context.Background(), l.tag(l.image(baseImage()), "v1"))
	if err != nil {
		t.Fatal(err)
	}
	rootfs := mountRoot(t, s, img, filepath.Join(t.TempDir(), "runtime", "root"))

	// A daemon that died left it: the next store takes it on.
	next := newTestStore(t, Config{Root: root, OwnMount: true})
	if n := len(mountPoints(t, root)); n != 1 {
		t.Fatalf("a second store on %s stacked another mount: %d", root, n)
	}
	if err := next.Close(); err != nil {
		t.Fatal(err)
	}
	if mounted(t, root) {
		t.Fatalf("%s still a mount point after Close", root)
	}
	if got := readFile(t, filepath.Join(rootfs, "etc/hello")); got != "layer2" {
		t.Errorf("a root mounted from the store reads etc/hello = %q after its Close, want layer2", got)
	}

	// An operator's filesystem at the root is theirs.
	other := filepath.Join(t.TempDir(), "images")
	if err := unix.Mkdir(other, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", other, "tmpfs", 0, "size=16m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(other, unix.MNT_DETACH) })
	o := newTestStore(t, Config{Root: other, OwnMount: true})
	if n := len(mountPoints(t, other)); n != 1 {
		t.Fatalf("a store on a mounted root added a mount: %d", n)
	}
	if err := o.Close(); err != nil {
		t.Fatal(err)
	}
	if !mounted(t, other) {
		t.Fatal("Close unmounted the operator's filesystem")
	}
}

func mounted(t *testing.T, path string) bool {
	t.Helper()
	ok, err := isMountPoint(path)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

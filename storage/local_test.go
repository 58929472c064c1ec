package storage

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

const canaryText = "HOST-CANARY-never-to-be-read"

// fixture is a storage root holding every kind of entry somebody with
// write access to a shared root (/tmp) can plant, beside a canary file
// outside it, and an Opener confined to the root and to a root that does
// not exist.
type fixture struct {
	top, root, canary, missingRoot string
	opener                         *Opener
}

const testMaxSize = 1 << 20

func newFixture(t *testing.T) *fixture {
	t.Helper()
	top := t.TempDir()
	f := &fixture{top: top, root: filepath.Join(top, "root"), canary: filepath.Join(top, "canary"), missingRoot: filepath.Join(top, "missing-root")}
	must(t, os.WriteFile(f.canary, []byte(canaryText), 0o600))
	r := f.root
	must(t, os.MkdirAll(filepath.Join(r, "sub"), 0o755))
	must(t, os.MkdirAll(r+"x", 0o755)) // shares the root's name as a prefix
	must(t, os.WriteFile(filepath.Join(r+"x", "code.tar.gz"), []byte("sibling"), 0o600))
	must(t, os.WriteFile(filepath.Join(r, "code.tar.gz"), []byte("own bytes"), 0o600))
	must(t, os.WriteFile(filepath.Join(r, "sub", "inner"), []byte("inner bytes"), 0o600))
	must(t, os.Symlink("code.tar.gz", filepath.Join(r, "inside-link")))
	must(t, os.Symlink("sub", filepath.Join(r, "inside-dir-link")))
	must(t, os.Symlink("sub/../code.tar.gz", filepath.Join(r, "inside-dotdot-link")))
	must(t, os.Symlink(filepath.Join(r, "code.tar.gz"), filepath.Join(r, "abs-inside-link")))
	must(t, os.Symlink("../canary", filepath.Join(r, "rel-out-link")))
	must(t, os.Symlink(f.canary, filepath.Join(r, "abs-out-link")))
	must(t, os.Symlink("/proc/self/environ", filepath.Join(r, "proc-link")))
	must(t, os.Symlink("/dev/zero", filepath.Join(r, "zero-link")))
	must(t, os.Symlink("/etc", filepath.Join(r, "etc-link")))
	must(t, os.Symlink(top, filepath.Join(r, "dir-out-link")))
	must(t, unix.Mkfifo(filepath.Join(r, "fifo"), 0o666))
	must(t, unix.Mknod(filepath.Join(r, "zero-dev"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 5))))
	l, err := net.Listen("unix", filepath.Join(r, "socket"))
	must(t, err)
	t.Cleanup(func() { l.Close() })
	sparse, err := os.Create(filepath.Join(r, "sparse"))
	must(t, err)
	must(t, sparse.Truncate(1<<40))
	must(t, sparse.Close())
	must(t, os.WriteFile(filepath.Join(r, "at-limit"), bytes.Repeat([]byte{'x'}, testMaxSize), 0o600))
	f.opener, err = NewOpener(Config{LocalRoots: []string{f.root, f.missingRoot}, MaxSize: testMaxSize})
	must(t, err)
	return f
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// source is the device sources are read from (root "/").
func (f *fixture) source(t *testing.T) Device {
	t.Helper()
	dev, err := f.opener.Open("/")
	must(t, err)
	return dev
}

func (f *fixture) canaryIntact(t *testing.T) {
	t.Helper()
	if b, err := os.ReadFile(f.canary); err != nil || string(b) != canaryText {
		t.Fatalf("canary changed: %q, %v", b, err)
	}
}

func TestLocalRead(t *testing.T) {
	f := newFixture(t)
	r := f.root
	tests := []struct {
		name    string
		path    string
		want    string // content, when no error
		wantErr error
	}{
		{"inside the root", r + "/code.tar.gz", "own bytes", nil},
		{"nested", r + "/sub/inner", "inner bytes", nil},
		{"dot and double slash", r + "/./sub//inner", "inner bytes", nil},
		{"at the size limit", r + "/at-limit", strings.Repeat("x", testMaxSize), nil},
		{"symlink inside the root", r + "/inside-link", "own bytes", nil},
		{"symlinked directory inside the root", r + "/inside-dir-link/inner", "inner bytes", nil},
		{"symlink with .. that stays inside", r + "/inside-dotdot-link", "own bytes", nil},
		{"host file", "/etc/shadow", "", ErrOutsideRoots},
		{"daemon environment", "/proc/self/environ", "", ErrOutsideRoots},
		{"host device", "/dev/zero", "", ErrOutsideRoots},
		{"canary beside the root", f.canary, "", ErrOutsideRoots},
		{"directory sharing the root's prefix", r + "x/code.tar.gz", "", ErrOutsideRoots},
		{"dot-dot", r + "/../canary", "", ErrInvalidPath},
		{"relative symlink out of the root", r + "/rel-out-link", "", ErrOutsideRoots},
		{"absolute symlink out of the root", r + "/abs-out-link", "", ErrOutsideRoots},
		// RESOLVE_BENEATH refuses every absolute link, even one that
		// names a place inside: its meaning depends on the namespace.
		{"absolute symlink into the root", r + "/abs-inside-link", "", ErrOutsideRoots},
		{"symlink to /proc/self/environ", r + "/proc-link", "", ErrOutsideRoots},
		{"symlink to /dev/zero", r + "/zero-link", "", ErrOutsideRoots},
		{"through a symlinked directory out", r + "/dir-out-link/canary", "", ErrOutsideRoots},
		{"through a link to /etc", r + "/etc-link/shadow", "", ErrOutsideRoots},
		{"FIFO", r + "/fifo", "", ErrNotRegular},
		{"device", r + "/zero-dev", "", ErrNotRegular},
		{"socket", r + "/socket", "", ErrNotRegular},
		{"directory", r + "/sub", "", ErrNotRegular},
		{"the root itself", r, "", ErrNotRegular},
		{"sparse 1 TiB file", r + "/sparse", "", ErrTooLarge},
		{"missing", r + "/nope.tar.gz", "", ErrNotFound},
		{"beneath a file", r + "/code.tar.gz/x", "", ErrNotFound},
		{"beneath a missing root", f.missingRoot + "/code.tar.gz", "", ErrNotFound},
	}
	dev := f.source(t)
	ctx := context.Background()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rc, err := dev.Read(ctx, tc.path)
			if tc.wantErr != nil {
				if err == nil {
					rc.Close()
					t.Fatalf("Read(%s) succeeded, want %v", tc.path, tc.wantErr)
				}
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Read(%s) = %v, want %v", tc.path, err, tc.wantErr)
				}
				if !strings.Contains(err.Error(), tc.path) {
					t.Errorf("the error does not name the path: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Read(%s): %v", tc.path, err)
			}
			defer rc.Close()
			b, err := io.ReadAll(rc)
			if err != nil || string(b) != tc.want {
				t.Fatalf("read %.40q, %v; want %.40q", b, err, tc.want)
			}
		})
	}
	f.canaryIntact(t)
}

// The error a client gets names the rule and the setting.
func TestOutsideRootsMessage(t *testing.T) {
	o, err := NewOpener(Config{LocalRoots: []string{"/storage", "/tmp"}})
	must(t, err)
	dev, err := o.Open("/")
	must(t, err)
	_, err = dev.Read(context.Background(), "/etc/shadow")
	const want = "/etc/shadow is outside the storage roots (OPR_EXECUTOR_STORAGE_ROOTS=/storage,/tmp)"
	if !errors.Is(err, ErrOutsideRoots) || err.Error() != want {
		t.Fatalf("Read = %v, want %q", err, want)
	}
	if err := o.CheckPath("/etc/shadow"); err == nil || err.Error() != want {
		t.Fatalf("CheckPath = %v, want %q", err, want)
	}
}

func TestLocalReadGrowingPastTheLimit(t *testing.T) {
	f := newFixture(t)
	p := filepath.Join(f.root, "growing")
	must(t, os.WriteFile(p, []byte("small"), 0o600))
	rc, err := f.source(t).Read(context.Background(), p)
	must(t, err)
	defer rc.Close()
	// The file grows after it was opened and its size checked.
	must(t, os.WriteFile(p, bytes.Repeat([]byte{'y'}, 2*testMaxSize), 0o600))
	if _, err := io.Copy(io.Discard, rc); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("copy = %v, want ErrTooLarge", err)
	}
}

func TestLocalReadCancelled(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	rc, err := f.source(t).Read(ctx, filepath.Join(f.root, "at-limit"))
	must(t, err)
	defer rc.Close()
	buf := make([]byte, 10)
	if _, err := rc.Read(buf); err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := rc.Read(buf); !errors.Is(err, context.Canceled) {
		t.Fatalf("Read after cancel = %v", err)
	}
}

// listTree lists every name beneath dir, with its mode.
func listTree(t *testing.T, dir string) map[string]fs.FileMode {
	t.Helper()
	out := map[string]fs.FileMode{}
	must(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out[rel] = info.Mode()
		return nil
	}))
	return out
}

func sameTree(t *testing.T, before, after map[string]fs.FileMode) {
	t.Helper()
	for name, m := range after {
		if bm, ok := before[name]; !ok || bm != m {
			t.Errorf("left behind or changed: %s %v", name, m)
		}
	}
	for name := range before {
		if _, ok := after[name]; !ok {
			t.Errorf("removed: %s", name)
		}
	}
}

func TestLocalWrite(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		// plant prepares the root; dest is the destination directory
		// (the device root), obj the object name in it.
		plant     func(t *testing.T, f *fixture)
		dest, obj string
		tempName  func() string
		data      string
		wantErr   error
	}{
		{name: "new directories", dest: "/builds/app", obj: "65f0c1a2b3c4d.gz", data: "artifact"},
		{name: "existing directory", dest: "/sub", obj: "a.gz", data: "artifact"},
		{name: "through a symlinked directory inside", dest: "/inside-dir-link/deeper", obj: "a.gz", data: "artifact"},
		{name: "through a symlinked directory out of the root", dest: "/dir-out-link/builds", obj: "a.gz", data: "x", wantErr: ErrOutsideRoots},
		{name: "through a link to /etc", dest: "/etc-link", obj: "a.gz", data: "x", wantErr: ErrOutsideRoots},
		{name: "a link planted at the object's name is replaced, not followed", dest: "/builds", obj: "a.gz", data: "artifact",
			plant: func(t *testing.T, f *fixture) {
				must(t, os.MkdirAll(filepath.Join(f.root, "builds"), 0o700))
				must(t, os.Symlink(f.canary, filepath.Join(f.root, "builds", "a.gz")))
			}},
		{name: "a FIFO planted at the object's name is replaced", dest: "/builds", obj: "a.gz", data: "artifact",
			plant: func(t *testing.T, f *fixture) {
				must(t, os.MkdirAll(filepath.Join(f.root, "builds"), 0o700))
				must(t, unix.Mkfifo(filepath.Join(f.root, "builds", "a.gz"), 0o666))
			}},
		{name: "links planted at every temporary name are refused", dest: "/builds", obj: "a.gz", data: "x",
			tempName: func() string { return ".tmp-planted" }, wantErr: fs.ErrExist,
			plant: func(t *testing.T, f *fixture) {
				must(t, os.MkdirAll(filepath.Join(f.root, "builds"), 0o700))
				must(t, os.Symlink(f.canary, filepath.Join(f.root, "builds", ".tmp-planted")))
			}},
		{name: "a link planted at the first temporary name is skipped", dest: "/builds", obj: "a.gz", data: "artifact",
			tempName: sequence(".tmp-planted", ".tmp-fresh"),
			plant: func(t *testing.T, f *fixture) {
				must(t, os.MkdirAll(filepath.Join(f.root, "builds"), 0o700))
				must(t, os.Symlink(filepath.Join(f.top, "victim"), filepath.Join(f.root, "builds", ".tmp-planted")))
			}},
		{name: "exactly the size limit", dest: "/builds", obj: "a.gz", data: strings.Repeat("z", testMaxSize)},
		{name: "one byte over the size limit", dest: "/sub", obj: "a.gz", data: strings.Repeat("z", testMaxSize+1), wantErr: ErrTooLarge},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			if tc.plant != nil {
				tc.plant(t, f)
			}
			before := listTree(t, f.top)
			dev, err := f.opener.Open(f.root + tc.dest)
			must(t, err)
			if tc.tempName != nil {
				dev.(*Local).tempName = tc.tempName
			}
			p := dev.Root() + "/" + tc.obj
			n, err := dev.Write(ctx, p, strings.NewReader(tc.data))
			f.canaryIntact(t)
			if _, err := os.Lstat(filepath.Join(f.top, "victim")); err == nil {
				t.Error("a file was made at the target of a planted link")
			}
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Write = %d, %v; want %v", n, err, tc.wantErr)
				}
				sameTree(t, before, listTree(t, f.top))
				return
			}
			if err != nil || n != int64(len(tc.data)) {
				t.Fatalf("Write = %d, %v", n, err)
			}
			// Read back without following anything at the name.
			st, err := os.Lstat(p)
			if err != nil || !st.Mode().IsRegular() || st.Mode().Perm() != 0o600 {
				t.Fatalf("written object: %v, %v", st, err)
			}
			if b, _ := os.ReadFile(p); string(b) != tc.data {
				t.Fatalf("content %.40q", b)
			}
			// New directories are 0700, and nothing else was left.
			real, err := filepath.EvalSymlinks(p)
			must(t, err)
			for name, m := range listTree(t, f.top) {
				if _, old := before[name]; old || filepath.Join(f.top, name) == real {
					continue
				}
				if !m.IsDir() || m.Perm() != 0o700 {
					t.Errorf("new entry %s %v", name, m)
				}
			}
		})
	}
}

func sequence(names ...string) func() string {
	i := 0
	return func() string {
		n := names[min(i, len(names)-1)]
		i++
		return n
	}
}

func TestLocalWriteRefusedRoots(t *testing.T) {
	f := newFixture(t)
	before := listTree(t, f.top)
	for _, dest := range []string{"/etc", "/root/x", f.top + "/elsewhere", f.root + "x"} {
		if _, err := f.opener.Open(dest); !errors.Is(err, ErrOutsideRoots) || !strings.Contains(err.Error(), dest) {
			t.Errorf("Open(%s) = %v, want ErrOutsideRoots naming it", dest, err)
		}
	}
	// A missing root is not made.
	dev, err := f.opener.Open(f.missingRoot + "/builds")
	must(t, err)
	if _, err := dev.Write(context.Background(), f.missingRoot+"/builds/a.gz", strings.NewReader("x")); !errors.Is(err, ErrNotFound) {
		t.Errorf("Write beneath a missing root = %v", err)
	}
	sameTree(t, before, listTree(t, f.top))
	if _, err := os.Lstat(f.missingRoot); err == nil {
		t.Error("the missing root was made")
	}
}

// endless yields bytes forever and cancels its context after n of them.
type endless struct {
	n      int
	cancel context.CancelFunc
}

func (e *endless) Read(p []byte) (int, error) {
	e.n -= len(p)
	if e.n <= 0 {
		e.cancel()
	}
	return len(p), nil
}

func TestLocalWriteCancelled(t *testing.T) {
	f := newFixture(t)
	o, err := NewOpener(Config{LocalRoots: []string{f.root}}) // no size limit
	must(t, err)
	dev, err := o.Open(f.root + "/builds")
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err = dev.Write(ctx, f.root+"/builds/a.gz", &endless{n: 4 << 20, cancel: cancel})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Write = %v, want context.Canceled", err)
	}
	if ents, _ := os.ReadDir(filepath.Join(f.root, "builds")); len(ents) != 0 {
		t.Fatalf("left behind: %v", ents)
	}
}

// A failed write keeps the old content and leaves no temp file.
func TestLocalWriteFailureKeepsOldContent(t *testing.T) {
	root := t.TempDir()
	o, err := NewOpener(Config{LocalRoots: []string{root}})
	must(t, err)
	dev, err := o.Open(root)
	must(t, err)
	ctx := context.Background()
	p := dev.Root() + "/65f0c1a2b3c4d.gz"
	if n, err := dev.Write(ctx, p, strings.NewReader("abc")); err != nil || n != 3 {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if _, err := dev.Write(ctx, p, &failingReader{r: newPRNG(1), n: 1 << 20}); !errors.Is(err, errBroken) {
		t.Fatalf("Write = %v", err)
	}
	if b, _ := os.ReadFile(p); string(b) != "abc" {
		t.Fatalf("content after a failed write: %d bytes", len(b))
	}
	if ents, _ := os.ReadDir(root); len(ents) != 1 {
		t.Fatalf("left behind: %v", ents)
	}
	if _, err := dev.Write(ctx, filepath.Join(root, "fresh"), &failingReader{r: newPRNG(1), n: 10}); err == nil {
		t.Fatal("Write succeeded")
	}
	if ok, err := dev.Exists(ctx, filepath.Join(root, "fresh")); ok || err != nil {
		t.Fatalf("Exists after a failed write = %v, %v", ok, err)
	}
	for _, bad := range []string{"../x", root + "/../x", "a/../b", ""} {
		if _, err := dev.Write(ctx, bad, strings.NewReader("x")); !errors.Is(err, ErrInvalidPath) {
			t.Fatalf("Write(%q) = %v, want ErrInvalidPath", bad, err)
		}
	}
}

func TestLocalExistsAndDelete(t *testing.T) {
	f := newFixture(t)
	dev := f.source(t)
	ctx := context.Background()
	r := f.root
	for _, tc := range []struct {
		path    string
		want    bool
		wantErr error
	}{
		{r + "/code.tar.gz", true, nil},
		{r + "/inside-link", true, nil},
		{r + "/nope", false, nil},
		{r + "/fifo", false, nil},
		{r + "/sub", false, nil},
		{f.missingRoot + "/x", false, nil},
		{r + "/abs-out-link", false, ErrOutsideRoots},
		{"/etc/passwd", false, ErrOutsideRoots},
	} {
		ok, err := dev.Exists(ctx, tc.path)
		if ok != tc.want || !errors.Is(err, tc.wantErr) {
			t.Errorf("Exists(%s) = %v, %v; want %v, %v", tc.path, ok, err, tc.want, tc.wantErr)
		}
	}
	// Deleting a link removes the link, never its target.
	must(t, dev.Delete(ctx, r+"/abs-out-link"))
	f.canaryIntact(t)
	if _, err := os.Lstat(r + "/abs-out-link"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("link still there: %v", err)
	}
	must(t, dev.Delete(ctx, r+"/nope"))
	must(t, dev.Delete(ctx, f.missingRoot+"/x"))
	if err := dev.Delete(ctx, f.canary); !errors.Is(err, ErrOutsideRoots) {
		t.Fatalf("Delete outside = %v", err)
	}
	if err := dev.Delete(ctx, r+"/dir-out-link/canary"); !errors.Is(err, ErrOutsideRoots) {
		t.Fatalf("Delete through a link out = %v", err)
	}
	f.canaryIntact(t)
}

func TestCheckPath(t *testing.T) {
	f := newFixture(t)
	linkRoot := filepath.Join(f.top, "link-root")
	must(t, os.Symlink(f.root, linkRoot))
	fileRoot := filepath.Join(f.top, "file-root")
	must(t, os.WriteFile(fileRoot, nil, 0o600))
	o, err := NewOpener(Config{LocalRoots: []string{f.root, f.missingRoot, linkRoot, fileRoot}})
	must(t, err)
	s3, err := NewOpener(Config{DSN: "s3://k:s@localhost/b?region=us-east-1&url=http%3A%2F%2F127.0.0.1%3A1"})
	must(t, err)
	for _, tc := range []struct {
		opener  *Opener
		path    string
		wantErr error
	}{
		{o, f.root + "/code.tar.gz", nil},
		{o, f.root + "/not/yet/made", nil},
		{o, f.root, nil},
		{o, "/etc/shadow", ErrOutsideRoots},
		{o, "/proc/self/environ", ErrOutsideRoots},
		{o, f.root + "x/code.tar.gz", ErrOutsideRoots},
		{o, f.root + "/../canary", ErrInvalidPath},
		{o, "", ErrInvalidPath},
		{o, f.missingRoot + "/x", ErrNotFound},
		{o, linkRoot + "/code.tar.gz", ErrNotFound},
		{o, fileRoot + "/x", ErrNotFound},
		{s3, "/etc/shadow", nil},
		{s3, "/a/../b", ErrInvalidPath},
	} {
		if err := tc.opener.CheckPath(tc.path); !errors.Is(err, tc.wantErr) || (err != nil && !strings.Contains(err.Error(), tc.path)) {
			t.Errorf("CheckPath(%s) = %v, want %v", tc.path, err, tc.wantErr)
		}
	}
}

func TestNewOpenerRoots(t *testing.T) {
	for _, tc := range []struct {
		roots []string
		ok    bool
	}{
		{[]string{"/storage", "/tmp"}, true},
		{[]string{"/storage/", "/storage"}, true},
		{nil, true},
		{[]string{"/"}, false},
		{[]string{"//"}, false},
		{[]string{"storage"}, false},
		{[]string{"/storage/../etc"}, false},
	} {
		if _, err := NewOpener(Config{LocalRoots: tc.roots}); (err == nil) != tc.ok {
			t.Errorf("NewOpener(%q) = %v", tc.roots, err)
		}
	}
	// Nested roots: the innermost holds a path, so links in it may not
	// climb into the outer one.
	top := t.TempDir()
	inner := filepath.Join(top, "inner")
	must(t, os.MkdirAll(inner, 0o755))
	must(t, os.WriteFile(filepath.Join(top, "outer-file"), []byte("outer"), 0o600))
	must(t, os.Symlink("../outer-file", filepath.Join(inner, "up")))
	o, err := NewOpener(Config{LocalRoots: []string{top, inner}})
	must(t, err)
	dev, err := o.Open("/")
	must(t, err)
	if _, err := dev.Read(context.Background(), inner+"/up"); !errors.Is(err, ErrOutsideRoots) {
		t.Fatalf("Read through a link out of the inner root = %v", err)
	}
}

func TestRootsFromEnv(t *testing.T) {
	top := t.TempDir()
	file := filepath.Join(top, "file")
	must(t, os.WriteFile(file, nil, 0o600))
	link := filepath.Join(top, "link")
	must(t, os.Symlink(top, link))
	for _, tc := range []struct {
		value string
		want  []string // nil: an error naming the variable
	}{
		{"", []string{"/storage", "/tmp"}},
		{"  ", []string{"/storage", "/tmp"}},
		{" " + top + "/ , /storage,," + top, []string{top, "/storage"}},
		{top + "/does-not-exist-yet", []string{top + "/does-not-exist-yet"}},
		{",", nil},
		{"relative/dir", nil},
		{"/", nil},
		{"/storage,/", nil},
		{"/storage/../etc", nil},
		{file, nil},
		{link, nil},
	} {
		got, err := RootsFromEnv(envOf(map[string]string{EnvStorageRoots: tc.value}))
		if tc.want == nil {
			if err == nil || !strings.Contains(err.Error(), EnvStorageRoots) {
				t.Errorf("RootsFromEnv(%q) = %q, %v; want an error naming %s", tc.value, got, err, EnvStorageRoots)
			}
			continue
		}
		if err != nil || strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("RootsFromEnv(%q) = %q, %v; want %q", tc.value, got, err, tc.want)
		}
	}
}

// The build cache's device lives in a directory the daemon owns, made
// on the first write, and keeps to it.
func TestNewLocal(t *testing.T) {
	top := t.TempDir()
	root := filepath.Join(top, "data", "build-cache")
	dev, err := NewLocal(root)
	must(t, err)
	ctx := context.Background()
	if _, err := dev.Read(ctx, root+"/key/lz4-b1M/stores.sqfs"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Read before the root exists = %v", err)
	}
	obj := root + "/key/lz4-b1M/stores.sqfs"
	if _, err := dev.Write(ctx, obj, strings.NewReader("cache")); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(root); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("root: %v, %v", st, err)
	}
	rc, err := dev.Read(ctx, obj)
	must(t, err)
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "cache" {
		t.Fatalf("read %q", b)
	}
	// A path outside is read relative to the root, as the reference does.
	if _, err := dev.Read(ctx, "/key/lz4-b1M/stores.sqfs"); err != nil {
		t.Fatalf("relative read: %v", err)
	}
	if _, err := NewLocal("/"); err == nil {
		t.Fatal("NewLocal(/) succeeded")
	}
}

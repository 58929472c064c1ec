package safefs

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

const canaryText = "HOST-CANARY-never-to-be-read"

// layout makes a directory with one entry of every kind a runtime can
// plant, beside a canary file outside it. It returns the directory.
func layout(t *testing.T) (dir, canary string) {
	t.Helper()
	top := t.TempDir()
	canary = filepath.Join(top, "canary")
	must(t, os.WriteFile(canary, []byte(canaryText), 0o600))
	dir = filepath.Join(top, "dir")
	must(t, os.MkdirAll(filepath.Join(dir, "sub"), 0o755))
	must(t, os.WriteFile(filepath.Join(dir, "regular"), []byte("own bytes"), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "sub", "inner"), []byte("inner bytes"), 0o644))
	must(t, os.Symlink(canary, filepath.Join(dir, "abs-link")))
	must(t, os.Symlink("../canary", filepath.Join(dir, "rel-link")))
	must(t, os.Symlink("regular", filepath.Join(dir, "inside-link")))
	must(t, os.Symlink("/proc/self/environ", filepath.Join(dir, "proc-link")))
	must(t, os.Symlink("/dev/zero", filepath.Join(dir, "zero-link")))
	must(t, os.Symlink(top, filepath.Join(dir, "dir-link")))
	must(t, os.Symlink("sub", filepath.Join(dir, "inside-dir-link")))
	must(t, unix.Mkfifo(filepath.Join(dir, "fifo"), 0o644))
	must(t, unix.Mknod(filepath.Join(dir, "zero-dev"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 5))))
	l, err := net.Listen("unix", filepath.Join(dir, "socket"))
	must(t, err)
	t.Cleanup(func() { l.Close() })
	sparse, err := os.Create(filepath.Join(dir, "sparse"))
	must(t, err)
	must(t, sparse.Truncate(1<<40))
	must(t, sparse.Close())
	return dir, canary
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// modes runs f with openat2 and with the element-by-element walk that
// stands in for it on older kernels.
func modes(t *testing.T, opts Options, f func(t *testing.T, open func(string) *Dir)) {
	for _, useOpenat2 := range []bool{true, false} {
		name := "openat2"
		if !useOpenat2 {
			name = "fallback"
		}
		t.Run(name, func(t *testing.T) {
			f(t, func(path string) *Dir {
				d, err := OpenDir(path, opts)
				must(t, err)
				if useOpenat2 && !d.openat2 {
					t.Fatal("openat2 is not usable on this kernel (5.6+ needed); the tests need it")
				}
				d.openat2 = useOpenat2
				t.Cleanup(func() { d.Close() })
				return d
			})
		})
	}
}

func TestReadFileEveryKind(t *testing.T) {
	tests := []struct {
		name    string
		want    string // contents when it may be read
		wantErr error  // without FollowBeneath
		// with FollowBeneath: the link-free entries behave the same,
		// links inside are followed, links out refused.
		followWant string
		followErr  error
	}{
		{name: "regular", want: "own bytes", followWant: "own bytes"},
		{name: "sub/inner", want: "inner bytes", followWant: "inner bytes"},
		{name: "abs-link", wantErr: ErrSymlink, followErr: ErrEscape},
		{name: "rel-link", wantErr: ErrSymlink, followErr: ErrEscape},
		{name: "proc-link", wantErr: ErrSymlink, followErr: ErrEscape},
		{name: "zero-link", wantErr: ErrSymlink, followErr: ErrEscape},
		{name: "dir-link/canary", wantErr: ErrSymlink, followErr: ErrEscape},
		{name: "inside-link", wantErr: ErrSymlink, followWant: "own bytes"},
		{name: "inside-dir-link/inner", wantErr: ErrSymlink, followWant: "inner bytes"},
		{name: "fifo", wantErr: ErrNotRegular, followErr: ErrNotRegular},
		{name: "zero-dev", wantErr: ErrNotRegular, followErr: ErrNotRegular},
		{name: "socket", wantErr: ErrNotRegular, followErr: ErrNotRegular},
		{name: "sub", wantErr: ErrNotRegular, followErr: ErrNotRegular},
		{name: "missing", wantErr: fs.ErrNotExist, followErr: fs.ErrNotExist},
		{name: "../canary", wantErr: ErrInvalidName, followErr: ErrInvalidName},
		{name: "/etc/shadow", wantErr: ErrInvalidName, followErr: ErrInvalidName},
		{name: "sub/../regular", wantErr: ErrInvalidName, followErr: ErrInvalidName},
		{name: "", wantErr: ErrInvalidName, followErr: ErrInvalidName},
	}
	for _, follow := range []bool{false, true} {
		t.Run(map[bool]string{false: "nofollow", true: "follow-beneath"}[follow], func(t *testing.T) {
			modes(t, Options{FollowBeneath: follow}, func(t *testing.T, open func(string) *Dir) {
				dir, _ := layout(t)
				d := open(dir)
				for _, tc := range tests {
					want, wantErr := tc.want, tc.wantErr
					if follow {
						want, wantErr = tc.followWant, tc.followErr
						if !d.openat2 && errors.Is(wantErr, ErrEscape) {
							// securejoin scopes links to the directory
							// instead of refusing them: what matters is
							// that nothing outside is read.
							wantErr = nil
						}
						if !d.openat2 && tc.name == "inside-link" {
							// Without openat2 a link as the last
							// element is refused even inside.
							want, wantErr = "", ErrSymlink
						}
					}
					data, _, err := d.ReadFile(tc.name, 1<<20)
					if bytes.Contains(data, []byte(canaryText)) || bytes.Contains(data, []byte("PATH=")) {
						t.Fatalf("%s: read from outside the directory: %q", tc.name, data)
					}
					if wantErr == nil && want == "" {
						continue // any refusal is fine, as long as nothing leaked
					}
					if wantErr != nil {
						if !errors.Is(err, wantErr) {
							t.Errorf("%s: err = %v, want %v", tc.name, err, wantErr)
						}
						continue
					}
					if err != nil || string(data) != want {
						t.Errorf("%s: got %q, %v; want %q", tc.name, data, err, want)
					}
				}
			})
		})
	}
}

func TestReadFileCapsASparseTerabyte(t *testing.T) {
	modes(t, Options{}, func(t *testing.T, open func(string) *Dir) {
		dir, _ := layout(t)
		data, size, err := open(dir).ReadFile("sparse", 4096)
		if err != nil {
			t.Fatal(err)
		}
		if len(data) != 4096 || size != 1<<40 {
			t.Fatalf("read %d bytes of a file of %d; want 4096 of %d", len(data), size, int64(1<<40))
		}
	})
}

func TestCreateRefusesWhatIsPlanted(t *testing.T) {
	modes(t, Options{}, func(t *testing.T, open func(string) *Dir) {
		dir, canary := layout(t)
		d := open(dir)
		for _, name := range []string{"abs-link", "rel-link", "fifo", "zero-dev", "regular", "socket", "dir-link/new", "inside-dir-link/new"} {
			f, err := d.Create(name, 0o644)
			if err == nil {
				f.Close()
				t.Errorf("Create(%s) succeeded over a planted entry", name)
			}
		}
		if b, _ := os.ReadFile(canary); string(b) != canaryText {
			t.Fatalf("canary changed: %q", b)
		}
		if _, err := os.Lstat(filepath.Join(filepath.Dir(dir), "new")); err == nil {
			t.Fatal("a file was created through a directory link")
		}
		must(t, d.WriteFile("sub/fresh", []byte("x"), 0o600))
		if b, err := os.ReadFile(filepath.Join(dir, "sub", "fresh")); err != nil || string(b) != "x" {
			t.Fatalf("fresh file: %q, %v", b, err)
		}
	})
}

func TestRemoveAndRenameTouchLinksNotTargets(t *testing.T) {
	modes(t, Options{}, func(t *testing.T, open func(string) *Dir) {
		dir, canary := layout(t)
		d := open(dir)
		must(t, d.Remove("abs-link"))
		must(t, d.Rename("regular", "rel-link")) // replaces the link
		if b, _ := os.ReadFile(canary); string(b) != canaryText {
			t.Fatalf("canary changed: %q", b)
		}
		if b, err := os.ReadFile(filepath.Join(dir, "rel-link")); err != nil || string(b) != "own bytes" {
			t.Fatalf("renamed file: %q, %v", b, err)
		}
		if err := d.Remove("dir-link/canary"); !errors.Is(err, ErrSymlink) {
			t.Fatalf("remove through a link: %v, want ErrSymlink", err)
		}
		if err := d.Mkdir("inside-dir-link/x", 0o755); !errors.Is(err, ErrSymlink) {
			t.Fatalf("mkdir through a link: %v, want ErrSymlink", err)
		}
		must(t, d.Mkdir("sub/made", 0o700))
	})
}

func TestChownTreeLeavesLinkTargetsAlone(t *testing.T) {
	modes(t, Options{}, func(t *testing.T, open func(string) *Dir) {
		dir, canary := layout(t)
		d := open(dir)
		must(t, d.ChownTree(".", 4242, 4343))
		var st unix.Stat_t
		must(t, unix.Stat(canary, &st))
		if st.Uid == 4242 {
			t.Fatal("the canary outside was chowned through a link")
		}
		for _, p := range []string{".", "regular", "sub", "sub/inner", "abs-link", "fifo"} {
			must(t, unix.Lstat(filepath.Join(dir, p), &st))
			if st.Uid != 4242 || st.Gid != 4343 {
				t.Errorf("%s owned by %d:%d, want 4242:4343", p, st.Uid, st.Gid)
			}
		}
		if err := d.ChownTree("dir-link", 1, 1); !errors.Is(err, ErrSymlink) {
			t.Fatalf("ChownTree through a link: %v, want ErrSymlink", err)
		}
	})
}

// A runtime swapping a name between its own file and a link to a host file
// as fast as it can never gets the host file read.
func TestSwapRace(t *testing.T) {
	modes(t, Options{}, func(t *testing.T, open func(string) *Dir) {
		dir, canary := layout(t)
		d := open(dir)
		target := filepath.Join(dir, "swap")
		own := filepath.Join(dir, "swap-own")
		link := filepath.Join(dir, "swap-link")
		must(t, os.WriteFile(own, []byte("own bytes"), 0o644))
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				_ = os.Remove(link)
				if i%2 == 0 {
					_ = os.Symlink(canary, link)
				} else {
					_ = os.Link(own, link)
				}
				_ = os.Rename(link, target)
			}
		}()
		reads := 0
		for i := 0; i < 20000; i++ {
			data, _, err := d.ReadFile("swap", 1<<10)
			if bytes.Contains(data, []byte(canaryText)) {
				close(stop)
				wg.Wait()
				t.Fatalf("read the host canary after %d tries", i)
			}
			if err == nil {
				reads++
			}
		}
		close(stop)
		wg.Wait()
		if reads == 0 {
			t.Fatal("the runtime's own file was never read: the race test tested nothing")
		}
	})
}

func TestReaderCapsAndCancels(t *testing.T) {
	tests := []struct {
		size, limit int64
		wantErr     error
	}{
		{size: 10, limit: 10},
		{size: 0, limit: 0},
		{size: 11, limit: 10, wantErr: ErrTooLarge},
		{size: 1 << 20, limit: 1<<20 - 1, wantErr: ErrTooLarge},
	}
	for _, tc := range tests {
		n, err := io.Copy(io.Discard, Reader(context.Background(), io.LimitReader(zeros{}, tc.size), tc.limit))
		if !errors.Is(err, tc.wantErr) {
			t.Errorf("size %d limit %d: err %v, want %v", tc.size, tc.limit, err, tc.wantErr)
		}
		if tc.wantErr == nil && n != tc.size {
			t.Errorf("size %d limit %d: copied %d", tc.size, tc.limit, n)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := io.Copy(io.Discard, Reader(ctx, zeros{}, 1<<40)); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled copy: %v", err)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// A subdirectory opened once serves its names as the parent would; one
// reached through a link, or not a directory, is refused, and the child
// keeps the parent's way of resolving.
func TestOpenDir(t *testing.T) {
	dir, _ := layout(t)
	modes(t, Options{}, func(t *testing.T, open func(string) *Dir) {
		d := open(dir)
		sub, err := d.OpenDir("sub")
		must(t, err)
		defer sub.Close()
		if sub.openat2 != d.openat2 {
			t.Errorf("the subdirectory resolves with openat2=%v, its parent with %v", sub.openat2, d.openat2)
		}
		data, _, err := sub.ReadFile("inner", 100)
		if err != nil || string(data) != "inner bytes" {
			t.Errorf("read inner: %q %v", data, err)
		}
		for _, name := range []string{"dir-link", "inside-dir-link", "regular", "fifo", "missing", "../dir"} {
			if s, err := d.OpenDir(name); err == nil {
				s.Close()
				t.Errorf("OpenDir(%q) worked", name)
			}
		}
		must(t, sub.WriteFile("scratch", []byte("x"), 0o600))
		must(t, sub.Remove("scratch"))
		if _, err := os.Lstat(filepath.Join(dir, "sub", "scratch")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("scratch left behind: %v", err)
		}
	})
}

func TestDrain(t *testing.T) {
	modes(t, Options{}, func(t *testing.T, open func(string) *Dir) {
		dir, canary := layout(t)
		must(t, os.WriteFile(filepath.Join(dir, "empty"), nil, 0o644))
		d := open(dir)
		tests := []struct {
			name    string
			limit   int64
			want    string
			size    int64
			err     error  // nil: no error
			leftLen int64  // the file's length after, -1: not a regular file
			target  string // a file that must keep its bytes
		}{
			{name: "regular", limit: 1 << 10, want: "own bytes", size: 9},
			{name: "sub/inner", limit: 1 << 10, want: "inner bytes", size: 11},
			{name: "regular", limit: 1 << 10, want: "", size: 0}, // drained by the row before
			{name: "empty", limit: 1 << 10},
			{name: "sparse", limit: 4096, want: string(make([]byte, 4096)), size: 1 << 40},
			{name: "abs-link", limit: 1 << 10, err: ErrSymlink, leftLen: -1, target: canary},
			{name: "rel-link", limit: 1 << 10, err: ErrSymlink, leftLen: -1, target: canary},
			{name: "inside-link", limit: 1 << 10, err: ErrSymlink, leftLen: -1},
			{name: "zero-link", limit: 1 << 10, err: ErrSymlink, leftLen: -1},
			{name: "dir-link/canary", limit: 1 << 10, err: ErrSymlink, leftLen: -1, target: canary},
			{name: "fifo", limit: 1 << 10, err: ErrNotRegular, leftLen: -1},
			{name: "socket", limit: 1 << 10, err: ErrNotRegular, leftLen: -1},
			{name: "zero-dev", limit: 1 << 10, err: ErrNotRegular, leftLen: -1},
			{name: "sub", limit: 1 << 10, err: ErrNotRegular, leftLen: -1},
			{name: "missing", limit: 1 << 10, err: fs.ErrNotExist, leftLen: -1},
			{name: "../canary", limit: 1 << 10, err: ErrInvalidName, leftLen: -1, target: canary},
		}
		for _, tt := range tests {
			data, size, err := d.Drain(tt.name, tt.limit)
			switch {
			case tt.err == nil && err != nil:
				t.Errorf("Drain(%s): %v", tt.name, err)
			case tt.err != nil && !errors.Is(err, tt.err):
				t.Errorf("Drain(%s): %v, want %v", tt.name, err, tt.err)
			case string(data) != tt.want || size != tt.size:
				t.Errorf("Drain(%s): %d bytes (%.20q) of %d, want %d of %d", tt.name, len(data), data, size, len(tt.want), tt.size)
			}
			if tt.leftLen >= 0 {
				st, err := os.Lstat(filepath.Join(dir, tt.name))
				if err != nil || !st.Mode().IsRegular() || st.Size() != tt.leftLen {
					t.Errorf("after Drain(%s): %v, %v; want a regular file of %d bytes kept", tt.name, st, err, tt.leftLen)
				}
			}
			if tt.target != "" {
				if b, _ := os.ReadFile(tt.target); string(b) != canaryText {
					t.Fatalf("Drain(%s) changed %s: %q", tt.name, tt.target, b)
				}
			}
		}
	})
}

// TestDrainKeepsTheWriter: a writer that holds the file open for appending
// writes at its new end once it is drained, and the next Drain takes only
// what came after.
func TestDrainKeepsTheWriter(t *testing.T) {
	dir := t.TempDir()
	w, err := os.OpenFile(filepath.Join(dir, "x_logs.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	must(t, err)
	defer w.Close()
	d, err := OpenDir(dir, Options{})
	must(t, err)
	defer d.Close()
	for i, line := range []string{"first\n", "second\n", ""} {
		if line != "" {
			_, err := w.WriteString(line)
			must(t, err)
		}
		data, size, err := d.Drain("x_logs.log", 1<<10)
		if err != nil || string(data) != line || size != int64(len(line)) {
			t.Fatalf("drain %d: %q of %d, %v; want %q", i, data, size, err, line)
		}
	}
}

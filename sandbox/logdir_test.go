package sandbox

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"executor/storage/safefs"

	"golang.org/x/sys/unix"
)

func TestLogDir(t *testing.T) {
	rt := t.TempDir()
	read := func(l *logDir, name string) (string, error) {
		var data []byte
		err := l.do(rt, func(d *safefs.Dir) (err error) {
			data, _, err = d.ReadFile(name, 1<<10)
			return err
		})
		return string(data), err
	}

	t.Run("no directory yet, then one: opened once it exists", func(t *testing.T) {
		var l logDir
		defer l.release()
		if _, err := read(&l, "a.log"); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("before logs/ exists: %v, want not exist", err)
		}
		if err := os.Mkdir(filepath.Join(rt, "logs"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(rt, "logs", "a.log"), []byte("a"), 0o644); err != nil {
			t.Fatal(err)
		}
		if got, err := read(&l, "a.log"); err != nil || got != "a" {
			t.Fatalf("read %q, %v", got, err)
		}
		// Held: what the path names later does not matter.
		if err := os.Rename(filepath.Join(rt, "logs"), filepath.Join(rt, "moved")); err != nil {
			t.Fatal(err)
		}
		defer os.Rename(filepath.Join(rt, "moved"), filepath.Join(rt, "logs"))
		if got, err := read(&l, "a.log"); err != nil || got != "a" {
			t.Fatalf("read through the held directory %q, %v", got, err)
		}
	})

	t.Run("a link as logs/ is refused", func(t *testing.T) {
		other := t.TempDir()
		if err := os.WriteFile(filepath.Join(other, "a.log"), []byte("host"), 0o644); err != nil {
			t.Fatal(err)
		}
		rt := t.TempDir()
		if err := os.Symlink(other, filepath.Join(rt, "logs")); err != nil {
			t.Fatal(err)
		}
		var l logDir
		defer l.release()
		err := l.do(rt, func(*safefs.Dir) error { return nil })
		if err == nil {
			t.Fatal("a link to another directory was opened as logs/")
		}
	})

	t.Run("released: no use after, none beneath", func(t *testing.T) {
		var l logDir
		if _, err := read(&l, "a.log"); err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range 200 {
					if _, err := read(&l, "a.log"); err != nil && !errors.Is(err, errLogsReleased) {
						t.Errorf("read during release: %v", err)
						return
					}
				}
			})
		}
		l.release()
		wg.Wait()
		if _, err := read(&l, "a.log"); !errors.Is(err, errLogsReleased) {
			t.Fatalf("after release: %v, want errLogsReleased", err)
		}
		if l.dir != nil {
			t.Fatal("the directory is still held")
		}
	})

	t.Run("removals: queued, then done by removePending at the latest", func(t *testing.T) {
		rt := t.TempDir()
		logs := filepath.Join(rt, "logs")
		if err := os.Mkdir(logs, 0o755); err != nil {
			t.Fatal(err)
		}
		var names []string
		for i := range 50 {
			name := "f" + string(rune('a'+i%26)) + string(rune('a'+i/26))
			if err := os.WriteFile(filepath.Join(logs, name), nil, 0o644); err != nil {
				t.Fatal(err)
			}
			names = append(names, name)
		}
		var l logDir
		defer l.release()
		var mu sync.Mutex
		var warned []string
		warn := func(name string, err error) {
			mu.Lock()
			warned = append(warned, name+": "+err.Error())
			mu.Unlock()
		}
		for _, n := range names {
			l.removeLater(rt, n, warn)
		}
		l.removeLater(rt, "never-there", warn) // gone already: no warning
		// A directory the runtime made under a log file's name is not removed (nor what is in it): said.
		if err := os.MkdirAll(filepath.Join(logs, "planted", "inside"), 0o755); err != nil {
			t.Fatal(err)
		}
		l.removeLater(rt, "planted", warn)
		l.removePending(rt, warn)
		if left, _ := os.ReadDir(logs); len(left) != 1 || left[0].Name() != "planted" {
			t.Fatalf("left after removePending: %v, want only the planted directory", left)
		}
		l.removePending(rt, warn) // nothing queued: nothing done
		mu.Lock()
		defer mu.Unlock()
		if len(warned) != 1 || !strings.HasPrefix(warned[0], "planted: ") {
			t.Fatalf("warnings: %v, want one for the planted directory", warned)
		}
	})

	t.Run("removals after release: dropped with the directory", func(t *testing.T) {
		rt := t.TempDir()
		if err := os.Mkdir(filepath.Join(rt, "logs"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(rt, "logs", "x"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		var l logDir
		l.release()
		var warned atomic.Bool
		l.removeLater(rt, "x", func(string, error) { warned.Store(true) })
		l.removePending(rt, func(string, error) { warned.Store(true) })
		if warned.Load() {
			t.Fatal("a removal after release warned")
		}
		if _, err := os.Stat(filepath.Join(rt, "logs", "x")); err != nil {
			t.Fatalf("a released directory was touched: %v", err)
		}
	})

	t.Run("log ids: one execution each, given back, retired for good", func(t *testing.T) {
		rt := t.TempDir()
		logs := filepath.Join(rt, "logs")
		if err := os.Mkdir(logs, 0o755); err != nil {
			t.Fatal(err)
		}
		var l, later logDir
		defer l.release()
		defer later.release()
		valid := regexp.MustCompile(`^[A-Za-z0-9_-]+$`) // what the protocol accepts as an answered id
		var mu sync.Mutex
		held := map[string]bool{}
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range 200 {
					id := l.lend()
					mu.Lock()
					if held[id] || !valid.MatchString(id) {
						t.Errorf("lent %q: held by another execution, or not a valid log id", id)
					}
					held[id] = true
					mu.Unlock()
					mu.Lock()
					delete(held, id)
					mu.Unlock()
					l.giveBack(id)
				}
			})
		}
		wg.Wait()
		if n := len(l.idFree); n > 8 {
			t.Errorf("%d ids made for 8 executions at a time", n)
		}
		id := l.lend()
		l.giveBack(id)
		if again := l.lend(); again != id {
			t.Errorf("lent %q after %q was given back; want it again", again, id)
		}
		for _, suffix := range []string{"_logs.log", "_errors.log"} {
			if err := os.WriteFile(filepath.Join(logs, id+suffix), []byte("late"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		warn := func(name string, err error) { t.Errorf("warned for %s: %v", name, err) }
		l.retire(rt, id, warn)
		l.removePending(rt, warn)
		if left, _ := os.ReadDir(logs); len(left) != 0 {
			t.Errorf("a retired id's files left: %v", left)
		}
		for range 100 {
			if got := l.lend(); got == id {
				t.Fatalf("retired id %q lent again", id)
			}
		}
		// A later daemon adopting the runtime holds another logDir.
		if a, b := l.lend(), later.lend(); strings.SplitN(a, "-", 2)[0] == strings.SplitN(b, "-", 2)[0] {
			t.Errorf("two logDirs lend %q and %q: the same names", a, b)
		}
	})

	t.Run("Take: a lent id's files emptied and counted, others removed", func(t *testing.T) {
		rt := t.TempDir()
		logs := filepath.Join(rt, "logs")
		if err := os.Mkdir(logs, 0o755); err != nil {
			t.Fatal(err)
		}
		r := &Runtime{ID: "take", Dir: rt, log: slog.New(slog.DiscardHandler)}
		defer r.logs.release()
		files := &logFiles{r: r, lent: r.logs.lend()}
		write := func(name, s string) {
			if err := os.WriteFile(filepath.Join(logs, name), []byte(s), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		write(files.lent+"_logs.log", "own line\n")
		write("other_logs.log", "other line\n")
		for _, tc := range []struct{ name, want string }{
			{files.lent + "_logs.log", "own line\n"},
			{files.lent + "_errors.log", ""}, // missing: taken all the same
			{"other_logs.log", "other line\n"},
		} {
			data, _, err := files.Take(tc.name, 1<<10)
			if string(data) != tc.want || (err != nil && !errors.Is(err, fs.ErrNotExist)) {
				t.Errorf("Take(%s): %q, %v; want %q", tc.name, data, err, tc.want)
			}
		}
		if files.taken != 2 {
			t.Errorf("%d of the lent id's files taken, want 2", files.taken)
		}
		r.logs.removePending(rt, r.warnLogRemoval)
		if st, err := os.Stat(filepath.Join(logs, files.lent+"_logs.log")); err != nil || st.Size() != 0 {
			t.Errorf("the lent id's file: %v, %v; want it kept, empty", st, err)
		}
		if _, err := os.Lstat(filepath.Join(logs, "other_logs.log")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("another id's file: %v, want it removed", err)
		}
		// A lent id's file the daemon may not write (append-only here;
		// for a rootless daemon, one a runtime user other than the mapped
		// root made) is read and removed instead, not counted.
		files = &logFiles{r: r, lent: r.logs.lend()}
		name := files.lent + "_logs.log"
		write(name, "kept line\n")
		setAppendOnly(t, filepath.Join(logs, name), true)
		// Take queues the file's removal, on a goroutine of its own when
		// nothing else is queued, which would race the flag's clearing
		// below (an append-only file may not be removed: that part of the
		// stand-in is the test's). With a name queued already, it waits
		// for the removePending below.
		r.logs.rm.Lock()
		r.logs.pending = append(r.logs.pending, "queued_logs.log")
		r.logs.rm.Unlock()
		data, _, err := files.Take(name, 1<<10)
		if string(data) != "kept line\n" || err != nil || files.taken != 0 {
			t.Errorf("Take of a file not writable: %q, %v, %d taken; want its line, not counted", data, err, files.taken)
		}
		setAppendOnly(t, filepath.Join(logs, name), false)
		r.logs.removePending(rt, r.warnLogRemoval)
		if _, err := os.Lstat(filepath.Join(logs, name)); err == nil {
			t.Errorf("%s: kept, want it removed once readable only", name)
		}
		// A link planted under the lent name is refused, not counted.
		files = &logFiles{r: r, lent: r.logs.lend()}
		if err := os.Symlink("/etc/passwd", filepath.Join(logs, files.lent+"_logs.log")); err != nil {
			t.Fatal(err)
		}
		if data, _, err := files.Take(files.lent+"_logs.log", 1<<10); err == nil || len(data) != 0 || files.taken != 0 {
			t.Errorf("Take of a planted link: %q, %v, %d taken", data, err, files.taken)
		}
	})
}

// fsAppendFL is FS_APPEND_FL of linux/fs.h, which x/sys/unix leaves out.
const fsAppendFL = 0x00000020

// setAppendOnly sets or clears a file's append-only flag, under which it
// opens for reading and appending only, as chattr +a does. A flag set is
// cleared at the test's end, or the file could not be removed.
func setAppendOnly(t *testing.T, path string, on bool) {
	t.Helper()
	if err := appendOnly(path, on); err != nil {
		t.Fatal(err)
	}
	if on {
		t.Cleanup(func() { _ = appendOnly(path, false) })
	}
}

func appendOnly(path string, on bool) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	flags, err := unix.IoctlGetUint32(int(f.Fd()), unix.FS_IOC_GETFLAGS)
	if err != nil {
		return fmt.Errorf("FS_IOC_GETFLAGS on %s: %w", path, err)
	}
	if on {
		flags |= fsAppendFL
	} else {
		flags &^= fsAppendFL
	}
	if err := unix.IoctlSetPointerInt(int(f.Fd()), unix.FS_IOC_SETFLAGS, int(flags)); err != nil {
		return fmt.Errorf("FS_IOC_SETFLAGS on %s: %w", path, err)
	}
	return nil
}

package sandbox

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"executor/storage/safefs"
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
}

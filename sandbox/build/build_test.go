package build

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"executor/storage"
	"executor/storage/safefs"
)

// runtimeDir is a runtime's directory, as the daemon opens it, and a local
// device.
func runtimeDir(t *testing.T) (string, *safefs.Dir, storage.Device) {
	t.Helper()
	dir := t.TempDir()
	d, err := safefs.OpenDir(dir, safefs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	dev, err := storage.NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return dir, d, dev
}

func TestOutputIsCapped(t *testing.T) {
	o := NewOutput()
	_, _ = o.Write([]byte(strings.Repeat("a", MaxOutput-1)))
	_, _ = o.Write([]byte("bcd"))
	_, _ = o.Write([]byte("more"))
	o.Add("late")
	entries := o.Snapshot()
	text := Text(entries)
	if !strings.HasPrefix(text, strings.Repeat("a", MaxOutput-1)+"b") || strings.Contains(text, "cd") || strings.Contains(text, "more") {
		t.Fatalf("output not cut at %d bytes: ...%q", MaxOutput, text[len(text)-80:])
	}
	if !strings.Contains(text, truncatedNotice) {
		t.Fatal("no truncation notice")
	}
	got, finished, _ := o.Since(len(entries) - 1)
	if len(got) != 1 || finished {
		t.Fatalf("Since = %d entries, finished %v", len(got), finished)
	}
	o.Finish()
	if _, finished, _ := o.Since(len(entries)); !finished {
		t.Fatal("not finished after Finish")
	}
}

func TestNamerIncreases(t *testing.T) {
	var n Namer
	prev := ""
	for range 1000 {
		name := n.Next()
		if len(name) != 13 || name <= prev {
			t.Fatalf("name %q after %q", name, prev)
		}
		prev = name
	}
}

func TestUpload(t *testing.T) {
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string)
		limit int64
		check func(error) bool
	}{
		{"uploaded", func(t *testing.T, dir string) { write(t, dir, "code.tar.gz", "artifact") }, 100, func(err error) bool { return err == nil }},
		{"missing", func(*testing.T, string) {}, 100, func(err error) bool { return errors.Is(err, ErrNoArtifact) }},
		{"too large", func(t *testing.T, dir string) { write(t, dir, "code.tar.gz", "artifact") }, 3, func(err error) bool { return errors.Is(err, ErrTooLarge) }},
		{"link", func(t *testing.T, dir string) {
			if err := os.Symlink("/etc/passwd", filepath.Join(dir, "code.tar.gz")); err != nil {
				t.Fatal(err)
			}
		}, 1 << 20, func(err error) bool {
			var r *RefusedError
			return errors.As(err, &r) && errors.Is(err, safefs.ErrSymlink)
		}},
		{"fifo", func(t *testing.T, dir string) {
			if err := unix.Mkfifo(filepath.Join(dir, "code.tar.gz"), 0o644); err != nil {
				t.Fatal(err)
			}
		}, 1 << 20, func(err error) bool { var r *RefusedError; return errors.As(err, &r) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, d, dev := runtimeDir(t)
			tt.setup(t, dir)
			var names Namer
			p, size, err := Upload(context.Background(), d, "code.tar.gz", dev, &names, tt.limit)
			if !tt.check(err) {
				t.Fatalf("Upload = %v", err)
			}
			if err != nil {
				return
			}
			rc, err := dev.Read(context.Background(), p)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			data, _ := io.ReadAll(rc)
			if string(data) != "artifact" || size != 8 || !strings.HasSuffix(p, ".gz") {
				t.Fatalf("stored %q (%d bytes) at %s", data, size, p)
			}
		})
	}
}

// A cache saved after one build is restored before the next, and a link
// planted in its place is not saved.
func TestCacheRoundTrip(t *testing.T) {
	dir, d, dev := runtimeDir(t)
	c := Cache{Dev: dev, Limit: 1 << 20}
	ctx := context.Background()
	if err := c.Restore(ctx, d, "cache", "k"); err != nil {
		t.Fatalf("restore of a miss: %v", err)
	}
	write(t, dir, "cache/"+CacheFile, "squash")
	if err := c.Save(ctx, d, "cache", "/cache", "k"); err != nil {
		t.Fatal(err)
	}
	dir2, d2, _ := runtimeDir(t)
	if err := c.Restore(ctx, d2, "cache", "k"); err != nil {
		t.Fatal(err)
	}
	if data, err := os.ReadFile(filepath.Join(dir2, "cache", CacheFile)); err != nil || string(data) != "squash" {
		t.Fatalf("restored %q, %v", data, err)
	}
	if err := os.Remove(filepath.Join(dir, "cache", CacheFile)); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/shadow", filepath.Join(dir, "cache", CacheFile)); err != nil {
		t.Fatal(err)
	}
	if err := c.Save(ctx, d, "cache", "/cache", "k"); err == nil || !strings.Contains(err.Error(), "/cache/stores.sqfs was refused: it is a symbolic link") {
		t.Fatalf("saving a link: %v", err)
	}
}

func write(t *testing.T, dir, name, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// FinishedOutput replays a kept output: every entry, finished, and full when
// the kept one was (nothing more is taken).
func TestFinishedOutput(t *testing.T) {
	stamp := time.Date(2026, 12, 1, 7, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		entries []Entry
		full    bool
	}{
		{"empty", nil, false},
		{"two chunks", []Entry{{stamp, "a\n"}, {stamp.Add(time.Second), "b\n"}}, false},
		{"at the cap", []Entry{{stamp, strings.Repeat("x", MaxOutput)}, {stamp, truncatedNotice}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := FinishedOutput(tc.entries)
			got, finished, _ := o.Since(0)
			if !finished || len(got) != len(tc.entries) {
				t.Fatalf("Since(0): %d entries, finished %v; want %d, finished", len(got), finished, len(tc.entries))
			}
			for i := range got {
				if got[i] != tc.entries[i] {
					t.Errorf("entry %d: %+v, want %+v", i, got[i], tc.entries[i])
				}
			}
			o.Write([]byte("more"))
			if n := len(o.Snapshot()); (n == len(tc.entries)) != tc.full {
				t.Errorf("after a write: %d entries, full %v", n, tc.full)
			}
		})
	}
}

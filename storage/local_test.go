package storage

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLocalDevice(t *testing.T) {
	root := t.TempDir()
	dev, err := Open("file://localhost", root)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	p := strings.TrimRight(dev.Root(), "/") + "/65f0c1a2b3c4d.gz"
	if n, err := dev.Write(ctx, p, strings.NewReader("abc")); err != nil || n != 3 {
		t.Fatalf("Write = %d, %v", n, err)
	}
	rc, err := dev.Read(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "abc" {
		t.Fatalf("read %q", b)
	}
	// A failed write keeps the old content and leaves no temp file.
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
	if err := dev.Delete(ctx, p); err != nil {
		t.Fatal(err)
	}
	if _, err := dev.Read(ctx, p); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), p) {
		t.Fatalf("Read of a missing file = %v", err)
	}
	for _, bad := range []string{"../x", root + "/../x", "a/../b", ""} {
		if _, err := dev.Write(ctx, bad, strings.NewReader("x")); !errors.Is(err, ErrInvalidPath) {
			t.Fatalf("Write(%q) = %v, want ErrInvalidPath", bad, err)
		}
	}
}

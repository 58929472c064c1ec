package container

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// counterFiles reads a file as it is now through the descriptor it keeps,
// keeps a missing file missing, and closes while reads run: each read then
// either reads the file or fails with errCountersClosed, never reads another
// file that took the closed descriptor's number.
func TestCounterFiles(t *testing.T) {
	dir := t.TempDir()
	file, missing := filepath.Join(dir, "counter"), filepath.Join(dir, "missing")
	read := func(f *counterFiles, path string, buf []byte) ([]byte, error) {
		return f.read(filepath.Dir(path), filepath.Base(path), buf)
	}
	if err := os.WriteFile(file, []byte("5\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var f counterFiles
	var buf [64]byte
	if got, err := read(&f, file, buf[:]); err != nil || string(got) != "5\n" {
		t.Fatalf("read %q, %v", got, err)
	}
	if err := os.WriteFile(file, []byte("16\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := read(&f, file, buf[:]); err != nil || string(got) != "16\n" {
		t.Fatalf("read after a change: %q, %v", got, err)
	}
	if _, err := read(&f, missing, buf[:]); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("read of a missing file: %v", err)
	}
	if err := os.WriteFile(missing, []byte("1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := read(&f, missing, buf[:]); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a file found missing was opened later: %v", err)
	}

	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			var buf [64]byte
			for {
				got, err := read(&f, file, buf[:])
				if errors.Is(err, errCountersClosed) {
					return
				}
				if err != nil || string(got) != "16\n" {
					errs <- errors.Join(err, errors.New("read "+string(got)))
					return
				}
			}
		})
	}
	// Other files take the numbers the closed descriptors free.
	for range 100 {
		o, err := os.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		o.Close()
	}
	f.close()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if _, err := read(&f, file, buf[:]); !errors.Is(err, errCountersClosed) {
		t.Errorf("read after close: %v", err)
	}
}

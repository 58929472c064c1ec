package container

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// An exit report is one code from 0 to 255 and a newline; anything else, or
// nothing, is refused without waiting.
func TestReadExitReport(t *testing.T) {
	for _, tc := range []struct {
		name   string
		write  string
		code   int
		wantOK bool
	}{
		{name: "zero", write: "0\n", code: 0, wantOK: true},
		{name: "code", write: "137\n", code: 137, wantOK: true},
		{name: "nothing", write: ""},
		{name: "no newline", write: "3"},
		{name: "above 255", write: "256\n"},
		{name: "negative", write: "-1\n"},
		{name: "leading zero", write: "03\n"},
		{name: "sign", write: "+3\n"},
		{name: "two lines", write: "3\n4\n"},
		{name: "words", write: "exit\n"},
		{name: "long", write: "1111111111111111111111111\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, w, err := makeFIFO(filepath.Join(t.TempDir(), exitFIFO))
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if _, err := w.WriteString(tc.write); err != nil {
				t.Fatal(err)
			}
			w.Close()
			code, err := readExitReport(r)
			if tc.wantOK != (err == nil) || (tc.wantOK && code != tc.code) {
				t.Fatalf("readExitReport(%q) = %d, %v; want %d, ok %v", tc.write, code, err, tc.code, tc.wantOK)
			}
		})
	}
	t.Run("writer still open, nothing written", func(t *testing.T) {
		r, w, err := makeFIFO(filepath.Join(t.TempDir(), exitFIFO))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		defer w.Close()
		if _, err := readExitReport(r); err == nil {
			t.Fatal("a report read from an empty FIFO")
		}
	})
}

// Only a FIFO is opened; a missing one is fs.ErrNotExist, a link is not
// followed, and one already there is not made again.
func TestFIFOPaths(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	r, w, err := makeFIFO(fifo)
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	w.Close()
	if _, _, err := makeFIFO(fifo); !errors.Is(err, fs.ErrExist) {
		t.Errorf("makeFIFO over an existing FIFO: %v, want fs.ErrExist", err)
	}
	regular := filepath.Join(dir, "regular")
	if err := os.WriteFile(regular, []byte("3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(fifo, link); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]error{
		filepath.Join(dir, "missing"): fs.ErrNotExist,
		regular:                       nil,
		link:                          syscall.ELOOP,
	} {
		f, err := openFIFO(path)
		if err == nil {
			f.Close()
			t.Errorf("openFIFO(%s) opened it", path)
			continue
		}
		if want != nil && !errors.Is(err, want) {
			t.Errorf("openFIFO(%s): %v, want %v", path, err, want)
		}
	}
	f, err := openFIFO(fifo)
	if err != nil {
		t.Fatalf("openFIFO of a FIFO: %v", err)
	}
	f.Close()
}

package protocol

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestReadAll(t *testing.T) {
	big := strings.Repeat("x", presizeLimit+10)
	errCut := errors.New("cut")
	tests := []struct {
		name    string
		r       io.Reader
		size    int64
		want    string
		wantErr error
	}{
		{"declared size", strings.NewReader("hello"), 5, "hello", nil},
		{"empty", strings.NewReader(""), 0, "", nil},
		{"unknown size", strings.NewReader("hello"), -1, "hello", nil},
		{"more than declared", strings.NewReader("hello, world"), 3, "hello, world", nil},
		{"less than declared", strings.NewReader("hi"), 100, "hi", nil},
		{"a byte at a time", iotest.OneByteReader(strings.NewReader("hello")), 5, "hello", nil},
		{"data with EOF", iotest.DataErrReader(strings.NewReader("hello")), 5, "hello", nil},
		{"declared past the limit", strings.NewReader(big), int64(len(big)), big, nil},
		{"error after data", io.MultiReader(strings.NewReader("he"), iotest.ErrReader(errCut)), 5, "he", errCut},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadAll(tt.r, tt.size)
			if !errors.Is(err, tt.wantErr) || string(got) != tt.want {
				t.Fatalf("ReadAll = %q, %v; want %q, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// TestReadAllPresizes: a body of its declared size is read into one buffer of that size, and a declared size past
// presizeLimit is not allocated before the bytes come.
func TestReadAllPresizes(t *testing.T) {
	body := bytes.Repeat([]byte("y"), 1000)
	if n := testing.AllocsPerRun(100, func() {
		if _, err := ReadAll(bytes.NewReader(body), int64(len(body))); err != nil {
			t.Fatal(err)
		}
	}); n > 2 {
		t.Errorf("%v allocations for a body of its declared size, want the buffer (and the reader)", n)
	}
	got, err := ReadAll(strings.NewReader("small"), 1<<40)
	if err != nil || string(got) != "small" || cap(got) > presizeLimit {
		t.Fatalf("ReadAll with a huge declared size = %q (cap %d), %v", got, cap(got), err)
	}
}

package main

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// A refused lock names the holder by the pid its file records, and says the holder is starting when the file
// holds no pid yet (or anything that is not one).
func TestLockRefusalNamesHolder(t *testing.T) {
	tests := []struct {
		recorded string
		want     string
	}{
		{"4242\n", "locked: executor pid 4242 holds it"},
		{"1", "locked: executor pid 1 holds it"},
		{"", "locked: its pid is not recorded yet (it is starting)"},
		{"0\n", "locked: its pid is not recorded yet (it is starting)"},
		{"-7\n", "locked: its pid is not recorded yet (it is starting)"},
		{"pid\n", "locked: its pid is not recorded yet (it is starting)"},
	}
	for _, tt := range tests {
		t.Run(tt.recorded, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "lock")
			unlock, err := lockFile(path)
			if err != nil {
				t.Fatal(err)
			}
			defer unlock()
			// flock(2) locks belong to an open file: a second open of the file, in this process too, is refused.
			if err := os.WriteFile(path, []byte(tt.recorded), 0o600); err != nil {
				t.Fatal(err)
			}
			u, err := lockFile(path)
			if err == nil {
				u()
				t.Fatal("a second lock was granted")
			}
			if !errors.Is(err, errLocked) || err.Error() != tt.want {
				t.Errorf("got %v, want %q", err, tt.want)
			}
		})
	}
}

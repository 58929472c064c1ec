package main

import (
	"math"
	"strings"
	"testing"
)

func TestByteSize(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{in: "1048576", want: 1 << 20},
		{in: "2GiB", want: 2 << 30},
		{in: "2gib", want: 2 << 30},
		{in: "512M", want: 512 << 20},
		{in: "512 MB", want: 512 << 20},
		{in: "1T", want: 1 << 40},
		{in: "4KiB", want: 4 << 10},
		{in: "0", want: 0},
		{in: "", wantErr: true}, // blank is the default: loadConfig puts it in place
		{in: "GiB", wantErr: true},
		{in: "-1", wantErr: true},
		{in: "1.5G", wantErr: true},
		{in: "9999999999T", wantErr: true},
		{in: "9223372036854775807", want: math.MaxInt64},
		{in: "9223372036854775808", wantErr: true},
		{in: "8388607TiB", want: 8388607 << 40}, // the most TiB an int64 holds
		{in: "8388608TiB", wantErr: true},
		{in: "12 apples", wantErr: true},
	}
	for _, tc := range tests {
		got, err := byteSize("OPR_EXECUTOR_X", tc.in)
		if tc.wantErr {
			if err == nil || !strings.Contains(err.Error(), "OPR_EXECUTOR_X") {
				t.Errorf("%q: err %v, want one naming the variable", tc.in, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

// TestFormatSize: the README's way of writing a size, which byteSize reads back.
func TestFormatSize(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0", 1000: "1000", 1 << 10: "1KiB", 1536 << 10: "1536KiB", 2 << 30: "2GiB", 16 << 30: "16GiB", 1 << 40: "1TiB", 3 << 41: "6TiB",
	} {
		got := formatSize(n)
		if got != want {
			t.Errorf("formatSize(%d) = %q, want %q", n, got, want)
		}
		if back, err := byteSize("X", got); err != nil || back != n {
			t.Errorf("byteSize(%q) = %d, %v; want %d", got, back, err, n)
		}
	}
}

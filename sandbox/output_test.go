package sandbox

import (
	"strings"
	"testing"
)

// The output an error message quotes is its last outputTailLines lines,
// each cut at outputTailLineBytes (marked "...", never mid-rune).
func TestOutputTail(t *testing.T) {
	long := strings.Repeat("x", outputTailLineBytes)
	tests := []struct {
		name, out, want string
	}{
		{"nothing", "", ""},
		{"blank", " \n\n", ""},
		{"a line", "listening on 8080\n", "listening on 8080"},
		{"a line at the cap", long + "\n", long},
		{"a line past the cap", long + "yz\n", long + "..."},
		{"a rune across the cap", long[1:] + "é\n", long[1:] + "..."},
		{"the last lines", strings.Repeat("old\n", 5) + strings.Repeat("new\n", outputTailLines), strings.TrimSuffix(strings.Repeat("new\n", outputTailLines), "\n")},
	}
	for _, tt := range tests {
		if got := outputTail(tt.out); got != tt.want {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
}

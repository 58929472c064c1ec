package sandbox

import (
	"context"
	"strings"
	"testing"
	"time"

	"executor/sandbox/protocol"
)

// A command's output is cut at maxCommandOutput: a command that prints
// without end cannot fill the daemon's memory.
func TestCommandOutputIsCapped(t *testing.T) {
	long := strings.Repeat("a", maxCommandOutput-1) + "bc"
	tests := []struct {
		name string
		out  string
		want string
	}{
		{"small", "hello\n", "hello\n"},
		{"past the cap", long, long[:maxCommandOutput]},
	}
	m, h := newTestManager(t)
	if _, err := m.Create(context.Background(), Spec{RuntimeID: "cmd", Image: "img", Version: protocol.V5}); err != nil {
		t.Fatal(err)
	}
	p := h.proc(0)
	for _, tt := range tests {
		p.execOut = tt.out
		got, err := m.Command(context.Background(), "cmd", "yes", time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if got != tt.want {
			t.Errorf("%s: output of %d bytes ending %q, want %d ending %q", tt.name, len(got), got[max(0, len(got)-3):], len(tt.want), tt.want[max(0, len(tt.want)-3):])
		}
	}
}

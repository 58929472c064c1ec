package sandbox

import (
	"context"
	"strings"
	"testing"
	"time"

	"executor/sandbox/protocol"
	"executor/storage"
)

// A build's destination the storage device refuses fails the request
// before any runtime is made; a runtime without a build has no use for a
// destination, and one given is not checked.
func TestDestinationCheckedForBuildsOnly(t *testing.T) {
	tests := []struct {
		name    string
		command string
		kind    Kind
	}{
		{"a build", "make", BuildFailed},
		{"no build", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, h := newTestManager(t)
			o, err := storage.NewOpener(storage.Config{LocalRoots: []string{t.TempDir()}})
			if err != nil {
				t.Fatal(err)
			}
			m.sources = o
			_, err = m.Create(context.Background(), Spec{RuntimeID: "d", Image: "img", Version: protocol.V5, Command: tt.command,
				Destination: "/elsewhere/builds", Timeout: time.Second})
			if KindOf(err) != tt.kind || (tt.kind == 0) != (err == nil) {
				t.Fatalf("Create = %v, want kind %v", err, tt.kind)
			}
			if tt.kind == 0 {
				return
			}
			if !strings.Contains(err.Error(), "Failed to move built code to storage") {
				t.Errorf("Create = %v, want it to say the destination was refused", err)
			}
			if n := h.calls.Load(); n != 0 {
				t.Errorf("a runtime was assembled %d times for a refused destination", n)
			}
		})
	}
}

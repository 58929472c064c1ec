package sandbox

import (
	"context"
	"regexp"
	"testing"
	"time"

	"executor/sandbox/protocol"
)

// A runtime's status says how long its start took, in seconds to two
// decimals at most, as the reference's does.
func TestStatusSaysHowLongTheStartTook(t *testing.T) {
	tests := []struct {
		took time.Duration
		want string
	}{
		{1234 * time.Millisecond, "Up 1.23s"},
		{1500 * time.Millisecond, "Up 1.5s"},
		{2 * time.Second, "Up 2s"},
		{125 * time.Second, "Up 125s"},
		{7 * time.Millisecond, "Up 0.01s"},
		{4 * time.Millisecond, "Up 0s"},
	}
	for _, tt := range tests {
		r := &Runtime{status: "pending"}
		r.markUp(tt.took)
		if got := r.Info(); got.Status != tt.want || !got.Initialised {
			t.Errorf("after a start of %v: status %q, initialised %v; want %q, true", tt.took, got.Status, got.Initialised, tt.want)
		}
	}
}

// Each runtime gets a key (its secret) and a hostname of its own: 32 hex
// digits, as the reference's bin2hex(random_bytes(16)).
func TestRuntimeKeyAndHostname(t *testing.T) {
	m, _ := newTestManager(t)
	hex32 := regexp.MustCompile(`^[0-9a-f]{32}$`)
	seen := map[string]bool{}
	for _, id := range []string{"a", "b"} {
		if _, err := m.Create(context.Background(), Spec{RuntimeID: id, Image: "img", Version: protocol.V5}); err != nil {
			t.Fatal(err)
		}
		info, err := m.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range []string{info.Key, info.Hostname} {
			if !hex32.MatchString(v) {
				t.Errorf("runtime %s: key %q, hostname %q; want 32 hex digits each", id, info.Key, info.Hostname)
			}
			if seen[v] {
				t.Errorf("runtime %s: %q given twice", id, v)
			}
			seen[v] = true
		}
	}
}

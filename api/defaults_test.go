package api

import (
	"testing"
	"time"
)

// New fills the body timeout and the write stall in when the configuration
// leaves them unset or gives a negative duration, and keeps what it sets.
func TestServerTimeoutDefaults(t *testing.T) {
	tests := []struct {
		name             string
		body, stall      time.Duration
		wantBody, wantSt time.Duration
	}{
		{"unset", 0, 0, DefaultBodyTimeout, DefaultWriteStall},
		{"negative", -time.Second, -time.Second, DefaultBodyTimeout, DefaultWriteStall},
		{"set", 3 * time.Second, 5 * time.Second, 3 * time.Second, 5 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, &fakeBackend{}, func(c *Config) { c.BodyTimeout, c.WriteStall = tt.body, tt.stall })
			if s.bodyTimeout != tt.wantBody || s.writeStall != tt.wantSt {
				t.Errorf("body timeout %v, write stall %v; want %v and %v", s.bodyTimeout, s.writeStall, tt.wantBody, tt.wantSt)
			}
		})
	}
}

// The default `version` is the accepted one with the highest number; a tie
// (v5 and v05) goes to the first listed, and names without a number count
// only when none has one.
func TestNewestVersion(t *testing.T) {
	tests := []struct {
		versions []string
		want     string
	}{
		{[]string{"v2", "v5", "v3"}, "v5"},
		{[]string{"v2", "v4"}, "v4"},
		{[]string{"v1", "custom"}, "v1"},
		{[]string{"v0", "custom"}, "v0"},
		{[]string{"v05", "v5"}, "v05"},
		{[]string{"custom", "other"}, "other"},
	}
	for _, tt := range tests {
		if got := newestVersion(tt.versions); got != tt.want {
			t.Errorf("newestVersion(%q) = %q, want %q", tt.versions, got, tt.want)
		}
	}
}

// An execution's path may hold no control character (DEL included), whatever
// the URL parser would say of it.
func TestValidPath(t *testing.T) {
	tests := []struct {
		path string
		want bool
	}{
		{"/", true}, {"/a b?c=d&e=%00", true}, {"/~", true}, {"/é", true},
		{"/a\x00", false}, {"/a\x1f", false}, {"/\t", false}, {"/a\x7f", false},
	}
	for _, tt := range tests {
		if got := validPath(tt.path); got != tt.want {
			t.Errorf("validPath(%q) = %v, want %v", tt.path, got, tt.want)
		}
	}
}

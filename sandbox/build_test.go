package sandbox

import (
	"context"
	"strings"
	"testing"
	"time"

	"executor/sandbox/protocol"
)

// Create with a build command runs it and answers with its output; a
// failing build fails the creation with that output, and leaves no runtime.
func TestCreateRunsTheBuild(t *testing.T) {
	tests := []struct {
		name string
		code int
		kind Kind
	}{
		{"succeeds", 0, 0},
		{"fails", 3, BuildFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, h := newTestManager(t)
			h.execOut, h.execCode = "compiling\n", tt.code
			res, err := m.Create(context.Background(), Spec{RuntimeID: "b", Image: "img", Version: protocol.V5, Command: "make", Timeout: time.Second})
			if KindOf(err) != tt.kind || (tt.kind == 0) != (err == nil) {
				t.Fatalf("Create = %v, want kind %v", err, tt.kind)
			}
			if tt.kind != 0 {
				if !strings.Contains(err.Error(), "compiling") || !strings.Contains(err.Error(), "exited with code 3") {
					t.Errorf("build failure %q lacks the output or the exit code", err)
				}
				if _, err := m.Get("b"); KindOf(err) != NotFound {
					t.Errorf("a failed build left its runtime: %v", err)
				}
				return
			}
			if res == nil || res.Version != protocol.V5 || len(res.Output) != 1 || res.Output[0].Content != "compiling\n" {
				t.Fatalf("Create = %+v, want the build's output", res)
			}
			if _, err := m.Get("b"); err != nil {
				t.Errorf("the built runtime is not in the table: %v", err)
			}
		})
	}
}

// Build-cache warnings come with the build's output: before it, or after
// it for v2, as the reference does.
func TestBuildCacheWarnings(t *testing.T) {
	out := []LogEntry{{Content: "compiling\n"}}
	warning := LogEntry{Content: "[build cache] Warning: restore failed\n"}
	tests := []struct {
		name     string
		version  protocol.Version
		warnings []LogEntry
		want     []string
	}{
		{"none", protocol.V5, nil, []string{"compiling\n"}},
		{"v5: before", protocol.V5, []LogEntry{warning}, []string{warning.Content, "compiling\n"}},
		{"v2: after", protocol.V2, []LogEntry{warning}, []string{"compiling\n", warning.Content}},
	}
	for _, tt := range tests {
		r := &Runtime{cacheWarnings: tt.warnings}
		var got []string
		for _, e := range r.withWarnings(Spec{Version: tt.version}, append([]LogEntry(nil), out...)) {
			got = append(got, e.Content)
		}
		if strings.Join(got, "|") != strings.Join(tt.want, "|") {
			t.Errorf("%s: %q, want %q", tt.name, got, tt.want)
		}
	}
}

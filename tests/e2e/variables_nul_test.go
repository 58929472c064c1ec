package e2e

import (
	"strings"
	"testing"
)

// A variable whose name or value holds a NUL byte cannot reach a runtime's
// environment (execve takes none): creating a runtime or a cold start with
// one is a 400 naming `variables`, and nothing of a runtime is made.
func TestVariablesWithNULRefused(t *testing.T) {
	x := startExecutor(t)
	src := source(t, map[string]string{"index.js": "x"})
	for _, tc := range []struct {
		name, path string
		body       map[string]any
	}{
		{"execution, value", "/v1/runtimes/nul-exec/executions", execBody(src, map[string]any{"variables": map[string]any{"A": "x\x00y"}})},
		{"execution, name", "/v1/runtimes/nul-exec/executions", execBody(src, map[string]any{"variables": map[string]any{"A\x00B": "x"}})},
		{"create", "/v1/runtimes", map[string]any{"runtimeId": "nul-create", "image": "openruntimes/test:v5-1", "source": src,
			"entrypoint": "index.js", "runtimeEntrypoint": startCommand, "variables": map[string]any{"A": "x\x00y"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := x.request(t, "POST", tc.path, tc.body, jsonAccept)
			if r.status != 400 || !strings.Contains(string(r.body), "variables") || !strings.Contains(string(r.body), "NUL") {
				t.Fatalf("%d %s, want 400 naming variables", r.status, r.body)
			}
		})
	}
	x.waitClean(t)
}

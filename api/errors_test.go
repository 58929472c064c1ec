package api

import (
	"encoding/json"
	"fmt"
	"testing"

	"executor/sandbox"
)

// TestCapacityIs503 checks that a runtime the executor has no room for is a
// 503 in the catalogue's runtime_failed type, in production as in
// development, with the sandbox's message naming the limit, whether it comes
// from a create or from the cold start of an execution.
func TestCapacityIs503(t *testing.T) {
	const msg = "Executor is at capacity: network n has no free address in its subnet 10.0.0.0/28; a larger OPR_EXECUTOR_SUBNET makes room for more runtimes."
	tests := []struct {
		name    string
		err     error
		path    string
		body    string
		dev     bool
		wantMsg string
	}{
		{"create", &sandbox.Error{Kind: sandbox.Capacity, Message: msg}, "/v1/runtimes", `{"runtimeId":"r","image":"i"}`, false, msg},
		{"create in development", &sandbox.Error{Kind: sandbox.Capacity, Message: msg}, "/v1/runtimes", `{"runtimeId":"r","image":"i"}`, true, msg},
		{"wrapped", fmt.Errorf("create: %w", &sandbox.Error{Kind: sandbox.Capacity, Message: msg}), "/v1/runtimes", `{"runtimeId":"r","image":"i"}`, false, msg},
		{"without a message", &sandbox.Error{Kind: sandbox.Capacity}, "/v1/runtimes", `{"runtimeId":"r","image":"i"}`, false, "Executor is at capacity."},
		{"cold start of an execution", &sandbox.Error{Kind: sandbox.Capacity, Message: msg}, "/v1/runtimes/r/executions", `{"image":"i"}`, false, msg},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &fakeBackend{createErr: tt.err, execErr: tt.err}
			s := newTestServer(t, b, func(c *Config) { c.Development = tt.dev })
			rq := jsonBody(tt.body)
			rq.path = tt.path
			w := do(t, s, rq)
			if w.Code != 503 {
				t.Fatalf("status %d, want 503 (%s)", w.Code, w.Body)
			}
			var got map[string]any
			if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			if got["type"] != "runtime_failed" || got["message"] != tt.wantMsg || got["code"] != float64(503) {
				t.Errorf("body %s", w.Body)
			}
		})
	}
}

package api

import (
	"errors"
	"testing"

	"executor/sandbox"
)

// TestUnhealthyMessage: without the key the 503 names the parts that failed and nothing of how; with no part
// to name it says only that the executor is unhealthy, never an empty list; with the key it says how.
func TestUnhealthyMessage(t *testing.T) {
	detail := &sandbox.HealthError{Parts: []string{sandbox.PartDataDir}, Problems: []string{"data dir /secret/runtimes is missing"}}
	tests := []struct {
		name     string
		err      error
		detailed bool
		want     string
	}{
		{"parts", detail, false,
			"Executor is unhealthy: its " + sandbox.PartDataDir + " failed the health check (the executor key shows details)."},
		{"no parts", &sandbox.HealthError{Problems: []string{"x"}}, false, "Executor is unhealthy (the executor key shows details)."},
		{"not a health error", errors.New("x"), false, "Executor is unhealthy (the executor key shows details)."},
		{"with the key", detail, true, "Executor is unhealthy: data dir /secret/runtimes is missing"},
	}
	for _, tc := range tests {
		if got := unhealthyMessage(tc.err, tc.detailed); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

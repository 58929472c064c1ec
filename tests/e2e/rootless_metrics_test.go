package e2e

import (
	"fmt"
	"testing"

	"executor/tests/testenv"
)

// A rootless daemon's network namespace is its own: its metrics port is
// bound by the host process, in the host's namespace, as its API port is,
// and handed down. Scraped there, it counts what the daemon did. A port that
// is taken stops the daemon before its namespaces exist.
func TestRootlessMetrics(t *testing.T) {
	u := rootlessUser(t, true)
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	x := startRootless(t, u, "OPR_EXECUTOR_METRICS_LISTEN="+addr)
	src := x.source(t, map[string]string{"index.js": "x"})
	for range 2 {
		if r := x.request(t, "POST", "/v1/runtimes/rl-metrics/executions", execBody(src, nil), jsonAccept); r.status != 200 {
			t.Fatalf("execution: %d %s", r.status, r.body)
		}
	}
	text, samples := scrape(t, addr)
	for s, want := range map[string]float64{
		series("executor_executions_total", "version", "v5", "status", "2xx"):       2,
		series("executor_cold_starts_total", "outcome", "ok", "prewarmed", "false"): 1,
		series("executor_runtimes", "state", "ready"):                               1,
	} {
		if got, ok := samples[s]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v\n%s", s, got, ok, want, text)
		}
	}

}

package e2e

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// countingStart is the test runtime's start command that first appends a
// line to /tmp/starts, on the runtime's root, which a restart of the main
// process keeps: its line count is how often the main process started.
const countingStart = `echo started >> /tmp/starts && ` + startCommand

// TestRestartPolicyMatrix: every restartPolicy against a main process that
// exits 0, exits 1 or is OOM-killed, with the number of starts seen inside
// the runtime. A policy that does not restart takes the runtime out of the
// table (GET answers 404); one that does keeps it, and it serves again.
func TestRestartPolicyMatrix(t *testing.T) {
	x := startExecutor(t)
	for i, tc := range []struct {
		policy string
		exits  []string // the executions that end the main process, in order
		memory int
		// starts is how often the main process started after the exits;
		// 0: it was not restarted after the last one, the runtime is gone.
		starts int
	}{
		{policy: "no", exits: []string{"/exit?code=1"}},
		{policy: "no", exits: []string{"/exit?code=0"}},
		{policy: "on-failure", exits: []string{"/exit?code=1", "/exit?code=3"}, starts: 3},
		{policy: "on-failure", exits: []string{"/exit?code=1", "/exit?code=0"}},
		{policy: "always", exits: []string{"/exit?code=0", "/exit?code=1"}, starts: 3},
		{policy: "unless-stopped", exits: []string{"/exit?code=0", "/exit?code=1"}, starts: 3},
		{policy: "always", exits: []string{"/alloc?mb=256"}, memory: 64, starts: 2},
		{policy: "no", exits: []string{"/alloc?mb=256"}, memory: 64},
	} {
		name := tc.policy + " " + strings.Join(tc.exits, " ")
		t.Run(name, func(t *testing.T) {
			id := "restart-" + strconv.Itoa(i)
			extra := map[string]any{"restartPolicy": tc.policy, "runtimeEntrypoint": countingStart}
			if tc.memory > 0 {
				extra["memory"] = tc.memory
			}
			createIdle(t, x, id, extra)
			for n, path := range tc.exits {
				// POST with a body: net/http sends a GET again on a
				// fresh connection when a kept-alive one dies before
				// the answer, and the daemon's retry on refused
				// connections then hands it to the restarted process,
				// which exits once more (see TestCrashingExecutionRunsOnce).
				r := x.request(t, "POST", "/v1/runtimes/"+id+"/executions", map[string]any{"path": path, "method": "POST", "body": "end"}, jsonAccept)
				if r.status != 500 {
					t.Fatalf("%s: %d %s, want 500 (the main process ended)", path, r.status, r.body)
				}
				if oom := strings.HasPrefix(path, "/alloc"); oom != strings.Contains(string(r.body), "ran out of memory") {
					t.Errorf("%s: %s: blames memory %v, want %v", path, r.body, !oom, oom)
				}
				if n < len(tc.exits)-1 {
					// Not the last: the policy restarted it, the
					// next execution waits for its server.
					if r := x.request(t, "POST", "/v1/runtimes/"+id+"/executions", map[string]any{"path": "/"}, jsonAccept); r.status != 200 {
						t.Fatalf("after %s: %d %s", path, r.status, r.body)
					}
				}
			}
			if tc.starts == 0 {
				// Removal is asynchronous to the failed execution.
				deadline := time.Now().Add(30 * time.Second)
				for {
					r := x.request(t, "GET", "/v1/runtimes/"+id, nil, nil)
					if r.status == 404 {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("%s: the runtime is still listed after its main process ended: %d %s", tc.policy, r.status, r.body)
					}
					time.Sleep(50 * time.Millisecond)
				}
				return
			}
			r := x.request(t, "POST", "/v1/runtimes/"+id+"/executions", map[string]any{"path": "/"}, jsonAccept)
			if r.status != 200 || r.json(t)["statusCode"] != float64(200) {
				t.Fatalf("after the restarts: %d %s", r.status, r.body)
			}
			out, status := command(t, x, id, "wc -l < /tmp/starts")
			if status != 200 {
				t.Fatalf("count starts: %d %s", status, out)
			}
			if got, _ := strconv.Atoi(strings.TrimSpace(out)); got != tc.starts {
				t.Errorf("the main process started %d times (%q), want %d", got, out, tc.starts)
			}
			if r := x.request(t, "DELETE", "/v1/runtimes/"+id, nil, nil); r.status != 200 {
				t.Fatalf("delete: %d %s", r.status, r.body)
			}
		})
	}
	// Every main process that ended was logged, restarted or not.
	if got, want := strings.Count(x.logs.String(), "runtime main process exited"), 12; got != want {
		t.Errorf("%d main process exits logged, want %d", got, want)
	}
	x.waitClean(t)
}

// TestCrashingExecutionRunsOnce: an execution whose function ends the main
// process reaches the runtime once, whatever its method. A GET sent on a
// kept-alive connection was sent again when the connection died before the
// answer (net/http's rule for idempotent requests), the refused connection
// was retried until the restarted process listened, and the function ran a
// second time; sandbox/protocol now sends a written request once.
func TestCrashingExecutionRunsOnce(t *testing.T) {
	x := startExecutor(t)
	createIdle(t, x, "once", map[string]any{"restartPolicy": "always", "runtimeEntrypoint": countingStart})
	for i := 0; i < 3; i++ {
		// An ordinary execution first: the crashing one then goes out
		// on its kept-alive connection.
		if r := x.request(t, "POST", "/v1/runtimes/once/executions", map[string]any{"path": "/"}, jsonAccept); r.status != 200 {
			t.Fatalf("execution: %d %s", r.status, r.body)
		}
		if r := x.request(t, "POST", "/v1/runtimes/once/executions", map[string]any{"path": "/exit?code=1"}, jsonAccept); r.status != 500 {
			t.Fatalf("crashing execution: %d %s", r.status, r.body)
		}
	}
	if r := x.request(t, "POST", "/v1/runtimes/once/executions", map[string]any{"path": "/"}, jsonAccept); r.status != 200 {
		t.Fatalf("execution: %d %s", r.status, r.body)
	}
	out, _ := command(t, x, "once", "wc -l < /tmp/starts")
	if got, _ := strconv.Atoi(strings.TrimSpace(out)); got != 4 {
		t.Errorf("the main process started %d times after 3 crashing executions, want 4", got)
	}
	if r := x.request(t, "DELETE", "/v1/runtimes/once", nil, nil); r.status != 200 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
}

package e2e

import (
	"fmt"
	"strings"
	"testing"
)

// A runtime that never listens fails its execution at the execution's
// timeout with a runtime_timeout that says why: the main process's command,
// a hint when it was given nothing to run, and what it printed.
func TestRuntimeTimeoutSaysWhy(t *testing.T) {
	x := startExecutor(t)
	src := source(t, map[string]string{"index.js": "x"})
	const timeout = 4 // seconds: a cold start here takes well under one
	tests := []struct {
		name string
		// create, when set, creates the runtime first (POST /v1/runtimes)
		// and the execution finds it warm but not listening.
		create            bool
		runtimeEntrypoint string // "" sends none
		want, notWant     []string
	}{
		{
			name: "cold start without runtimeEntrypoint idles",
			want: []string{"Timed out waiting for runtime: nothing accepted connections on port 3000 within the 4s timeout",
				"Its command: tail -f /dev/null",
				"No runtimeEntrypoint was given and protocol v5 does not run the image's own entrypoint or cmd", "It printed nothing."},
		},
		{
			name:   "created without runtimeEntrypoint, then executed",
			create: true,
			want:   []string{"Its command: tail -f /dev/null", "No runtimeEntrypoint was given"},
		},
		{
			name:              "entrypoint prints then sleeps without listening",
			runtimeEntrypoint: `echo "booting: listening on 8080"; echo "warning: PORT ignored" >&2; sleep 60`,
			want: []string{`Its command: bash -c 'echo "booting: listening on 8080"; echo "warning: PORT ignored" >&2; sleep 60' (running)`,
				"Last output:\nbooting: listening on 8080\nwarning: PORT ignored"},
			notWant: []string{"No runtimeEntrypoint", "printed nothing"},
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := fmt.Sprintf("not-ready-%d", i)
			body := execBody(src, map[string]any{"timeout": timeout, "path": "/"})
			if tt.runtimeEntrypoint == "" {
				delete(body, "runtimeEntrypoint")
			} else {
				body["runtimeEntrypoint"] = tt.runtimeEntrypoint
			}
			t.Cleanup(func() {
				// A cold start that timed out may have removed its runtime.
				if r := x.request(t, "DELETE", "/v1/runtimes/"+id, nil, nil); r.status != 200 && r.status != 404 {
					t.Errorf("DELETE %s: %d %s", id, r.status, r.body)
				}
				x.waitClean(t)
			})
			if tt.create {
				create := map[string]any{"runtimeId": id, "image": body["image"], "source": src, "entrypoint": "index.js"}
				if r := x.request(t, "POST", "/v1/runtimes", create, nil); r.status != 201 {
					t.Fatalf("create: %d %s", r.status, r.body)
				}
				for _, k := range []string{"image", "source", "entrypoint"} {
					delete(body, k) // the execution finds the runtime
				}
			}
			// No clock read here: a runtime that never listens would hold
			// the request past the client's 120 s, failing it, were the
			// timeout not what answers.
			r := x.request(t, "POST", "/v1/runtimes/"+id+"/executions", body, jsonAccept)
			res := r.json(t)
			if r.status != 400 || res["type"] != "runtime_timeout" {
				t.Fatalf("status %d type %v, want 400 runtime_timeout: %s", r.status, res["type"], r.body)
			}
			msg, _ := res["message"].(string)
			t.Logf("message: %s", msg)
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message lacks %q:\n%s", w, msg)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(msg, w) {
					t.Errorf("message has %q:\n%s", w, msg)
				}
			}
		})
	}
}

package e2e

// Faults of issue 17, each ending in a clear error in the API's format
// ({"type","message","code","version"}) or the execution reply the spec
// gives, after which the daemon serves a fresh execution and leaves nothing
// behind. Covered elsewhere, and not repeated here:
//   - a runtime that crashes mid-request under restartPolicy=always:
//     core_test.go TestProcessExitAndRestartPolicy;
//   - an OOM kill blamed on the right death: cgroup_faults_test.go
//     TestOOMVerdictIsAboutThisDeath;
//   - a runtime that never listens, and what its error says:
//     readiness_test.go TestRuntimeTimeoutSaysWhy;
//   - a missing image behind a mirror whose primary is down:
//     pullerrors_test.go TestImagePullErrorSaidOnce;
//   - a missing S3 object and wrong S3 credentials: storage_test.go
//     TestS3Storage;
//   - SIGKILL of an idle daemon, then restart: core_test.go
//     TestCrashThenRestartRemovesLeftovers.
// Here each fault strikes mid-request, and each test checks what the
// others leave out: the error's shape, a fresh execution, no leftovers.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// faultLimit bounds every request of these tests: a daemon that hangs on a
// fault fails the test instead of hanging it.
const faultLimit = 90 * time.Second

// apiErrorBody is the API's error format (spec §4).
type apiErrorBody struct {
	Type    string `json:"type"`
	Message string `json:"message"`
	Code    int    `json:"code"`
	Version string `json:"version"`
}

// assertFault checks r is an error in the API's format with status, type
// typ ("" for any) and a message holding message: a clear one, never the
// masked "Internal server error.".
func assertFault(t *testing.T, r *response, status int, typ, message string) apiErrorBody {
	t.Helper()
	var e apiErrorBody
	if err := json.Unmarshal(r.body, &e); err != nil {
		t.Fatalf("status %d: not an API error: %v\n%.2000s", r.status, err, r.body)
	}
	if r.status != status || e.Code != status || (typ != "" && e.Type != typ) || e.Version == "" || e.Type == "" {
		t.Fatalf("got %d %.2000s, want %d with type %q, code %d and a version", r.status, r.body, status, typ, status)
	}
	if !strings.Contains(e.Message, message) || e.Message == "Internal server error." {
		t.Fatalf("message %q, want one with %q", e.Message, message)
	}
	t.Logf("%d %s: %s", r.status, e.Type, e.Message)
	return e
}

// faultRequest is x.request bounded by faultLimit.
func faultRequest(t *testing.T, x *executor, method, path string, body any) *response {
	t.Helper()
	r, err := hostileRequest(x, method, path, body, jsonAccept, faultLimit)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

var freshSeq atomic.Int64

// assertServes checks the daemon, after a fault, cold-starts and runs a
// fresh runtime, and removes it again without leftovers.
func assertServesFresh(t *testing.T, x *executor, src string) {
	t.Helper()
	id := fmt.Sprintf("fresh-%d", freshSeq.Add(1))
	r := faultRequest(t, x, "POST", "/v1/runtimes/"+id+"/executions", execBody(src, nil))
	if r.status != 200 || r.json(t)["statusCode"] != float64(200) {
		t.Fatalf("a fresh execution after the fault: %d %.2000s", r.status, r.body)
	}
	if r := faultRequest(t, x, "DELETE", "/v1/runtimes/"+id, nil); r.status != 200 {
		t.Fatalf("delete %s: %d %s", id, r.status, r.body)
	}
	x.waitClean(t)
}

// deleteRuntime removes id (which may already be gone) and waits until
// nothing of any runtime is left.
func deleteRuntime(t *testing.T, x *executor, id string) {
	t.Helper()
	if r := faultRequest(t, x, "DELETE", "/v1/runtimes/"+id, nil); r.status != 200 && r.status != 404 {
		t.Errorf("delete %s: %d %s", id, r.status, r.body)
	}
	x.waitClean(t)
}

// TestFaultsInRuntime: the runtime fails while it holds a request.
func TestFaultsInRuntime(t *testing.T) {
	x := startExecutor(t)
	src := source(t, map[string]string{"index.js": "x"})
	tests := []struct {
		name string
		body map[string]any
		// status, typ and message are the API error; status 200 means the
		// execution's own reply, with statusCode 500 and errors holding
		// message (the spec's soft timeout).
		status        int
		typ, message  string
		keepsRuntime  bool // the runtime serves again under the same id
		afterwardPath string
	}{
		{name: "crash mid-request", body: map[string]any{"path": "/exit?code=1"},
			status: 500, message: "Internal curl error has occurred within the executor"},
		{name: "OOM mid-request", body: map[string]any{"path": "/alloc?mb=256", "memory": 64},
			status: 500, message: "ran out of memory"},
		{name: "never listens", body: map[string]any{"runtimeEntrypoint": "sleep 60", "timeout": 3},
			status: 400, typ: "runtime_timeout", message: "nothing accepted connections on port 3000"},
		{name: "accepts and hangs", body: map[string]any{"path": "/sleep?ms=600000", "timeout": 3},
			status: 200, message: "Execution timed out.", keepsRuntime: true},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id := fmt.Sprintf("fault-%d", i)
			t.Cleanup(func() { deleteRuntime(t, x, id) })
			r := faultRequest(t, x, "POST", "/v1/runtimes/"+id+"/executions", execBody(src, tc.body))
			if tc.status == 200 {
				res := r.json(t)
				errs, _ := res["errors"].(string)
				if r.status != 200 || res["statusCode"] != float64(500) || !strings.Contains(errs, tc.message) {
					t.Fatalf("got %d %.2000s, want 200 with statusCode 500 and errors holding %q", r.status, r.body, tc.message)
				}
			} else {
				assertFault(t, r, tc.status, tc.typ, tc.message)
			}
			if tc.keepsRuntime {
				// The hung request is abandoned, not the runtime.
				r := faultRequest(t, x, "POST", "/v1/runtimes/"+id+"/executions", map[string]any{"path": "/"})
				if r.status != 200 || r.json(t)["statusCode"] != float64(200) {
					t.Fatalf("the same runtime after the fault: %d %.2000s", r.status, r.body)
				}
			}
			deleteRuntime(t, x, id)
			assertServesFresh(t, x, src)
		})
	}
}

// daemonFDs counts the daemon's open file descriptors.
func daemonFDs(t *testing.T, x *executor) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", x.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// steadyFDs is how many fds the daemon holds once the requests so far have
// closed their connections and the usage sampler has read every runtime's
// counter files: it keeps them open until the runtime is removed
// (sandbox/container's counterFiles), so the ones it opens later are not a
// fault's. A keyed health check keeps the sampler running; the count is
// taken once it has not changed for longer than the sampler's interval.
func steadyFDs(t *testing.T, x *executor) int {
	t.Helper()
	if r := x.health(t, true); r.status != 200 {
		t.Fatalf("health: %d %s", r.status, r.body)
	}
	waitFDs(t, x, 1<<20)
	const still = 1500 * time.Millisecond // usage.DefaultInterval and some
	n, since := daemonFDs(t, x), time.Now()
	for deadline := time.Now().Add(20 * time.Second); time.Since(since) < still; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the daemon's fds never settled: %d", n)
		}
		if m := daemonFDs(t, x); m != n {
			n, since = m, time.Now()
		}
	}
	return n
}

// waitFDs polls until the daemon holds at most want fds: the connections
// of a request that ended close asynchronously.
func waitFDs(t *testing.T, x *executor, want int) {
	t.Helper()
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	deadline := time.Now().Add(20 * time.Second)
	for {
		n := daemonFDs(t, x)
		if n <= want {
			return
		}
		if time.Now().After(deadline) {
			out, _ := osexec.Command("ls", "-l", fmt.Sprintf("/proc/%d/fd", x.cmd.Process.Pid)).CombinedOutput()
			t.Fatalf("the daemon holds %d fds, %d before the fault:\n%s", n, want, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// runtimeFile is where the one runtime of x keeps name of its /tmp on the host.
func runtimeFile(x *executor, name string) string {
	m, _ := filepath.Glob(filepath.Join(x.dataDir, "runtimes", "*", "src", name))
	if len(m) == 0 {
		return ""
	}
	return m[0]
}

// waitRuntimeFile polls until the runtime made /tmp/name.
func waitRuntimeFile(t *testing.T, x *executor, name string, done <-chan struct{}) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for runtimeFile(x, name) == "" {
		select {
		case <-done:
			t.Fatalf("the request ended before the runtime made /tmp/%s", name)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the runtime did not make /tmp/%s", name)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestFaultsClientDisconnects: a client that leaves mid-execution ends its
// request; the runtime's work is stopped or finishes, the runtime serves the
// next one, and the daemon holds no more fds than before.
func TestFaultsClientDisconnects(t *testing.T) {
	x := startExecutor(t)
	src := source(t, map[string]string{"index.js": "x"})
	const id = "left"
	t.Cleanup(func() { deleteRuntime(t, x, id) })
	createIdle(t, x, id, nil)
	if r := faultRequest(t, x, "POST", "/v1/runtimes/"+id+"/executions", map[string]any{"path": "/"}); r.status != 200 {
		t.Fatalf("warm-up: %d %s", r.status, r.body)
	}
	before := steadyFDs(t, x)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	var reqErr error
	go func() {
		defer close(done)
		b, _ := json.Marshal(map[string]any{"path": "/shell", "method": "POST", "timeout": 60,
			"body": "touch /tmp/started; sleep 20; touch /tmp/finished; echo done"})
		req, _ := http.NewRequestWithContext(ctx, "POST", x.url+"/v1/runtimes/"+id+"/executions", strings.NewReader(string(b)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+secret)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		reqErr = err
	}()
	waitRuntimeFile(t, x, "started", done)
	cancel()
	<-done
	if !errors.Is(reqErr, context.Canceled) {
		t.Fatalf("the client's request ended with %v, want it cancelled", reqErr)
	}
	// The runtime is not stuck behind the abandoned execution.
	r := faultRequest(t, x, "POST", "/v1/runtimes/"+id+"/executions", map[string]any{"path": "/"})
	if r.status != 200 || r.json(t)["statusCode"] != float64(200) {
		t.Fatalf("the runtime after its client left: %d %.2000s", r.status, r.body)
	}
	waitFDs(t, x, before)
	deleteRuntime(t, x, id)
	assertServesFresh(t, x, src)
}

// TestFaultsSlowClient: a client that reads a big reply slowly, or stops
// reading and leaves, holds only its own request: other executions and the
// health check answer meanwhile, the slow one gets its whole reply, and the
// daemon's fds come back to what they were.
func TestFaultsSlowClient(t *testing.T) {
	x := startExecutor(t)
	src := source(t, map[string]string{"index.js": "x"})
	const id = "slow-reader"
	t.Cleanup(func() { deleteRuntime(t, x, id) })
	createIdle(t, x, id, nil)
	// The echo returns the body: a reply of some MiB, far past what the
	// socket buffers on both sides hold.
	payload := strings.Repeat("slow-client-", 12<<20/12)
	body, _ := json.Marshal(map[string]any{"path": "/", "method": "POST", "body": payload})
	if r := faultRequest(t, x, "POST", "/v1/runtimes/"+id+"/executions", map[string]any{"path": "/"}); r.status != 200 {
		t.Fatalf("warm-up: %d %s", r.status, r.body)
	}
	before := steadyFDs(t, x)

	for _, finish := range []string{"reads to the end", "leaves without reading"} {
		t.Run(finish, func(t *testing.T) {
			// A receive buffer far smaller than the reply (yet above the
			// loopback MSS, or every segment waits for the persist timer):
			// the daemon's writes block while the client does not read.
			tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
				if err == nil {
					_ = c.(*net.TCPConn).SetReadBuffer(256 << 10)
				}
				return c, err
			}}
			defer tr.CloseIdleConnections()
			req, _ := http.NewRequest("POST", x.url+"/v1/runtimes/"+id+"/executions", strings.NewReader(string(body)))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json")
			req.Header.Set("Authorization", "Bearer "+secret)
			resp, err := (&http.Client{Transport: tr, Timeout: faultLimit}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			head := make([]byte, 4096)
			if _, err := io.ReadFull(resp.Body, head); err != nil || resp.StatusCode != 200 {
				t.Fatalf("the reply's start: %d %v", resp.StatusCode, err)
			}
			// While it is stuck writing to this client, the daemon serves.
			if r := x.health(t, true); r.status != 200 {
				t.Errorf("health while a client stalls: %d %s", r.status, r.body)
			}
			if r := faultRequest(t, x, "POST", "/v1/runtimes/"+id+"/executions", map[string]any{"path": "/"}); r.status != 200 || r.json(t)["statusCode"] != float64(200) {
				t.Errorf("an execution while a client stalls: %d %.2000s", r.status, r.body)
			}
			if finish == "leaves without reading" {
				resp.Body.Close()
				tr.CloseIdleConnections()
				return
			}
			rest, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("the rest of the reply: %v", err)
			}
			var res struct {
				StatusCode int    `json:"statusCode"`
				Body       string `json:"body"`
			}
			if err := json.Unmarshal(append(head, rest...), &res); err != nil {
				t.Fatalf("the whole reply (%d bytes): %v", len(head)+len(rest), err)
			}
			var echo struct {
				Body string `json:"body"`
			}
			if err := json.Unmarshal([]byte(res.Body), &echo); err != nil || res.StatusCode != 200 || echo.Body != payload {
				t.Fatalf("the slow client's reply: statusCode %d, echoed %d bytes of %d (%v)", res.StatusCode, len(echo.Body), len(payload), err)
			}
		})
	}
	waitFDs(t, x, before)
	deleteRuntime(t, x, id)
	assertServesFresh(t, x, src)
}

// TestFaultsDaemonKilled: SIGKILL of the daemon in the middle of a pull, a
// build, an execution and a delete. The client gets a broken connection (the
// daemon is gone; nothing can answer), and the restarted daemon removes what
// the killed one left, with no half-pulled image, and serves.
func TestFaultsDaemonKilled(t *testing.T) {
	src := source(t, map[string]string{"index.js": "x"})
	stall := startStallProxy(t, shared.registry.Addr(), stallAfter)
	conf := imagesRegistriesConf(t, stall.addr)
	x := startExecutor(t, "CONTAINERS_REGISTRIES_CONF="+conf)
	tests := []struct {
		name string
		// prepare runs before the request (a runtime for the delete).
		prepare func(t *testing.T)
		method  string
		path    string
		body    map[string]any
		// inFlight returns once the request is where the kill must hit.
		inFlight func(t *testing.T, done <-chan struct{})
		// answered: the request is answered (200) before the kill.
		answered bool
	}{
		{
			name: "pull", method: "POST", path: "/v1/images",
			body: map[string]any{"image": stall.addr + "/openruntimes/test:v5-1"},
			inFlight: func(t *testing.T, done <-chan struct{}) {
				select {
				case <-stall.stalled:
				case <-done:
					t.Fatal("the pull ended before the registry stalled")
				case <-time.After(60 * time.Second):
					t.Fatal("the registry never stalled")
				}
			},
		},
		{
			name: "build", method: "POST", path: "/v1/runtimes",
			body: map[string]any{"runtimeId": "killed-build", "image": "openruntimes/test:v5-1", "source": src, "entrypoint": "index.js",
				"command": "touch /tmp/building; sleep 60", "timeout": 120},
			inFlight: func(t *testing.T, done <-chan struct{}) { waitRuntimeFile(t, x, "building", done) },
		},
		{
			name: "execution", method: "POST", path: "/v1/runtimes/killed-exec/executions",
			body:     execBody(src, map[string]any{"path": "/shell", "method": "POST", "body": "touch /tmp/executing; sleep 60", "timeout": 120}),
			inFlight: func(t *testing.T, done <-chan struct{}) { waitRuntimeFile(t, x, "executing", done) },
		},
		{
			// DELETE answers once the runtime is out of the table and off
			// the network, and tears it down after: the kill lands in
			// that teardown.
			name: "delete", answered: true,
			prepare: func(t *testing.T) {
				r := faultRequest(t, x, "POST", "/v1/runtimes/killed-delete/executions", execBody(src, nil))
				if r.status != 200 {
					t.Fatalf("create: %d %s", r.status, r.body)
				}
			},
			method: "DELETE", path: "/v1/runtimes/killed-delete",
			inFlight: func(t *testing.T, done <-chan struct{}) { <-done },
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.prepare != nil {
				tc.prepare(t)
			}
			done := make(chan struct{})
			var got *response
			var reqErr error
			go func() {
				defer close(done)
				var body any
				if tc.body != nil {
					body = tc.body
				}
				got, reqErr = hostileRequest(x, tc.method, tc.path, body, jsonAccept, faultLimit)
			}()
			tc.inFlight(t, done)
			x.kill()
			<-done
			switch {
			case tc.answered && (reqErr != nil || got.status != 200):
				t.Fatalf("the request before the kill: %v %+v", reqErr, got)
			case !tc.answered && reqErr == nil:
				t.Fatalf("the client got an answer from a killed daemon: %d %s", got.status, got.body)
			case !tc.answered:
				t.Logf("the client saw: %v", reqErr)
			}
			x.start() // same data dir, bridge and cgroup parent
			x.waitClean(t)
			if r := faultRequest(t, x, "GET", "/v1/runtimes", nil); r.status != 200 || strings.TrimSpace(string(r.body)) != "[]" {
				t.Fatalf("runtimes after the restart: %d %s", r.status, r.body)
			}
			if ents, _ := os.ReadDir(filepath.Join(x.dataDir, "images", "tmp")); len(ents) > 0 {
				t.Errorf("half-pulled layers left in images/tmp after the restart: %v", ents)
			}
			assertServesFresh(t, x, src)
		})
	}
}

package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func execBody(src string, extra map[string]any) map[string]any {
	b := map[string]any{
		"image":             "openruntimes/test:v5-1",
		"source":            src,
		"entrypoint":        "index.js",
		"runtimeEntrypoint": startCommand,
		"timeout":           30,
	}
	for k, v := range extra {
		b[k] = v
	}
	return b
}

var jsonAccept = map[string]string{"Accept": "application/json", "x-executor-response-format": "0.11.0"}

func TestHealthAndAuth(t *testing.T) {
	x := startExecutor(t)
	tests := []struct {
		name   string
		path   string
		auth   string
		status int
		want   string
	}{
		{"health without key", "/v1/health", "", 200, `{"status":"pass"}`},
		{"list without key", "/v1/runtimes", "", 401, "Missing executor key"},
		{"list with empty bearer", "/v1/runtimes", "Bearer ", 401, "Missing executor key"},
		{"list with wrong key", "/v1/runtimes", "Bearer nope", 401, "Missing executor key"},
		{"list with key", "/v1/runtimes", "Bearer " + secret, 200, "[]"},
		{"unknown runtime", "/v1/runtimes/nope", "Bearer " + secret, 404, "Runtime not found"},
		{"unknown route", "/v1/unknown", "Bearer " + secret, 404, "Not Found"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", x.url+tc.path, nil)
			if tc.auth != "" {
				req.Header.Set("Authorization", tc.auth)
			}
			r := do(t, req)
			if r.status != tc.status || !strings.Contains(string(r.body), tc.want) {
				t.Fatalf("got %d %s, want %d containing %q", r.status, r.body, tc.status, tc.want)
			}
			if r.status >= 400 {
				e := r.json(t)
				if e["type"] == nil || e["code"] != float64(tc.status) {
					t.Fatalf("error body %s lacks type/code", r.body)
				}
			}
		})
	}
	// An execution without a key must not run anything.
	req, _ := http.NewRequest("POST", x.url+"/v1/runtimes/x/executions", strings.NewReader(`{}`))
	req.Header.Set("Content-Type", "application/json")
	if r := do(t, req); r.status != 401 {
		t.Fatalf("execution without key: %d %s", r.status, r.body)
	}
}

func TestColdStartWarmDelete(t *testing.T) {
	x := startExecutor(t)
	src := source(t, map[string]string{"index.js": "source-marker-42"})

	start := time.Now()
	r := x.request(t, "POST", "/v1/runtimes/fn-1/executions", execBody(src, map[string]any{
		"path":      "/echo?x=1",
		"method":    "POST",
		"body":      "hello body",
		"headers":   map[string]any{"content-type": "text/plain", "host": "example.com", "x-forwarded-proto": "https"},
		"variables": map[string]any{"TEST_VAR": "value-1"},
	}), jsonAccept)
	if r.status != 200 {
		t.Fatalf("cold execution: %d %s\n%s", r.status, r.body, x.logs.String())
	}
	t.Logf("cold start + execution took %v", time.Since(start))
	res := r.json(t)
	if res["statusCode"] != float64(200) {
		t.Fatalf("statusCode %v: %s", res["statusCode"], r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("content-type %q", ct)
	}
	keys := orderedKeys(t, r.body)
	if strings.Join(keys, ",") != "statusCode,headers,body,logs,errors,duration,startTime" {
		t.Errorf("result keys in order %v", keys)
	}
	var echo struct {
		Method  string            `json:"method"`
		URL     string            `json:"url"`
		Body    string            `json:"body"`
		Headers map[string]string `json:"headers"`
		Env     map[string]string `json:"env"`
		Code    string            `json:"code"`
	}
	if err := json.Unmarshal([]byte(res["body"].(string)), &echo); err != nil {
		t.Fatalf("echo body: %v: %s", err, res["body"])
	}
	if echo.Method != "POST" || echo.Body != "hello body" || echo.URL != "https://example.com/echo?x=1" {
		t.Errorf("forwarded request: %+v", echo)
	}
	if echo.Code != "source-marker-42" {
		t.Errorf("function code from the source archive: %q", echo.Code)
	}
	for k, want := range map[string]string{"TEST_VAR": "value-1", "CI": "true", "OPEN_RUNTIMES_ENTRYPOINT": "index.js", "OPEN_RUNTIMES_CPUS": "1", "OPEN_RUNTIMES_MEMORY": "512"} {
		if echo.Env[k] != want {
			t.Errorf("env %s = %q, want %q", k, echo.Env[k], want)
		}
	}
	if len(echo.Env["OPEN_RUNTIMES_SECRET"]) != 32 || echo.Env["INERNAL_EXECUTOR_HOSTNAME"] == "" {
		t.Errorf("protocol env: %v", echo.Env)
	}
	if _, leaked := echo.Headers["x-open-runtimes-secret"]; leaked {
		t.Errorf("runtime saw the protocol header")
	}
	if res["duration"].(float64) <= 0 || res["startTime"].(float64) < float64(start.Unix()) {
		t.Errorf("duration/startTime: %v %v", res["duration"], res["startTime"])
	}

	// Warm: no image needed any more.
	r = x.request(t, "POST", "/v1/runtimes/fn-1/executions", map[string]any{"path": "/status?code=201"}, jsonAccept)
	if r.status != 200 || r.json(t)["statusCode"] != float64(201) {
		t.Fatalf("warm execution: %d %s", r.status, r.body)
	}

	r = x.request(t, "GET", "/v1/runtimes", nil, nil)
	var list []map[string]any
	if err := json.Unmarshal(r.body, &list); err != nil || len(list) != 1 {
		t.Fatalf("list: %s", r.body)
	}
	rt := list[0]
	if !strings.HasPrefix(rt["status"].(string), "Up ") || rt["listening"] != float64(1) || rt["image"] != "openruntimes/test:v5-1" || rt["version"] != "v5" || !strings.HasSuffix(rt["name"].(string), "-fn-1") {
		t.Errorf("runtime object: %v", rt)
	}
	if got := strings.Join(orderedKeys(t, mustJSON(t, rt, r.body)), ","); got != "version,created,updated,name,hostname,status,key,listening,image,initialised,usage" {
		t.Errorf("runtime keys %s", got)
	}

	r = x.request(t, "DELETE", "/v1/runtimes/fn-1", nil, nil)
	if r.status != 200 || len(r.body) != 0 {
		t.Fatalf("delete: %d %q", r.status, r.body)
	}
	x.waitClean(t)
	if r = x.request(t, "GET", "/v1/runtimes/fn-1", nil, nil); r.status != 404 {
		t.Fatalf("get after delete: %d", r.status)
	}
	if r = x.request(t, "DELETE", "/v1/runtimes/fn-1", nil, nil); r.status != 404 {
		t.Fatalf("second delete: %d", r.status)
	}
	if r = x.request(t, "POST", "/v1/runtimes/fn-1/executions", map[string]any{}, jsonAccept); r.status != 404 ||
		r.json(t)["message"] != "Runtime not found. Please start it first or provide runtime-related parameters." {
		t.Fatalf("execution of deleted runtime: %d %s", r.status, r.body)
	}
}

// mustJSON re-finds the first object of a JSON array body to read its key order.
func mustJSON(t testing.TB, _ map[string]any, body []byte) []byte {
	var raw []json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil || len(raw) == 0 {
		t.Fatalf("not an array: %s", body)
	}
	return raw[0]
}

func orderedKeys(t testing.TB, body []byte) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not an object: %s", body)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatal(err)
		}
	}
	return keys
}

func TestRepliesLogsAndHeaders(t *testing.T) {
	x := startExecutor(t)
	src := source(t, map[string]string{"index.js": "x"})
	if r := x.request(t, "POST", "/v1/runtimes", map[string]any{
		"runtimeId": "replies", "image": "openruntimes/test:v5-1", "source": src, "entrypoint": "index.js",
		"runtimeEntrypoint": startCommand,
	}, nil); r.status != 201 {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	exec := func(t *testing.T, body map[string]any, headers map[string]string) *response {
		return x.request(t, "POST", "/v1/runtimes/replies/executions", body, headers)
	}

	t.Run("multipart by default with binary body", func(t *testing.T) {
		r := exec(t, map[string]any{"path": "/binary"}, map[string]string{"x-executor-response-format": "0.11.0"})
		parts := parseMultipart(t, r)
		if !bytes.Equal(parts["body"], []byte{0x00, 0x0A, 0xFF}) || string(parts["statusCode"]) != "200" {
			t.Fatalf("parts: %q", parts)
		}
		var hdrs map[string]any
		if err := json.Unmarshal(parts["headers"], &hdrs); err != nil || hdrs["content-type"] != "application/octet-stream" {
			t.Fatalf("headers part %s: %v", parts["headers"], err)
		}
	})
	t.Run("binary body in JSON mode is refused", func(t *testing.T) {
		r := exec(t, map[string]any{"path": "/binary"}, jsonAccept)
		if r.status != 400 || r.json(t)["type"] != "execution_bad_json" {
			t.Fatalf("%d %s", r.status, r.body)
		}
	})
	t.Run("logs and errors from log files", func(t *testing.T) {
		r := exec(t, map[string]any{"path": "/logs"}, jsonAccept)
		res := r.json(t)
		if !strings.Contains(res["logs"].(string), "log line") || !strings.Contains(res["errors"].(string), "error line") {
			t.Fatalf("logs %q errors %q", res["logs"], res["errors"])
		}
		r = exec(t, map[string]any{"path": "/logs", "logging": false}, jsonAccept)
		res = r.json(t)
		if res["logs"] != "" || res["errors"] != "" {
			t.Fatalf("logging=false still gave logs %q errors %q", res["logs"], res["errors"])
		}
	})
	t.Run("one log id for every execution: each still answers with its own logs", func(t *testing.T) {
		// The runtime appends to the files of the log id the request names (as development's "dev" does).
		for i := range 20 {
			r := exec(t, map[string]any{"path": "/logs?lines=1", "headers": map[string]any{"x-open-runtimes-log-id": "same"}}, jsonAccept)
			res := r.json(t)
			if r.status != 200 || res["logs"] != "log line 1\n" || res["errors"] != "error line\n" {
				t.Fatalf("execution %d: %d, logs %q, errors %q; want its own lines only", i, r.status, res["logs"], res["errors"])
			}
		}
	})
	t.Run("log file over 5 MiB is truncated with the notice", func(t *testing.T) {
		r := exec(t, map[string]any{"path": "/logs?lines=6&size=1048576"}, jsonAccept)
		logs := r.json(t)["logs"].(string)
		if len(logs) != 5<<20+len("\nLog file has been truncated to 5.00MB.") || !strings.HasSuffix(logs, "\nLog file has been truncated to 5.00MB.") {
			t.Fatalf("log length %d, tail %q", len(logs), logs[max(0, len(logs)-60):])
		}
	})
	t.Run("repeated headers and stripping", func(t *testing.T) {
		r := exec(t, map[string]any{"path": "/headers"}, jsonAccept)
		h := r.json(t)["headers"].(map[string]any)
		cookies, ok := h["set-cookie"].([]any)
		if !ok || len(cookies) != 2 || h["x-custom"] != "value" {
			t.Fatalf("headers %v", h)
		}
		for k := range h {
			if strings.HasPrefix(k, "x-open-runtimes-") {
				t.Errorf("header %s not stripped", k)
			}
		}
		r = exec(t, map[string]any{"path": "/headers"}, map[string]string{"Accept": "application/json"})
		if c, ok := r.json(t)["headers"].(map[string]any)["set-cookie"].(string); !ok || c != "b=2; HttpOnly" {
			t.Fatalf("format 0.10.0 set-cookie %v", r.json(t)["headers"])
		}
	})
	t.Run("function status is not an executor error", func(t *testing.T) {
		r := exec(t, map[string]any{"path": "/status?code=500"}, jsonAccept)
		if r.status != 200 || r.json(t)["statusCode"] != float64(500) {
			t.Fatalf("%d %s", r.status, r.body)
		}
	})
	t.Run("HEAD gets no body", func(t *testing.T) {
		r := exec(t, map[string]any{"method": "HEAD"}, jsonAccept)
		if r.status != 200 || r.json(t)["body"] != "" {
			t.Fatalf("%d %s", r.status, r.body)
		}
	})
	t.Run("conflict on a second create", func(t *testing.T) {
		r := x.request(t, "POST", "/v1/runtimes", map[string]any{"runtimeId": "replies", "image": "openruntimes/test:v5-1"}, nil)
		if r.status != 409 || r.json(t)["type"] != "runtime_conflict" {
			t.Fatalf("%d %s", r.status, r.body)
		}
	})
}

// TestLentLogIDs: the daemon lends each v4/v5 execution a log id and lends
// it again once it has read and emptied its files. Executions at once each
// answer with their own lines only; the runtime's logs directory is left
// with a pair of empty files per id lent at once; an execution whose
// exchange failed has its id's files removed, and the id is not lent again.
func TestLentLogIDs(t *testing.T) {
	x := startExecutor(t)
	for _, version := range []string{"v5", "v4"} {
		t.Run(version, func(t *testing.T) {
			id := "lent-" + version
			createIdle(t, x, id, map[string]any{"image": "openruntimes/test:" + version + "-1", "version": version})
			rt := x.request(t, "GET", "/v1/runtimes/"+id, nil, nil).json(t)
			_, dir := runtimeAddrDir(t, x, rt["hostname"].(string))
			logsDir := filepath.Join(dir, "logs")
			// shell runs script in the runtime; logging off keeps its
			// log id out of the way.
			shell := func(script string, logging bool, timeout int) (*response, error) {
				return x.send("POST", "/v1/runtimes/"+id+"/executions", shellBody(script, logging, timeout), jsonAccept)
			}
			// Each execution writes a line of its own in both files
			// and answers with the log id it wrote under.
			const clients, rounds = 12, 4
			var mu sync.Mutex
			ids := map[string]int{}
			var wg sync.WaitGroup
			for c := range clients {
				wg.Go(func() {
					for r := range rounds {
						line := fmt.Sprintf("line-%d-%d", c, r)
						resp, err := shell(`echo `+line+` >>"$LOGS_DIR/${LOG_ID}_logs.log"; echo `+line+` >>"$LOGS_DIR/${LOG_ID}_errors.log"; printf %s "$LOG_ID"`, true, 30)
						if err != nil {
							t.Error(err)
							return
						}
						var res map[string]any
						if err := json.Unmarshal(resp.body, &res); err != nil || resp.status != 200 {
							t.Errorf("%s: %d %s", line, resp.status, resp.body)
							return
						}
						if res["logs"] != line+"\n" || res["errors"] != line+"\n" {
							t.Errorf("%s answered logs %q errors %q: not its own lines only", line, res["logs"], res["errors"])
						}
						mu.Lock()
						ids[res["body"].(string)]++
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			if len(ids) > clients {
				t.Errorf("%d log ids for %d executions at a time: %v", len(ids), clients, ids)
			}
			entries, err := os.ReadDir(logsDir)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range entries {
				lentID, _, _ := strings.Cut(e.Name(), "_")
				info, err := e.Info()
				if err != nil || ids[lentID] == 0 || !info.Mode().IsRegular() || info.Size() != 0 {
					t.Errorf("left in logs/: %s (%v, %v): want only the lent ids' files, empty", e.Name(), info, err)
				}
			}
			if len(entries) > 2*clients {
				t.Errorf("%d files left in logs/, want at most %d", len(entries), 2*clients)
			}

			// The runtime's server stops answering (SIGSTOP) past the
			// execution's timeout: the exchange fails, and the runtime
			// may yet write under that id once it runs again.
			resp, err := shell(`printf %s "$LOG_ID" >/tmp/stopped-id; ( sleep 7; kill -CONT $PPID ) >/dev/null 2>&1 & kill -STOP $PPID; echo resumed`, true, 1)
			if err != nil {
				t.Fatal(err)
			}
			if resp.status == 200 && strings.Contains(string(resp.body), "resumed") {
				t.Fatalf("the stopped runtime answered: %s", resp.body)
			}
			var stopped string
			for deadline := time.Now().Add(time.Minute); stopped == ""; {
				if resp, err := shell(`cat /tmp/stopped-id`, false, 30); err == nil && resp.status == 200 {
					stopped, _ = resp.json(t)["body"].(string)
				}
				if stopped == "" && time.Now().After(deadline) {
					t.Fatal("the runtime did not answer again after SIGCONT")
				}
			}
			if ids[stopped] == 0 {
				t.Errorf("the stopped execution wrote under %q, not a lent id seen before (%v)", stopped, ids)
			}
			for range 3 {
				resp, err := shell(`printf %s "$LOG_ID"`, true, 30)
				if err != nil {
					t.Fatal(err)
				}
				if got, _ := resp.json(t)["body"].(string); got == stopped || got == "" {
					t.Fatalf("an execution after the failed one was lent %q (the failed one's: %q)", got, stopped)
				}
			}
			for _, suffix := range []string{"_logs.log", "_errors.log"} {
				if _, err := os.Lstat(filepath.Join(logsDir, stopped+suffix)); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("%s%s of the failed exchange: %v, want it removed", stopped, suffix, err)
				}
			}
		})
	}
}

func TestLimitsAndImageLayers(t *testing.T) {
	x := startExecutor(t)
	src := source(t, map[string]string{"index.js": "x"})
	r := x.request(t, "POST", "/v1/runtimes/limits/executions", execBody(src, map[string]any{
		"path": "/cgroup", "cpus": 0.5, "memory": 128,
	}), jsonAccept)
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	cg := readCgroupSeen(t, r)
	if cg.MemoryBytes != 128_000_000 || cg.CPUQuotaUs != 50000 || cg.CPUPeriodUs != 100000 || cg.PidsMax != 1024 {
		t.Fatalf("limits seen inside the runtime: %+v", cg)
	}

	fsCheck := func(path string) map[string]any {
		r := x.request(t, "POST", "/v1/runtimes/limits/executions", map[string]any{"path": "/fs?path=" + path}, jsonAccept)
		var v map[string]any
		if err := json.Unmarshal([]byte(r.json(t)["body"].(string)), &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	if fsCheck("/opt/removed.txt")["exists"] != false {
		t.Error("a whiteout in an upper layer did not hide /opt/removed.txt")
	}
	entries := fmt.Sprint(fsCheck("/opt/opaque")["entries"])
	if entries != "[new.txt]" {
		t.Errorf("opaque dir shows %s, want only new.txt", entries)
	}
	// The root is writable, and writes stay in this runtime's layer.
	r = x.request(t, "POST", "/v1/runtimes/limits/executions", map[string]any{"path": "/write?path=/usr/local/server/written.txt", "method": "POST", "body": "w"}, jsonAccept)
	if r.json(t)["statusCode"] != float64(200) {
		t.Fatalf("write into root: %s", r.body)
	}
}

func TestProtocols(t *testing.T) {
	x := startExecutor(t)
	src := source(t, map[string]string{"index.js": "x"})
	t.Run("v2", func(t *testing.T) {
		r := x.request(t, "POST", "/v1/runtimes/proto-v2/executions", map[string]any{
			"image": "openruntimes/test:v2-1", "source": src, "entrypoint": "index.js", "version": "v2",
			"body": "payload-2", "variables": map[string]any{"A": "1"},
		}, jsonAccept)
		if r.status != 200 {
			t.Fatalf("%d %s", r.status, r.body)
		}
		res := r.json(t)
		if res["statusCode"] != float64(200) || !strings.Contains(res["body"].(string), `"payload":"payload-2"`) || res["logs"] != "v2 log" {
			t.Fatalf("v2 result %v", res)
		}
		if h, ok := res["headers"].([]any); !ok || len(h) != 0 {
			t.Fatalf("v2 headers should be [] : %v", res["headers"])
		}
	})
	for _, v := range []string{"v4", "v3"} {
		t.Run(v, func(t *testing.T) {
			r := x.request(t, "POST", "/v1/runtimes/proto-"+v+"/executions", execBody(src, map[string]any{
				"image": "openruntimes/test:" + v + "-1", "version": v, "path": "/logs",
			}), jsonAccept)
			res := r.json(t)
			if r.status != 200 || res["statusCode"] != float64(200) || !strings.Contains(res["logs"].(string), "log line") {
				t.Fatalf("%d %v", r.status, res)
			}
		})
	}
	t.Run("sh when the image has no bash", func(t *testing.T) {
		r := x.request(t, "POST", "/v1/runtimes/nobash/executions", execBody(src, map[string]any{"image": "openruntimes/test:v5-nobash"}), jsonAccept)
		if r.status != 200 || r.json(t)["statusCode"] != float64(200) {
			t.Fatalf("%d %s", r.status, r.body)
		}
	})
}

func TestColdStartFailuresAreFastAndClean(t *testing.T) {
	x := startExecutor(t)
	src := source(t, map[string]string{"index.js": "x"})
	cases := []struct {
		name    string
		body    map[string]any
		status  int
		message string
	}{
		{"unknown image", execBody(src, map[string]any{"image": "openruntimes/test:does-not-exist"}), 400, "does-not-exist"},
		{"missing source", execBody(shared.storage+"/nonexistent/code.tar.gz", nil), 500, "Failed to copy source code"},
		{"source outside the storage roots", execBody("/nonexistent/code.tar.gz", nil), 400, "is outside the storage roots"},
		{"entrypoint exits", execBody(src, map[string]any{"runtimeEntrypoint": "echo boom-output; exit 3"}), 400, "boom-output"},
		{"no image or source", map[string]any{"path": "/"}, 404, "Runtime not found. Please start it first"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Fast means not waiting for the timeout: one far beyond the
			// client's 120 s makes a wait fail the request, with no clock
			// read here.
			if _, ok := tc.body["timeout"]; ok {
				tc.body["timeout"] = 600
			}
			r := x.request(t, "POST", "/v1/runtimes/bad/executions", tc.body, jsonAccept)
			if r.status != tc.status || !strings.Contains(string(r.body), tc.message) {
				t.Fatalf("got %d %s, want %d with %q", r.status, r.body, tc.status, tc.message)
			}
			x.waitClean(t)
			if r := x.request(t, "GET", "/v1/runtimes", nil, nil); string(r.body) != "[]" {
				t.Fatalf("failed runtime still listed: %s", r.body)
			}
		})
	}
}

func TestConcurrentColdStartSharesOneCreation(t *testing.T) {
	x := startExecutor(t)
	src := source(t, map[string]string{"index.js": "x"})
	const n = 6
	var wg sync.WaitGroup
	results := make([]*response, n)
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		wg.Go(func() {
			results[i], errs[i] = x.send("POST", "/v1/runtimes/shared/executions", execBody(src, nil), jsonAccept)
		})
	}
	wg.Wait()
	hosts := map[string]bool{}
	for i, r := range results {
		if errs[i] != nil {
			t.Fatalf("execution %d: %v", i, errs[i])
		}
		if r.status != 200 {
			t.Fatalf("execution %d: %d %s", i, r.status, r.body)
		}
		res := r.json(t)
		body, _ := res["body"].(string)
		var echo struct {
			Hostname string `json:"hostname"`
		}
		if err := json.Unmarshal([]byte(body), &echo); err != nil || echo.Hostname == "" || res["statusCode"] != float64(200) {
			t.Fatalf("execution %d: the runtime's echo %q (%v) names no host", i, body, err)
		}
		hosts[echo.Hostname] = true
	}
	if len(hosts) != 1 {
		t.Fatalf("executions reached %d different runtimes: %v", len(hosts), hosts)
	}
	// One creation: one runtime listed, and no creation that lost a race
	// and failed (a 409 turned into a retry, a second container removed).
	r := x.request(t, "GET", "/v1/runtimes", nil, nil)
	var list []map[string]any
	if err := json.Unmarshal(r.body, &list); err != nil || len(list) != 1 {
		t.Fatalf("runtimes after %d concurrent cold starts: %s", n, r.body)
	}
	if n := strings.Count(x.logs.String(), "Failed"); n > 0 {
		t.Errorf("%d failures in the daemon's log:\n%s", n, x.logs.String())
	}
}

func TestProcessExitAndRestartPolicy(t *testing.T) {
	x := startExecutor(t)
	src := source(t, map[string]string{"index.js": "x"})
	r := x.request(t, "POST", "/v1/runtimes/crash/executions", execBody(src, map[string]any{"path": "/exit?code=1", "restartPolicy": "always"}), jsonAccept)
	if r.status != 500 || !strings.Contains(r.json(t)["message"].(string), "Internal curl error has occurred within the executor! Error Number:") {
		t.Fatalf("execution that kills the server: %d %s", r.status, r.body)
	}
	// restartPolicy=always brings the server back: the next execution works.
	r = x.request(t, "POST", "/v1/runtimes/crash/executions", map[string]any{"path": "/"}, jsonAccept)
	if r.status != 200 || r.json(t)["statusCode"] != float64(200) {
		t.Fatalf("execution after restart: %d %s", r.status, r.body)
	}
}

func TestShutdownRemovesEverything(t *testing.T) {
	x := startExecutor(t)
	src := source(t, map[string]string{"index.js": "x"})
	for _, id := range []string{"a", "b"} {
		if r := x.request(t, "POST", "/v1/runtimes/"+id+"/executions", execBody(src, nil), jsonAccept); r.status != 200 {
			t.Fatalf("%d %s", r.status, r.body)
		}
	}
	if len(x.leftovers()) == 0 {
		t.Fatal("running runtimes should hold resources (the leak check would be blind)")
	}
	x.stop() // SIGTERM: must exit 0 and leave nothing (checked by the cleanup)
	x.assertClean()
}

func TestInterruptRemovesEverything(t *testing.T) {
	x := startExecutor(t)
	src := source(t, map[string]string{"index.js": "x"})
	if r := x.request(t, "POST", "/v1/runtimes/i/executions", execBody(src, nil), jsonAccept); r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	x.stopWith(syscall.SIGINT)
	x.assertClean()
}

func TestCrashThenRestartRemovesLeftovers(t *testing.T) {
	x := startExecutor(t)
	src := source(t, map[string]string{"index.js": "x"})
	if r := x.request(t, "POST", "/v1/runtimes/survivor/executions", execBody(src, nil), jsonAccept); r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	x.kill()
	if len(x.leftovers()) == 0 {
		t.Fatal("a killed executor should have left its runtime behind")
	}
	x.start() // same data dir, bridge and cgroup parent
	x.waitClean(t)
	if r := x.request(t, "GET", "/v1/runtimes", nil, nil); string(r.body) != "[]" {
		t.Fatalf("runtimes after restart: %s", r.body)
	}
	// And it serves again.
	if r := x.request(t, "POST", "/v1/runtimes/again/executions", execBody(src, nil), jsonAccept); r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
}

// A crash that also lost the containers' state (removed by hand, or never
// written whole) leaves runtime processes that libcontainer cannot load: the
// restart kills them through their cgroups and removes everything still.
func TestCrashWithoutContainerStateRemovesLeftovers(t *testing.T) {
	x := startExecutor(t)
	src := source(t, map[string]string{"index.js": "x"})
	if r := x.request(t, "POST", "/v1/runtimes/orphan/executions", execBody(src, nil), jsonAccept); r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	x.kill()
	if err := os.RemoveAll(filepath.Join(x.dataDir, "containers")); err != nil {
		t.Fatal(err)
	}
	x.start()
	x.waitClean(t)
	if r := x.request(t, "POST", "/v1/runtimes/again/executions", execBody(src, nil), jsonAccept); r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
}

func TestBuildUploadsArtifact(t *testing.T) {
	x := startExecutor(t)
	src := source(t, map[string]string{"index.js": "built-code"})
	dest := shared.storage + "/builds/app"
	r := x.request(t, "POST", "/v1/runtimes", map[string]any{
		"runtimeId": "build-1", "image": "openruntimes/test:v5-1", "source": src, "entrypoint": "index.js",
		"destination": dest, "remove": true,
		"command": `tar -zxf /tmp/code.tar.gz -C /mnt/code && sh helpers/build.sh "echo installing"`,
	}, nil)
	if r.status != 201 {
		t.Fatalf("build: %d %s", r.status, r.body)
	}
	res := r.json(t)
	if got := strings.Join(orderedKeys(t, r.body), ","); got != "size,path,output,startTime,duration" {
		t.Errorf("build result keys %s", got)
	}
	path, _ := res["path"].(string)
	if !strings.HasPrefix(path, dest+"/") || !strings.HasSuffix(path, ".gz") || res["size"].(float64) <= 0 {
		t.Fatalf("artifact %v", res)
	}
	var out strings.Builder
	for _, e := range res["output"].([]any) {
		out.WriteString(e.(map[string]any)["content"].(string))
	}
	if !strings.Contains(out.String(), "installing") {
		t.Errorf("build output %q", out.String())
	}
	x.waitClean(t) // remove=true
	r = x.request(t, "POST", "/v1/runtimes/from-build/executions", execBody(path, nil), jsonAccept)
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	var echo struct {
		Code string `json:"code"`
	}
	_ = json.Unmarshal([]byte(r.json(t)["body"].(string)), &echo)
	if echo.Code != "built-code" {
		t.Fatalf("runtime from the built artifact sees code %q", echo.Code)
	}

	r = x.request(t, "POST", "/v1/runtimes", map[string]any{
		"runtimeId": "build-fail", "image": "openruntimes/test:v5-1", "command": "echo failing-step; exit 7",
	}, nil)
	if r.status != 400 || r.json(t)["type"] != "build_failed" || !strings.Contains(r.json(t)["message"].(string), "failing-step") ||
		!strings.Contains(r.json(t)["message"].(string), "Build command exited with code 7.") {
		t.Fatalf("failed build: %d %s", r.status, r.body)
	}
}

// A data dir that runtimes' unprivileged root cannot reach stops the daemon
// at start with a message naming the setting, before it creates anything.
func TestUnreachableDataDirStopsTheDaemon(t *testing.T) {
	parent := t.TempDir() // 0700
	cmd := exec.Command(shared.bin)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "OPR_EXECUTOR_ENV=development", "OPR_EXECUTOR_LISTEN=127.0.0.1:0",
		"OPR_EXECUTOR_DATA_DIR=" + parent + "/data", "OPR_EXECUTOR_NETWORK=e2e-unreachable", "OPR_EXECUTOR_CGROUP_PARENT=/executor-e2e-unreachable",
		"OPR_EXECUTOR_STORAGE_ROOTS=/storage"}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "OPR_EXECUTOR_DATA_DIR") || !strings.Contains(string(out), "o+x") {
		t.Fatalf("exit %v, output:\n%s", err, out)
	}
	if _, err := os.Stat(parent + "/data/images"); err == nil {
		t.Error("the daemon created its store before refusing the data dir")
	}
}

// In production the runtime secret is not shown, executor and validation
// errors are shown as they are, and nothing in an error body gives away files
// or stack frames.
func TestProductionMode(t *testing.T) {
	x := startExecutor(t, "OPR_EXECUTOR_ENV=production", "OPR_EXECUTOR_VERSION=9.9.9")
	src := source(t, map[string]string{"index.js": "x"})
	if r := x.request(t, "POST", "/v1/runtimes/prod/executions", execBody(src, nil), jsonAccept); r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	rt := x.request(t, "GET", "/v1/runtimes/prod", nil, nil).json(t)
	if rt["key"] != "" || rt["status"] == "" {
		t.Fatalf("runtime object in production: %v", rt)
	}
	for _, tc := range []struct {
		method, path string
		body         any
		status       int
		typ          string
	}{
		{"GET", "/v1/unknown", nil, 404, "general_unknown"},
		{"POST", "/v1/runtimes", map[string]any{"image": "x"}, 400, "general_unknown"},
		{"GET", "/v1/runtimes/nope", nil, 404, "runtime_not_found"},
		{"POST", "/v1/runtimes/nope/executions", map[string]any{}, 404, "runtime_not_found"},
	} {
		r := x.request(t, tc.method, tc.path, tc.body, nil)
		e := r.json(t)
		if r.status != tc.status || e["type"] != tc.typ || e["version"] != "9.9.9" || e["file"] != nil || e["trace"] != nil {
			t.Errorf("%s %s: %d %s", tc.method, tc.path, r.status, r.body)
		}
	}
}

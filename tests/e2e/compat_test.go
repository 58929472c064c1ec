package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// buildCommand mimics the node fixture's build: coloured echoes, numbered
// steps one at a time, then the image's build helper.
const stepsBuild = `tar -zxf /tmp/code.tar.gz -C /mnt/code && sh helpers/build.sh 'printf "\033[33mOrange message\033[0m\n"; i=1; while [ $i -le 10 ]; do echo "Step: $i"; i=$((i+1)); sleep 0.1; done; printf "\033[31mRed message\033[0m\n" >&2'`

type streamLine struct {
	ts      time.Time
	content string
}

func TestLogStreamFollowsBuild(t *testing.T) {
	x := startExecutor(t)
	src := source(t, map[string]string{"index.js": "x"})
	for _, remove := range []bool{true, false} {
		t.Run(fmt.Sprintf("remove=%v", remove), func(t *testing.T) {
			id := fmt.Sprintf("stream-%v", remove)
			var lines []streamLine
			var wg sync.WaitGroup
			wg.Add(1)
			// The stream's own timeout is far off: only the build's end may
			// close it. The client's only turns a stream left open into a
			// failure instead of a hang.
			req, sent := x.streamRequest("/v1/runtimes/" + id + "/logs?timeout=600")
			go func() {
				defer wg.Done()
				resp, err := (&http.Client{Timeout: 3 * time.Minute}).Do(req)
				if err != nil {
					t.Error(err)
					return
				}
				defer resp.Body.Close()
				if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
					t.Errorf("stream: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
				}
				sc := bufio.NewScanner(resp.Body)
				for sc.Scan() {
					ts, content, ok := strings.Cut(sc.Text(), " ")
					if !ok {
						t.Errorf("line without timestamp: %q", sc.Text())
						continue
					}
					parsed, err := time.Parse("2006-01-02T15:04:05.000-07:00", ts)
					if err != nil {
						t.Errorf("timestamp %q: %v", ts, err)
					}
					lines = append(lines, streamLine{parsed, strings.ReplaceAll(content, `\n`, "\n")})
				}
				if err := sc.Err(); err != nil {
					t.Errorf("the stream did not end with the build: %v", err)
				}
			}()
			<-sent // the stream starts before the build, as Appwrite's does
			r := x.request(t, "POST", "/v1/runtimes", map[string]any{
				"runtimeId": id, "image": "openruntimes/test:v5-1", "source": src, "entrypoint": "index.js",
				"command": stepsBuild, "remove": remove,
			}, nil)
			if r.status != 201 {
				t.Fatalf("build: %d %s", r.status, r.body)
			}
			wg.Wait()
			var joined strings.Builder
			for i, l := range lines {
				if l.content == "" {
					t.Errorf("empty entry %d", i)
				}
				if i > 0 && l.ts.Before(lines[i-1].ts) {
					t.Errorf("timestamps go back at %d", i)
				}
				joined.WriteString(l.content)
			}
			var out strings.Builder
			for _, e := range r.json(t)["output"].([]any) {
				out.WriteString(e.(map[string]any)["content"].(string))
			}
			for _, text := range []string{joined.String(), out.String()} {
				for _, want := range []string{"Environment preparation started", "Step: 1\n", "Step: 5\n", "Step: 10\n", "\x1b[33mOrange message", "\x1b[31mRed message", "Build finished"} {
					if !strings.Contains(text, want) {
						t.Errorf("missing %q in %q", want, text)
					}
				}
			}
			if len(lines) < 5 {
				t.Errorf("only %d stream entries", len(lines))
			}
			if !remove {
				x.deleteRuntime(t, id)
			}
			x.waitClean(t)
		})
	}
	t.Run("stream of a failing build closes", func(t *testing.T) {
		// The stream's own timeout is far off, so only the build's end can
		// close it; the client's is only there so that a stream left open
		// fails the test instead of hanging it.
		req, sent := x.streamRequest("/v1/runtimes/stream-fail/logs?timeout=600")
		type streamed struct {
			status int
			ctype  string
			body   string
			err    error
		}
		done := make(chan streamed, 1)
		go func() {
			resp, err := (&http.Client{Timeout: 3 * time.Minute}).Do(req)
			if err != nil {
				done <- streamed{err: err}
				return
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			done <- streamed{resp.StatusCode, resp.Header.Get("Content-Type"), string(b), err}
		}()
		<-sent
		r := x.request(t, "POST", "/v1/runtimes", map[string]any{
			"runtimeId": "stream-fail", "image": "openruntimes/test:v5-1", "cacheKey": "stream-fail-cache",
			"command": "echo before-cache-failure && exit 1",
		}, nil)
		if r.status != 400 || r.json(t)["type"] != "build_failed" || !strings.Contains(r.json(t)["message"].(string), "before-cache-failure") {
			t.Fatalf("%d %s", r.status, r.body)
		}
		s := <-done
		if s.err != nil {
			t.Fatalf("the stream of the failed build did not end cleanly: %v (got %q)", s.err, s.body)
		}
		if s.status != 200 || s.ctype != "text/event-stream" || !strings.Contains(s.body, " before-cache-failure") {
			t.Fatalf("stream of the failed build: %d %s %q, want the build's output", s.status, s.ctype, s.body)
		}
		x.waitClean(t)
	})
}

func TestCommands(t *testing.T) {
	x := startExecutor(t)
	if r := x.request(t, "POST", "/v1/runtimes", map[string]any{"runtimeId": "cmd", "image": "openruntimes/test:v5-1", "entrypoint": "tail -f /dev/null"}, nil); r.status != 201 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	cmd := func(body map[string]any, auth bool) *response {
		h := map[string]string{}
		if !auth {
			h["Authorization"] = ""
		}
		return x.request(t, "POST", "/v1/runtimes/cmd/commands", body, h)
	}
	if r := cmd(map[string]any{"command": `echo "Hello, World!"; echo err >&2`}, true); r.status != 200 || r.json(t)["output"] != "Hello, World!\nerr\n" {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if r := cmd(map[string]any{"command": "touch /tmp/pwned"}, false); r.status != 401 {
		t.Fatalf("command without key: %d %s", r.status, r.body)
	}
	if r := cmd(map[string]any{"command": "ls /tmp/pwned"}, true); r.status != 500 {
		t.Fatalf("the unauthenticated command ran: %d %s", r.status, r.body)
	}
	// A command that outlives the client's 120 s fails the request: only
	// the 1 s timeout can end it in time, with no clock read here.
	if r := cmd(map[string]any{"command": `sleep 600 && echo "Ok"`, "timeout": 1}, true); r.status != 500 || !strings.Contains(string(r.body), "Operation timed out") {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if r := cmd(map[string]any{"command": "exit 1"}, true); r.status != 500 || r.json(t)["message"] != "Failed to execute command." {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if r := x.request(t, "DELETE", "/v1/runtimes/cmd", nil, nil); r.status != 200 {
		t.Fatal(r.status)
	}
	if r := cmd(map[string]any{"command": "echo"}, true); r.status != 404 {
		t.Fatalf("after delete: %d", r.status)
	}
}

func TestBuildCacheRoundTrip(t *testing.T) {
	x := startExecutor(t)
	build := func(id, command string) []string {
		r := x.request(t, "POST", "/v1/runtimes", map[string]any{
			"runtimeId": id, "image": "openruntimes/test:v5-1", "cacheKey": "app-1.cache", "command": command, "remove": true,
		}, nil)
		if r.status != 201 {
			t.Fatalf("%d %s", r.status, r.body)
		}
		var out []string
		for _, e := range r.json(t)["output"].([]any) {
			out = append(out, e.(map[string]any)["content"].(string))
		}
		return out
	}
	out := build("cache-1", `test -e /cache/stores.sqfs && echo hit || echo miss; echo cached-bytes > /cache/stores.sqfs`)
	if !strings.Contains(strings.Join(out, ""), "miss") {
		t.Fatalf("first build: %q", out)
	}
	out = build("cache-2", `cat /cache/stores.sqfs`)
	if !strings.Contains(strings.Join(out, ""), "cached-bytes") {
		t.Fatalf("second build did not get the cache: %q", out)
	}
	r := x.request(t, "POST", "/v1/runtimes", map[string]any{"runtimeId": "c", "image": "openruntimes/test:v5-1", "cacheKey": "../x", "command": "true"}, nil)
	if r.status != 400 {
		t.Fatalf("cacheKey .. : %d %s", r.status, r.body)
	}
	r = x.request(t, "POST", "/v1/runtimes", map[string]any{"runtimeId": "c", "image": "openruntimes/test:v5-1", "cacheKey": "-bad", "command": "true"}, nil)
	if r.status != 400 || r.json(t)["type"] != "execution_bad_request" {
		t.Fatalf("bad cacheKey: %d %s", r.status, r.body)
	}
	x.waitClean(t)
}

func TestBuildOutputLimitsAndLegacyFormat(t *testing.T) {
	x := startExecutor(t)
	// 7 x 128 KiB fits; two blocks of ~900 KB do not.
	block := `head -c 131072 /dev/zero | tr '\0' 1`
	small := fmt.Sprintf(`echo "First log"; i=0; while [ $i -lt 7 ]; do %s; i=$((i+1)); done; echo; echo "Last log"`, block)
	large := `echo "First log"; head -c 1800000 /dev/zero | tr '\0' 1; echo; echo "Last log"`
	cases := []struct {
		name, command string
		fail          bool
		minLen        int
		last          bool
	}{
		{"success", small, false, 7 * 131072, true},
		{"failure", small + "; exit 1", true, 7 * 131072, true},
		{"success large", large, false, 1_000_000, false},
		{"failure large", large + "; exit 1", true, 1_000_000, false},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := x.request(t, "POST", "/v1/runtimes", map[string]any{"runtimeId": fmt.Sprintf("logs-%d", i), "image": "openruntimes/test:v5-1", "command": tc.command, "remove": true}, nil)
			var text string
			if tc.fail {
				if r.status != 400 {
					t.Fatalf("%d", r.status)
				}
				text = r.json(t)["message"].(string)
			} else {
				if r.status != 201 {
					t.Fatalf("%d %s", r.status, r.body)
				}
				for _, e := range r.json(t)["output"].([]any) {
					text += e.(map[string]any)["content"].(string)
				}
			}
			if len(text) < tc.minLen || !strings.Contains(text, "First log") || strings.Contains(text, "Last log") != tc.last {
				t.Fatalf("length %d, first %v, last %v", len(text), strings.Contains(text, "First log"), strings.Contains(text, "Last log"))
			}
			if !tc.fail && !tc.last && !strings.Contains(text, "Logs truncated due to size exceeding 5.00MB.") {
				t.Errorf("no truncation notice")
			}
		})
	}
	t.Run("v4 output is one string", func(t *testing.T) {
		r := x.request(t, "POST", "/v1/runtimes", map[string]any{"runtimeId": "legacy", "image": "openruntimes/test:v4-1", "version": "v4", "command": "echo legacy-out", "remove": true}, nil)
		if r.status != 201 {
			t.Fatalf("%d %s", r.status, r.body)
		}
		if out, ok := r.json(t)["output"].(string); !ok || !strings.Contains(out, "legacy-out") {
			t.Fatalf("output %v", r.json(t)["output"])
		}
	})
	x.waitClean(t)
}

func TestExecutionScenarios(t *testing.T) {
	x := startExecutor(t)
	src := source(t, map[string]string{"index.js": "x"})
	t.Run("soft timeout", func(t *testing.T) {
		// Warm first: the timeout covers a cold start too, which on a loaded
		// machine alone can take 2 s. The sleep outlasts it by far, so only
		// the timeout can end the execution in time.
		if r := x.request(t, "POST", "/v1/runtimes/timeout/executions", execBody(src, nil), jsonAccept); r.status != 200 {
			t.Fatalf("warm-up: %d %s", r.status, r.body)
		}
		r := x.request(t, "POST", "/v1/runtimes/timeout/executions", map[string]any{"path": "/sleep?ms=60000", "timeout": 2}, jsonAccept)
		res := r.json(t)
		if r.status != 200 || res["statusCode"] != float64(500) || !strings.Contains(res["errors"].(string), "Execution timed out.") {
			t.Fatalf("%d %v", r.status, res)
		}
	})
	t.Run("slow start counts in duration", func(t *testing.T) {
		r := x.request(t, "POST", "/v1/runtimes/slow/executions", execBody(src, map[string]any{"runtimeEntrypoint": "sleep 2 && " + startCommand}), jsonAccept)
		res := r.json(t)
		if r.status != 200 || res["duration"].(float64) < 2 {
			t.Fatalf("%d %v", r.status, res)
		}
	})
	t.Run("cold start longer than the timeout", func(t *testing.T) {
		// The entrypoint outlives the client's 120 s: only the 2 s timeout
		// answers in time.
		r := x.request(t, "POST", "/v1/runtimes/too-slow/executions", execBody(src, map[string]any{"runtimeEntrypoint": "sleep 600", "timeout": 2}), jsonAccept)
		if r.status != 400 || r.json(t)["type"] != "runtime_timeout" {
			t.Fatalf("%d %s", r.status, r.body)
		}
		x.deleteRuntime(t, "too-slow")
	})
	t.Run("binary request body through multipart", func(t *testing.T) {
		var b bytes.Buffer
		mw := multipart.NewWriter(&b)
		// The echo's JSON cannot carry the bytes (invalid UTF-8 becomes
		// U+FFFD): the runtime writes them to a file and od shows them.
		fields := map[string]string{"image": "openruntimes/test:v5-1", "source": src, "entrypoint": "index.js", "runtimeEntrypoint": startCommand, "path": "/write?path=/tmp/binary-body", "method": "POST"}
		for k, v := range fields {
			mw.WriteField(k, v)
		}
		fw, _ := mw.CreateFormFile("body", "body")
		fw.Write([]byte{0x00, 0x0A, 0xFF})
		mw.Close()
		req, _ := http.NewRequest("POST", x.url+"/v1/runtimes/binary-req/executions", &b)
		req.Header.Set("Content-Type", mw.FormDataContentType())
		req.Header.Set("Authorization", "Bearer "+secret)
		if parts := parseMultipart(t, do(t, req)); string(parts["statusCode"]) != "200" || string(parts["body"]) != "OK" {
			t.Fatalf("write the body: %q", parts)
		}
		out, status := command(t, x, "binary-req", "od -An -tx1 /tmp/binary-body")
		if got := strings.Join(strings.Fields(out), " "); status != 200 || got != "00 0a ff" {
			t.Fatalf("the runtime got the body bytes %q (%d), want 00 0a ff", out, status)
		}
	})
	t.Run("variables as a JSON string", func(t *testing.T) {
		r := x.request(t, "POST", "/v1/runtimes/vars/executions", execBody(src, map[string]any{"variables": `{"TEST_X":"from-string"}`}), jsonAccept)
		if !strings.Contains(r.json(t)["body"].(string), "from-string") {
			t.Fatalf("%s", r.body)
		}
	})
}

func TestHealthReportsUsage(t *testing.T) {
	x := startExecutor(t)
	src := source(t, map[string]string{"index.js": "x"})
	if r := x.request(t, "POST", "/v1/runtimes/busy/executions", execBody(src, nil), jsonAccept); r.status != 200 {
		t.Fatal(r.status)
	}
	r := x.request(t, "GET", "/v1/health", nil, nil)
	h := r.json(t)
	rts, _ := h["runtimes"].(map[string]any)
	// Host CPU is a percentage; a runtime's is cores x 100 (spec 12.4).
	if u, ok := h["usage"].(float64); h["status"] != "pass" || !ok || u < 0 || u > 100 || len(rts) != 1 || rts["busy"] == nil {
		t.Fatalf("health with key: %s", r.body)
	}
	busy, _ := rts["busy"].(map[string]any)
	if u, ok := busy["usage"].(float64); busy["status"] != "pass" || !ok || u < 0 || u > float64(100*runtime.NumCPU()) {
		t.Fatalf("runtime health %v", busy)
	}
}

func TestMaintenanceSparesWorkInFlight(t *testing.T) {
	x := startExecutor(t, "OPR_EXECUTOR_INACTIVE_THRESHOLD=1", "OPR_EXECUTOR_MAINTENANCE_INTERVAL=1")
	src := source(t, map[string]string{"index.js": "x"})
	var wg sync.WaitGroup
	var long *response
	var longErr error
	wg.Go(func() {
		long, longErr = x.send("POST", "/v1/runtimes/long/executions", execBody(src, map[string]any{"path": "/sleep?ms=4000", "timeout": 20}), jsonAccept)
	})
	if r := x.request(t, "POST", "/v1/runtimes/idle/executions", execBody(src, nil), jsonAccept); r.status != 200 {
		t.Fatal(r.status)
	}
	wg.Wait()
	if longErr != nil {
		t.Fatalf("the 4 s execution: %v", longErr)
	}
	if long.status != 200 || long.json(t)["statusCode"] != float64(200) {
		t.Fatalf("a 4 s execution was cut by maintenance: %d %s", long.status, long.body)
	}
	deadline := time.Now().Add(time.Minute) // generous: a loaded machine
	for {
		r := x.request(t, "GET", "/v1/runtimes", nil, nil)
		if string(r.body) == "[]" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("idle runtimes were not removed: %s", r.body)
		}
		time.Sleep(200 * time.Millisecond)
	}
	x.waitClean(t)
}

func TestBadInputLeavesNothing(t *testing.T) {
	x := startExecutor(t)
	cases := []struct {
		method, path string
		body         any
		status       int
		want         string
	}{
		{"POST", "/v1/runtimes", map[string]any{"image": "openruntimes/test:v5-1"}, 400, `Param \"runtimeId\" is not optional.`},
		{"POST", "/v1/runtimes", map[string]any{"runtimeId": "b", "image": "openruntimes/test:v5-1", "timeout": "600"}, 400, "Invalid `timeout` param"},
		{"POST", "/v1/runtimes", map[string]any{"runtimeId": "b", "image": "openruntimes/test:v5-1", "memory": "512"}, 400, "Invalid `memory` param"},
		{"POST", "/v1/runtimes", map[string]any{"runtimeId": "b", "image": "openruntimes/test:v5-1", "version": "v9"}, 400, "Invalid `version` param"},
		{"POST", "/v1/runtimes", map[string]any{"runtimeId": "b", "image": "openruntimes/test:v5-1", "restartPolicy": "sometimes"}, 400, "Invalid `restartPolicy` param"},
		{"POST", "/v1/runtimes", map[string]any{"runtimeId": "b", "image": "openruntimes/test:v5-1", "source": "/storage/../etc/passwd"}, 400, "source"},
		{"POST", "/v1/runtimes", map[string]any{"runtimeId": "b", "image": "openruntimes/test:v5-1", "destination": "/a/../../b", "command": "true"}, 400, "destination"},
		{"POST", "/v1/runtimes", map[string]any{"runtimeId": strings.Repeat("x", 65), "image": "openruntimes/test:v5-1"}, 400, "Invalid `runtimeId` param"},
		{"POST", "/v1/runtimes", map[string]any{"runtimeId": "b", "image": "openruntimes/test:v5-1", "source": shared.storage + "/missing/code.tar.gz"}, 500, "Failed to copy source code"},
		{"POST", "/v1/runtimes", map[string]any{"runtimeId": "b", "image": "no-such/image:1"}, 400, "Missing image"},
		{"POST", "/v1/runtimes/b/executions", map[string]any{"method": "TRACE"}, 400, "Invalid `method` param"},
		{"POST", "/v1/runtimes/b/executions", map[string]any{"headers": "[1,2]"}, 400, "Value must be a valid object."},
		{"POST", "/v1/runtimes/b/executions", map[string]any{"body": ""}, 400, "Invalid `body` param"},
		{"POST", "/v1/runtimes/b/executions", map[string]any{"image": "openruntimes/test:v5-1", "source": "/x/../y"}, 400, "source"},
		{"POST", "/v1/runtimes/b/commands", map[string]any{"command": ""}, 400, "Invalid `command` param"},
		{"POST", "/v1/runtimes/b/commands", map[string]any{"command": "true"}, 404, "Runtime not found"},
		{"GET", "/v1/runtimes/b", nil, 404, "Runtime not found"},
		{"DELETE", "/v1/runtimes/b", nil, 404, "Runtime not found"},
	}
	for _, tc := range cases {
		t.Run(tc.method+" "+tc.path+" "+tc.want, func(t *testing.T) {
			r := x.request(t, tc.method, tc.path, tc.body, nil)
			if r.status != tc.status || !strings.Contains(string(r.body), tc.want) {
				t.Fatalf("got %d %s, want %d with %q", r.status, r.body, tc.status, tc.want)
			}
			e := r.json(t)
			if e["type"] == nil || e["code"] != float64(tc.status) || e["version"] == nil {
				t.Fatalf("not an API error body: %s", r.body)
			}
			x.waitClean(t)
		})
	}
}

package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"mime/multipart"
	"net/http"
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
			var streamEnd time.Time
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequest("GET", x.url+"/v1/runtimes/"+id+"/logs?timeout=60", nil)
				req.Header.Set("Authorization", "Bearer "+secret)
				resp, err := http.DefaultClient.Do(req)
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
				streamEnd = time.Now()
			}()
			time.Sleep(100 * time.Millisecond) // the stream starts before the build, as Appwrite's does
			r := x.request(t, "POST", "/v1/runtimes", map[string]any{
				"runtimeId": id, "image": "openruntimes/test:v5-1", "source": src, "entrypoint": "index.js",
				"command": stepsBuild, "remove": remove,
			}, nil)
			buildEnd := time.Now()
			if r.status != 201 {
				t.Fatalf("build: %d %s", r.status, r.body)
			}
			wg.Wait()
			if d := streamEnd.Sub(buildEnd); d > time.Second {
				t.Errorf("stream ended %v after the build", d)
			}
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
				if r := x.request(t, "DELETE", "/v1/runtimes/"+id, nil, nil); r.status != 200 {
					t.Fatalf("delete: %d", r.status)
				}
			}
			x.waitClean(t)
		})
	}
	t.Run("stream of a failing build closes", func(t *testing.T) {
		done := make(chan time.Duration, 1)
		go func() {
			start := time.Now()
			req, _ := http.NewRequest("GET", x.url+"/v1/runtimes/stream-fail/logs?timeout=12", nil)
			req.Header.Set("Authorization", "Bearer "+secret)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				var b bytes.Buffer
				b.ReadFrom(resp.Body)
				resp.Body.Close()
			}
			done <- time.Since(start)
		}()
		time.Sleep(100 * time.Millisecond)
		r := x.request(t, "POST", "/v1/runtimes", map[string]any{
			"runtimeId": "stream-fail", "image": "openruntimes/test:v5-1", "cacheKey": "stream-fail-cache",
			"command": "echo before-cache-failure && exit 1",
		}, nil)
		if r.status != 400 || !strings.Contains(r.json(t)["message"].(string), "before-cache-failure") {
			t.Fatalf("%d %s", r.status, r.body)
		}
		if d := <-done; d > 10*time.Second {
			t.Fatalf("stream took %v to close", d)
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
	start := time.Now()
	if r := cmd(map[string]any{"command": `sleep 5 && echo "Ok"`, "timeout": 1}, true); r.status != 500 || !strings.Contains(string(r.body), "Operation timed out") {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("timed-out command took %v", d)
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
		r := x.request(t, "POST", "/v1/runtimes/timeout/executions", execBody(src, map[string]any{"path": "/sleep?ms=5000", "timeout": 2}), jsonAccept)
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
		start := time.Now()
		r := x.request(t, "POST", "/v1/runtimes/too-slow/executions", execBody(src, map[string]any{"runtimeEntrypoint": "sleep 30", "timeout": 2}), jsonAccept)
		if r.status != 400 || r.json(t)["type"] != "runtime_timeout" || time.Since(start) > 5*time.Second {
			t.Fatalf("%d %s after %v", r.status, r.body, time.Since(start))
		}
		x.request(t, "DELETE", "/v1/runtimes/too-slow", nil, nil)
	})
	t.Run("binary request body through multipart", func(t *testing.T) {
		var b bytes.Buffer
		mw := multipart.NewWriter(&b)
		fields := map[string]string{"image": "openruntimes/test:v5-1", "source": src, "entrypoint": "index.js", "runtimeEntrypoint": startCommand, "path": "/", "method": "POST"}
		for k, v := range fields {
			mw.WriteField(k, v)
		}
		fw, _ := mw.CreateFormFile("body", "body")
		fw.Write([]byte{0x00, 0x0A, 0xFF})
		mw.Close()
		req, _ := http.NewRequest("POST", x.url+"/v1/runtimes/binary-req/executions", &b)
		req.Header.Set("Content-Type", mw.FormDataContentType())
		req.Header.Set("Authorization", "Bearer "+secret)
		r := do(t, req)
		parts := parseMultipart(t, r)
		var echo struct {
			Body string `json:"body"`
		}
		if err := json.Unmarshal(parts["body"], &echo); err != nil {
			t.Fatalf("%s: %v", parts["body"], err)
		}
		if echo.Body != "\x00\n\uFFFD" && echo.Body != "\x00\n\xff" {
			t.Fatalf("runtime got body %q", echo.Body)
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
	if h["status"] != "pass" || h["usage"] == nil || rts["busy"] == nil {
		t.Fatalf("health with key: %s", r.body)
	}
	if busy := rts["busy"].(map[string]any); busy["status"] != "pass" {
		t.Fatalf("runtime health %v", busy)
	}
}

func TestMaintenanceSparesWorkInFlight(t *testing.T) {
	x := startExecutor(t, "OPR_EXECUTOR_INACTIVE_THRESHOLD=1", "OPR_EXECUTOR_MAINTENANCE_INTERVAL=1")
	src := source(t, map[string]string{"index.js": "x"})
	var wg sync.WaitGroup
	wg.Add(1)
	var long *response
	go func() {
		defer wg.Done()
		long = x.request(t, "POST", "/v1/runtimes/long/executions", execBody(src, map[string]any{"path": "/sleep?ms=4000", "timeout": 20}), jsonAccept)
	}()
	if r := x.request(t, "POST", "/v1/runtimes/idle/executions", execBody(src, nil), jsonAccept); r.status != 200 {
		t.Fatal(r.status)
	}
	wg.Wait()
	if long.status != 200 || long.json(t)["statusCode"] != float64(200) {
		t.Fatalf("a 4 s execution was cut by maintenance: %d %s", long.status, long.body)
	}
	deadline := time.Now().Add(10 * time.Second)
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

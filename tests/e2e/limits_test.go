package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestRequestEdges: what a client sends that the API must refuse before anything is created, and the bounds
// every runtime gets by default.
func TestRequestEdges(t *testing.T) {
	x := startExecutor(t)
	src := source(t, map[string]string{"index.js": "x"})

	t.Run("bad runtime ids", func(t *testing.T) {
		const msg = "Invalid `runtimeId` param"
		for _, id := range []string{"a/b", "..", ".", "a\x00b", "a\nb", "a\r\nb", "-x", ".hidden", "a b", "é", strings.Repeat("a", 65)} {
			t.Run(strconv.Quote(id), func(t *testing.T) {
				r := x.request(t, "POST", "/v1/runtimes", map[string]any{"runtimeId": id, "image": "openruntimes/test:v5-1",
					"source": src, "entrypoint": "index.js", "runtimeEntrypoint": startCommand}, nil)
				assertAPIError(t, r, 400, msg)
				if strings.Contains(id, "/") {
					return // in a path it is another route
				}
				p := "/v1/runtimes/" + pathEscape(id)
				for _, rq := range []struct {
					method, path string
					body         any
				}{
					{"POST", p + "/executions", execBody(src, nil)},
					{"POST", p + "/execution", execBody(src, nil)},
					{"GET", p, nil},
					{"DELETE", p, nil},
					{"GET", p + "/logs?timeout=1", nil},
					{"POST", p + "/commands", map[string]any{"command": "true"}},
				} {
					assertAPIError(t, x.request(t, rq.method, rq.path, rq.body, nil), 400, msg)
				}
			})
		}
		assertNothingCreated(t, x)
	})

	t.Run("CRLF in forwarded headers", func(t *testing.T) {
		for name, headers := range map[string]map[string]any{
			"value": {"x-a": "1\r\nx-injected: 2"},
			"name":  {"x-a\r\nx-injected": "2"},
			"host":  {"host": "example.com\r\nx-injected: 2"},
			"NUL":   {"x-a": "\x00"},
		} {
			t.Run(name, func(t *testing.T) {
				r := x.request(t, "POST", "/v1/runtimes/crlf/executions", execBody(src, map[string]any{"headers": headers}), jsonAccept)
				assertAPIError(t, r, 400, "Invalid `headers`")
				if r.json(t)["type"] != "execution_bad_request" {
					t.Errorf("type: %s", r.body)
				}
			})
		}
		r := x.request(t, "POST", "/v1/runtimes/crlf/executions", execBody(src, map[string]any{"path": "/a\r\nx-injected: 2"}), jsonAccept)
		assertAPIError(t, r, 400, "Invalid `path`")
		assertNothingCreated(t, x)
	})

	cpus, memoryMB := runtime.NumCPU(), hostMemoryMB(t)
	t.Run("above the maximums", func(t *testing.T) {
		for _, tc := range []struct {
			body map[string]any
			want string
		}{
			{map[string]any{"cpus": cpus + 1}, fmt.Sprintf("Invalid `cpus` param: Value must be at most %d,", cpus)},
			{map[string]any{"memory": memoryMB + 1}, fmt.Sprintf("Invalid `memory` param: Value must be at most %d (MB)", memoryMB)},
			{map[string]any{"cpus": -1}, "Invalid `cpus` param: Value must not be negative"},
		} {
			r := x.request(t, "POST", "/v1/runtimes/big/executions", execBody(src, tc.body), jsonAccept)
			assertAPIError(t, r, 400, tc.want)
			create := map[string]any{"runtimeId": "big", "image": "openruntimes/test:v5-1"}
			for k, v := range tc.body {
				create[k] = v
			}
			assertAPIError(t, x.request(t, "POST", "/v1/runtimes", create, nil), 400, tc.want)
		}
		assertNothingCreated(t, x)
	})

	t.Run("0 is the maximum, pids 1024", func(t *testing.T) {
		// Valid headers pass: the execution reaches the runtime.
		r := x.request(t, "POST", "/v1/runtimes/bounded/executions", execBody(src, map[string]any{
			"cpus": 0, "memory": 0, "headers": map[string]any{"x-a": "tab\tand UTF-8 é"}}), jsonAccept)
		if r.status != 200 || r.json(t)["statusCode"] != float64(200) {
			t.Fatalf("%d %s", r.status, r.body)
		}
		page := int64(os.Getpagesize())
		// The kernel keeps memory limits in pages.
		if got, want := cgroupValue(t, x, "memory"), strconv.FormatInt(memoryMB*1_000_000/page*page, 10); got != want {
			t.Errorf("memory limit %s, want %s (the host's %d MB)", got, want, memoryMB)
		}
		if got, want := cgroupValue(t, x, "cpu"), fmt.Sprintf("%d 100000", cpus*100000); got != want {
			t.Errorf("cpu quota and period %q, want %q (the host's %d CPUs)", got, want, cpus)
		}
		if got := cgroupValue(t, x, "pids"); got != "1024" {
			t.Errorf("pids limit %s, want 1024", got)
		}
	})
}

// TestRequestBodyTimeout: a client that sends its body too slowly is cut off, while requests that last longer
// than the body timeout (an execution, a log stream) are not. The maximums are turned off here, so 0 means no
// limit again.
func TestRequestBodyTimeout(t *testing.T) {
	x := startExecutor(t, "OPR_EXECUTOR_REQUEST_BODY_TIMEOUT=1", "OPR_EXECUTOR_MAX_CPUS=0", "OPR_EXECUTOR_MAX_MEMORY=0")
	src := source(t, map[string]string{"index.js": "x"})

	t.Run("slow body is cut", func(t *testing.T) {
		conn, err := net.Dial("tcp", strings.TrimPrefix(x.url, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		body := fmt.Sprintf(`{"runtimeId":"slow","image":"openruntimes/test:v5-1","source":%q,"runtimeEntrypoint":%q}`, src, startCommand)
		head := fmt.Sprintf("POST /v1/runtimes HTTP/1.1\r\nHost: executor\r\nAuthorization: Bearer %s\r\n"+
			"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n", secret, len(body))
		if _, err := io.WriteString(conn, head); err != nil {
			t.Fatal(err)
		}
		// One byte every 200 ms, never the whole body in time.
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			for i := 0; i < len(body); i++ {
				select {
				case <-stop:
					return
				case <-time.After(200 * time.Millisecond):
				}
				if _, err := conn.Write([]byte{body[i]}); err != nil {
					return
				}
			}
		}()
		// Only so that a broken executor fails the test instead of hanging it.
		_ = conn.SetReadDeadline(time.Now().Add(2 * time.Minute))
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("no answer: %v", err)
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusRequestTimeout || !strings.Contains(string(b), "Request body was not received in time.") {
			t.Fatalf("%d %s", resp.StatusCode, b)
		}
		// And the executor hangs up: an EOF, or a reset when the client's
		// next byte reached the closed socket first.
		if n, err := br.Read(make([]byte, 1)); n != 0 || (err != io.EOF && !errors.Is(err, syscall.ECONNRESET)) {
			t.Fatalf("connection still open after the answer: %d bytes, %v", n, err)
		}
		assertNothingCreated(t, x)
	})

	t.Run("execution longer than the body timeout", func(t *testing.T) {
		r := x.request(t, "POST", "/v1/runtimes/sleeper/executions", execBody(src, map[string]any{
			"path": "/sleep?ms=3000", "method": "POST", "body": strings.Repeat("x", 1<<20), "cpus": 0, "memory": 0}), jsonAccept)
		if r.status != 200 || r.json(t)["statusCode"] != float64(200) {
			t.Fatalf("%d %s", r.status, r.body)
		}
		// With the maximums off, 0 is no limit.
		if got := cgroupValue(t, x, "memory"); got != "max" {
			t.Errorf("memory limit %s, want none", got)
		}
		if got := cgroupValue(t, x, "cpu"); !strings.HasPrefix(got, "max ") {
			t.Errorf("cpu quota %s, want none", got)
		}
		x.deleteRuntime(t, "sleeper")
	})

	t.Run("log stream longer than the body timeout", func(t *testing.T) {
		var stream []byte
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("GET", x.url+"/v1/runtimes/late-logs/logs?timeout=60", nil)
			req.Header.Set("Authorization", "Bearer "+secret)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			stream, _ = io.ReadAll(resp.Body)
		}()
		r := x.request(t, "POST", "/v1/runtimes", map[string]any{"runtimeId": "late-logs", "image": "openruntimes/test:v5-1",
			"command": "echo early-line; sleep 3; echo late-line", "remove": true}, nil)
		if r.status != 201 {
			t.Fatalf("build: %d %s", r.status, r.body)
		}
		wg.Wait()
		if !strings.Contains(string(stream), "late-line") {
			t.Fatalf("the stream ended before the build: %q", stream)
		}
	})
}

// assertAPIError checks an error reply in the API's format.
func assertAPIError(t *testing.T, r *response, status int, message string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	v := r.json(t)
	if m, _ := v["message"].(string); !strings.Contains(m, message) || v["type"] == nil || v["code"] != float64(status) || v["version"] == nil {
		t.Fatalf("error body %s, want a message with %q", r.body, message)
	}
}

// assertNothingCreated checks that no runtime exists, in the table or on the host.
func assertNothingCreated(t *testing.T, x *executor) {
	t.Helper()
	if r := x.request(t, "GET", "/v1/runtimes", nil, nil); r.status != 200 || strings.TrimSpace(string(r.body)) != "[]" {
		t.Fatalf("runtimes: %d %s", r.status, r.body)
	}
	if l := x.leftovers(); len(l) > 0 {
		t.Fatalf("runtime resources exist:\n%s", strings.Join(l, "\n"))
	}
}

// pathEscape escapes an id for a URL path, keeping "." and ".." as they are so that they reach the router.
func pathEscape(id string) string {
	var b strings.Builder
	for i := 0; i < len(id); i++ {
		c := id[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// hostMemoryMB is the host's memory in the API's megabytes (1,000,000 bytes), from /proc/meminfo.
func hostMemoryMB(t *testing.T) int64 {
	t.Helper()
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "MemTotal:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb * 1024 / 1_000_000
		}
	}
	t.Fatal("no MemTotal in /proc/meminfo")
	return 0
}

// cgroupValue reads a limit of this executor's (only) runtime from the host side, in cgroup v2's spelling
// ("max" for none, cpu as "<quota> <period>") on v1 hosts too.
func cgroupValue(t *testing.T, x *executor, controller string) string {
	t.Helper()
	read := func(pattern string) (string, bool) {
		files, _ := filepath.Glob(pattern)
		if len(files) == 0 {
			return "", false
		}
		if len(files) != 1 {
			t.Fatalf("expected one runtime cgroup, found %v", files)
		}
		data, err := os.ReadFile(files[0])
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(data)), true
	}
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		v, ok := read(filepath.Join("/sys/fs/cgroup", x.cgParent, "rt-*", controller+".max"))
		if !ok {
			t.Fatalf("no runtime cgroup with %s.max", controller)
		}
		return v
	}
	dir := filepath.Join("/sys/fs/cgroup", controller, x.cgParent, "rt-*")
	switch controller {
	case "memory":
		v, ok := read(filepath.Join(dir, "memory.limit_in_bytes"))
		if !ok {
			t.Fatal("no runtime memory cgroup")
		}
		// v1 reports "no limit" as the largest page-aligned counter value.
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 1<<62 {
			return "max"
		}
		return v
	case "cpu":
		quota, ok := read(filepath.Join(dir, "cpu.cfs_quota_us"))
		period, ok2 := read(filepath.Join(dir, "cpu.cfs_period_us"))
		if !ok || !ok2 {
			t.Fatal("no runtime cpu cgroup")
		}
		if quota == "-1" {
			quota = "max"
		}
		return quota + " " + period
	default:
		v, ok := read(filepath.Join(dir, controller+".max"))
		if !ok {
			t.Fatalf("no runtime %s cgroup", controller)
		}
		return v
	}
}

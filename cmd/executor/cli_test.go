package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
)

// fakeDaemon answers the API routes the command line uses, with canned replies, and records what it was sent.
type fakeDaemon struct {
	*httptest.Server
	mu       sync.Mutex
	requests []string // "METHOD target auth", the target as the request line has it
	bodies   []string
	routes   map[string]func(w http.ResponseWriter) // by "METHOD path"
}

func newFakeDaemon(t *testing.T, routes map[string]func(w http.ResponseWriter)) *fakeDaemon {
	d := &fakeDaemon{routes: routes}
	d.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		d.mu.Lock()
		// The request line's target as sent: "?" with nothing after it shows too.
		d.requests = append(d.requests, r.Method+" "+r.RequestURI+" "+r.Header.Get("Authorization"))
		d.bodies = append(d.bodies, string(body))
		h := d.routes[r.Method+" "+r.URL.EscapedPath()]
		d.mu.Unlock()
		if h == nil {
			apiErr(404, "general_route_not_found", "The requested route was not found.")(w)
			return
		}
		h(w)
	}))
	t.Cleanup(d.Close)
	return d
}

func (d *fakeDaemon) addr() string { return strings.TrimPrefix(d.URL, "http://") }

func (d *fakeDaemon) seen() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.requests)
}

func reply(status int, contentType, body string) func(http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

func apiErr(status int, typ, message string) func(http.ResponseWriter) {
	body, _ := json.Marshal(map[string]any{"type": typ, "message": message, "code": status, "version": "test"})
	return reply(status, "application/json", string(body))
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

type cliResult struct {
	code           int
	stdout, stderr string
}

func runTestCLI(t *testing.T, env map[string]string, args ...string) cliResult {
	t.Helper()
	var stdout, stderr bytes.Buffer
	c := &cli{stdout: &stdout, stderr: &stderr, getenv: func(k string) string { return env[k] }, hostname: "host1"}
	code := c.run(context.Background(), args)
	return cliResult{code, stdout.String(), stderr.String()}
}

// The command line without a daemon: help, version, and every way to get it wrong, each with its exit code and
// one line on stderr (plus the hint).
func TestCLIArguments(t *testing.T) {
	oldVersion, oldCommit, oldDate := version, commit, buildDate
	version, commit, buildDate = "v1.2.3-test", "0123abc", "2026-01-02T03:04:05Z"
	t.Cleanup(func() { version, commit, buildDate = oldVersion, oldCommit, oldDate })
	keyed := map[string]string{"OPR_EXECUTOR_SECRET": "k"}
	tests := []struct {
		name       string
		env        map[string]string
		args       []string
		code       int
		stdout     []string // substrings
		stderrLine string   // the first line of stderr, exactly
	}{
		{name: "--help", args: []string{"--help"}, stdout: []string{"Usage:", "OPR_EXECUTOR_", "README", "runtimes", "rm ID...", "logs ID", "health", "pull IMAGE", "Exit status"}},
		{name: "-h", args: []string{"-h"}, stdout: []string{"Usage:", "pull IMAGE"}},
		{name: "help", args: []string{"help"}, stdout: []string{"Usage:", "--addr", "--key"}},
		{name: "help of a command", args: []string{"help", "logs"}, stdout: []string{"Usage: executor logs [FLAGS] ID", "--timeout SECONDS", "--timestamps", "--addr"}},
		{name: "command -h", args: []string{"pull", "-h"}, stdout: []string{"Usage: executor pull [FLAGS] IMAGE"}},
		{name: "command --help among arguments", args: []string{"rm", "a", "--help"}, stdout: []string{"Usage: executor rm [FLAGS] ID..."}},
		{name: "--help with a command", args: []string{"--help", "health"}, stdout: []string{"Usage: executor health"}},
		{name: "--version", args: []string{"--version"}, stdout: []string{"executor v1.2.3-test\n", "commit:  0123abc\n", "built:   2026-01-02T03:04:05Z\n"}},
		{name: "version", args: []string{"version"}, stdout: []string{"executor v1.2.3-test\n"}},

		{name: "unknown flag", args: []string{"--bogus"}, code: 2, stderrLine: "executor: unknown flag --bogus"},
		{name: "unknown single-dash flag", args: []string{"-x"}, code: 2, stderrLine: "executor: unknown flag --x"},
		{name: "unknown command", args: []string{"frob"}, code: 2, stderrLine: `executor: unknown command "frob"`},
		{name: "help of an unknown command", args: []string{"help", "frob"}, code: 2, stderrLine: `executor: unknown command "frob"`},
		{name: "unknown flag of a command", args: []string{"runtimes", "--all"}, env: keyed, code: 2, stderrLine: "executor: unknown flag --all"},
		{name: "flags without a command", args: []string{"--addr", "127.0.0.1:1"}, code: 2,
			stderrLine: "executor: flags need a command; the daemon itself is configured by OPR_EXECUTOR_* variables only"},
		{name: "missing argument", args: []string{"rm"}, env: keyed, code: 2, stderrLine: "executor: missing argument: executor rm ID..."},
		{name: "too many arguments", args: []string{"logs", "a", "b"}, env: keyed, code: 2, stderrLine: "executor: too many arguments: executor logs ID"},
		{name: "arguments where none are taken", args: []string{"runtimes", "x"}, env: keyed, code: 2, stderrLine: `executor: runtimes takes no arguments, got "x"`},
		{name: "empty argument", args: []string{"pull", ""}, env: keyed, code: 2, stderrLine: "executor: pull: an empty argument"},
		{name: "bad flag value", args: []string{"logs", "--timeout", "soon", "a"}, env: keyed, code: 2,
			stderrLine: `executor: invalid value "soon" for flag -timeout: parse error`},
		{name: "negative timeout", args: []string{"logs", "--timeout=-1", "a"}, env: keyed, code: 2, stderrLine: "executor: --timeout must not be negative"},
		{name: "no key", args: []string{"runtimes"}, code: 2, stderrLine: "executor: runtimes needs the API key: set OPR_EXECUTOR_SECRET (or pass --key)"},
		{name: "bad --addr", args: []string{"health", "--addr", "nowhere"}, code: 2, stderrLine: `executor: --addr nowhere: "nowhere" is not HOST:PORT`},
		{name: "--addr of another scheme", args: []string{"health", "--addr", "ftp://h:1"}, code: 2, stderrLine: `executor: --addr ftp://h:1: "ftp://h:1": only http and https URLs`},
		{name: "bad OPR_EXECUTOR_LISTEN", args: []string{"health"}, env: map[string]string{"OPR_EXECUTOR_LISTEN": "9900"}, code: 2,
			stderrLine: `executor: OPR_EXECUTOR_LISTEN="9900" is not host:port: address 9900: missing port in address`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runTestCLI(t, tt.env, tt.args...)
			if r.code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, tt.code, r.stdout, r.stderr)
			}
			for _, want := range tt.stdout {
				if !strings.Contains(r.stdout, want) {
					t.Errorf("stdout lacks %q:\n%s", want, r.stdout)
				}
			}
			if tt.code == 0 {
				if r.stderr != "" {
					t.Errorf("stderr: %s", r.stderr)
				}
				return
			}
			if r.stdout != "" {
				t.Errorf("stdout on a usage error: %s", r.stdout)
			}
			lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
			if lines[0] != tt.stderrLine || len(lines) != 2 || lines[1] != "Run 'executor --help' for usage." {
				t.Errorf("stderr %q, want %q and the hint", r.stderr, tt.stderrLine)
			}
		})
	}
}

func TestParseArgsFlagsAnywhere(t *testing.T) {
	tests := []struct {
		args       []string
		want       []string
		addr, key  string
		timestamps bool
	}{
		{args: []string{"logs", "fn", "--timestamps"}, want: []string{"fn"}, timestamps: true},
		{args: []string{"logs", "--timestamps", "fn"}, want: []string{"fn"}, timestamps: true},
		{args: []string{"--addr", "h:1", "rm", "a", "--key", "k", "b"}, want: []string{"a", "b"}, addr: "h:1", key: "k"},
		{args: []string{"rm", "--addr=h:2", "a"}, want: []string{"a"}, addr: "h:2"},
		{args: []string{"rm", "--", "-dash", "--key"}, want: []string{"-dash", "--key"}},
		{args: []string{"rm", "a", "--", "--timestamps"}, want: []string{"a", "--timestamps"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			inv, err := parseArgs(tt.args)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(inv.args, tt.want) || inv.addr != tt.addr || inv.key != tt.key || inv.timestamps != tt.timestamps {
				t.Errorf("got args %q addr %q key %q timestamps %v", inv.args, inv.addr, inv.key, inv.timestamps)
			}
		})
	}
}

// Where the command line looks for the daemon: --addr, else OPR_EXECUTOR_LISTEN as the daemon reads it, an
// unspecified host being loopback.
func TestDaemonAddress(t *testing.T) {
	tests := []struct {
		flag, env string
		want      string // URL, or "error"
	}{
		{env: "", want: "http://127.0.0.1:9900"},
		{env: "  ", want: "http://127.0.0.1:9900"},
		{env: "0.0.0.0:9901", want: "http://127.0.0.1:9901"},
		{env: " 127.0.0.1:9902 ", want: "http://127.0.0.1:9902"},
		{env: ":9903", want: "http://127.0.0.1:9903"},
		{env: "[::]:9904", want: "http://[::1]:9904"},
		{env: "10.1.2.3:80", want: "http://10.1.2.3:80"},
		{env: "[fd00::1]:80", want: "http://[fd00::1]:80"},
		{env: "localhost", want: "error"},
		{flag: "executor.example:443", env: "0.0.0.0:1", want: "http://executor.example:443"},
		{flag: "https://executor.example:8443", want: "https://executor.example:8443"},
		{flag: "http://0.0.0.0:7/", want: "http://127.0.0.1:7"},
		{flag: "http://executor.example", want: "error"},
		{flag: "http://executor.example:1/v1", want: "error"},
		{flag: "http://user:pw@executor.example:1", want: "error"},
		{flag: "h:", want: "error"},
	}
	for _, tt := range tests {
		t.Run(tt.flag+"|"+tt.env, func(t *testing.T) {
			c := &cli{getenv: func(k string) string {
				if k == "OPR_EXECUTOR_LISTEN" {
					return tt.env
				}
				return ""
			}}
			a, err := c.client(&invocation{cmd: findCommand("health"), addr: tt.flag})
			if tt.want == "error" {
				if err == nil {
					t.Fatalf("got %s, want an error", a.base)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if a.base.String() != tt.want {
				t.Errorf("got %s, want %s", a.base, tt.want)
			}
		})
	}
}

// Each command against a fake daemon: what it sends, what it prints, and its exit code for each kind of answer.
func TestCLICommands(t *testing.T) {
	runtimesJSON := `[{"version":"v5","created":1784800900.5,"updated":1784800901,"name":"host1-fn-b","hostname":"abc","status":"Up 3s","key":"","listening":1,"image":"openruntimes\/node:v5-18.0","initialised":1},` +
		`{"version":"v5","created":1784800800,"updated":1784800801,"name":"other-fn-a","hostname":"def","status":"pending","key":"","listening":0,"image":"img\u001b[2J","initialised":0}]`
	logStream := "2026-01-02T03:04:05.123+00:00 Step: 1\\n\n2026-01-02T03:04:05.200+00:00 two\\nlines\\n\n"
	pullStream := strings.Join([]string{
		`{"status":"pulling","layer":"sha256:aaaaaaaaaaaaaaaa","index":0,"layers":2,"fetched":0,"size":2048,"done":false}`,
		`{"status":"pulling","layer":"sha256:bbbbbbbbbbbbbbbb","index":1,"layers":2,"fetched":0,"size":10,"done":false}`,
		`{"status":"pulling","layer":"sha256:aaaaaaaaaaaaaaaa","index":0,"layers":2,"fetched":2048,"size":2048,"done":true}`,
		`{"status":"pulling","layer":"sha256:bbbbbbbbbbbbbbbb","index":1,"layers":2,"fetched":0,"size":10,"done":true}`,
		`{"status":"pulled","image":"img:1","digest":"sha256:cccc","layers":2}`,
	}, "\n") + "\n"
	tests := []struct {
		name    string
		routes  map[string]func(http.ResponseWriter)
		args    []string
		noKey   bool
		code    int
		stdout  []string // in this order
		stderr  string   // substring; DAEMON stands for the fake daemon's URL
		request string   // the request the daemon saw first
	}{
		{name: "runtimes", routes: map[string]func(http.ResponseWriter){"GET /v1/runtimes": reply(200, "application/json", runtimesJSON)},
			args: []string{"runtimes"}, stdout: []string{"ID", "STATUS", "IMAGE", "CREATED", "\nother-fn-a ", "pending", "img?[2J", "\nfn-b ", "Up 3s", "openruntimes/node:v5-18.0"},
			request: "GET /v1/runtimes Bearer key"},
		{name: "runtimes, none", routes: map[string]func(http.ResponseWriter){"GET /v1/runtimes": reply(200, "application/json", "[]")},
			args: []string{"runtimes"}, stdout: []string{"ID   STATUS   IMAGE   CREATED\n"}},
		{name: "runtimes, unauthorized", routes: map[string]func(http.ResponseWriter){"GET /v1/runtimes": apiErr(401, "general_unauthorized", "Missing executor key")},
			args: []string{"runtimes"}, code: 1, stderr: "executor: general_unauthorized: Missing executor key (401)"},
		{name: "runtimes, not the API", routes: map[string]func(http.ResponseWriter){"GET /v1/runtimes": reply(502, "text/html", "<html>")},
			args: []string{"runtimes"}, code: 1, stderr: "executor: the daemon answered 502 Bad Gateway"},
		{name: "runtimes, unreadable", routes: map[string]func(http.ResponseWriter){"GET /v1/runtimes": reply(200, "application/json", "{")},
			args: []string{"runtimes"}, code: 3, stderr: "lost the connection"},
		{name: "runtimes, not a list", routes: map[string]func(http.ResponseWriter){"GET /v1/runtimes": reply(200, "application/json", `{"a":1}`)},
			args: []string{"runtimes"}, code: 1, stderr: "could not be read"},
		{name: "rm", routes: map[string]func(http.ResponseWriter){"DELETE /v1/runtimes/fn-a": reply(200, "", ""), "DELETE /v1/runtimes/fn%2Fb": reply(200, "", "")},
			args: []string{"rm", "fn-a", "fn/b"}, stdout: []string{"fn-a\n", "fn/b\n"}, request: "DELETE /v1/runtimes/fn-a Bearer key"},
		{name: "rm, one missing", routes: map[string]func(http.ResponseWriter){"DELETE /v1/runtimes/fn-a": reply(200, "", ""),
			"DELETE /v1/runtimes/gone": apiErr(404, "runtime_not_found", "Runtime not found")},
			args: []string{"rm", "gone", "fn-a"}, code: 1, stdout: []string{"fn-a\n"}, stderr: "executor: gone: runtime_not_found: Runtime not found (404)"},
		{name: "rm, any 2xx is done, a redirect is not followed", routes: map[string]func(http.ResponseWriter){
			"DELETE /v1/runtimes/a": reply(204, "", ""), "DELETE /v1/runtimes/b": reply(299, "", ""),
			"DELETE /v1/runtimes/c": func(w http.ResponseWriter) { w.Header().Set("Location", "/v1/runtimes/a"); w.WriteHeader(302) }},
			args: []string{"rm", "a", "b", "c"}, code: 1, stdout: []string{"a\nb\n"}, stderr: "executor: c: the daemon answered 302 Found\n"},
		{name: "logs of a v5 runtime", routes: map[string]func(http.ResponseWriter){"GET /v1/runtimes/fn/logs": reply(200, "text/event-stream", logStream)},
			args: []string{"logs", "fn"}, stdout: []string{"Step: 1\ntwo\nlines\n"}, request: "GET /v1/runtimes/fn/logs?timeout=600 Bearer key"},
		{name: "logs with timestamps", routes: map[string]func(http.ResponseWriter){"GET /v1/runtimes/fn/logs": reply(200, "text/event-stream", logStream)},
			args:    []string{"logs", "--timestamps", "--timeout", "5", "fn"},
			stdout:  []string{"2026-01-02T03:04:05.123+00:00 Step: 1\n2026-01-02T03:04:05.200+00:00 two\nlines\n"},
			request: "GET /v1/runtimes/fn/logs?timeout=5 Bearer key"},
		{name: "logs of an older runtime, raw", routes: map[string]func(http.ResponseWriter){"GET /v1/runtimes/fn/logs": reply(200, "text/event-stream", "plain output\\n stays\nas is")},
			args: []string{"logs", "fn"}, stdout: []string{"plain output\\n stays\nas is"}},
		{name: "logs, no such runtime", routes: map[string]func(http.ResponseWriter){"GET /v1/runtimes/fn/logs": apiErr(400, "runtime_timeout", "Timed out waiting for runtime.")},
			args: []string{"logs", "fn"}, code: 1, stderr: "runtime_timeout: Timed out waiting for runtime. (400)"},
		{name: "health without a key", routes: map[string]func(http.ResponseWriter){"GET /v1/health": reply(200, "application/json", `{"status":"pass"}`)},
			args: []string{"health"}, noKey: true, stdout: []string{"ok\n"}, request: "GET /v1/health "},
		{name: "health with the key", routes: map[string]func(http.ResponseWriter){"GET /v1/health": reply(200, "application/json", `{"status":"pass","usage":12.5,"runtimes":{"a":{"status":"pass","usage":1}}}`)},
			args: []string{"health"}, stdout: []string{"ok\n", "cpu: 12.5% of the host, 1 runtimes\n"}, request: "GET /v1/health Bearer key"},
		{name: "health, unhealthy", routes: map[string]func(http.ResponseWriter){"GET /v1/health": apiErr(503, "general_unknown", "Executor is draining")},
			args: []string{"health"}, code: 1, stderr: "general_unknown: Executor is draining (503)"},
		{name: "pull", routes: map[string]func(http.ResponseWriter){"POST /v1/images": reply(200, "application/x-ndjson", pullStream)},
			args: []string{"pull", "img:1"},
			stdout: []string{"aaaaaaaaaaaa: layer 1 of 2, 2.0 KiB\n", "bbbbbbbbbbbb: layer 2 of 2, 10 B\n", "aaaaaaaaaaaa: done, 2.0 KiB\n",
				"bbbbbbbbbbbb: already in the store\n", "pulled img:1 (sha256:cccc, 2 layers)\n"},
			request: "POST /v1/images Bearer key"},
		{name: "pull, already there (one document)", routes: map[string]func(http.ResponseWriter){"POST /v1/images": reply(200, "application/json", `{"status":"pulled","image":"img:1","digest":"sha256:cccc","layers":2}`)},
			args: []string{"pull", "img:1"}, stdout: []string{"pulled img:1 (sha256:cccc, 2 layers)\n"}},
		{name: "pull refused", routes: map[string]func(http.ResponseWriter){"POST /v1/images": apiErr(404, "image_pull_failed", "image not found")},
			args: []string{"pull", "img:1"}, code: 1, stderr: "executor: image_pull_failed: image not found (404)"},
		{name: "pull fails in the stream", routes: map[string]func(http.ResponseWriter){"POST /v1/images": reply(200, "application/x-ndjson",
			strings.SplitAfter(pullStream, "\n")[0]+`{"status":"error","error":{"type":"image_pull_failed","message":"image too large","code":400,"version":"x"}}`+"\n")},
			args: []string{"pull", "img:1"}, code: 1, stdout: []string{"aaaaaaaaaaaa: layer 1 of 2"}, stderr: "executor: image_pull_failed: image too large (400)"},
		{name: "pull stream cut", routes: map[string]func(http.ResponseWriter){"POST /v1/images": reply(200, "application/x-ndjson", strings.SplitAfter(pullStream, "\n")[0])},
			args: []string{"pull", "img:1"}, code: 3, stderr: "executor: lost the connection to the daemon at DAEMON: unexpected EOF\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newFakeDaemon(t, tt.routes)
			env := map[string]string{"OPR_EXECUTOR_LISTEN": d.addr(), "OPR_EXECUTOR_SECRET": "key"}
			if tt.noKey {
				delete(env, "OPR_EXECUTOR_SECRET")
			}
			r := runTestCLI(t, env, tt.args...)
			if r.code != tt.code {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", r.code, tt.code, r.stdout, r.stderr)
			}
			rest := r.stdout
			for _, want := range tt.stdout {
				i := strings.Index(rest, want)
				if i < 0 {
					t.Fatalf("stdout lacks %q (in this order):\n%s", want, r.stdout)
				}
				rest = rest[i+len(want):]
			}
			if want := strings.ReplaceAll(tt.stderr, "DAEMON", d.URL); want == "" && r.stderr != "" || !strings.Contains(r.stderr, want) {
				t.Errorf("stderr %q, want %q", r.stderr, want)
			}
			// stdout is not a terminal here: what the daemon sent is shown without control sequences, and
			// progress as plain lines.
			if strings.ContainsAny(r.stdout, "\x1b\r") {
				t.Errorf("control characters on stdout: %q", r.stdout)
			}
			if seen := d.seen(); tt.request != "" && (len(seen) == 0 || seen[0] != tt.request) {
				t.Errorf("daemon saw %q, want first %q", seen, tt.request)
			}
			// Only pull has something to send; the others send no body at all (not even JSON's null).
			d.mu.Lock()
			defer d.mu.Unlock()
			for i, body := range d.bodies {
				if body != "" && !strings.HasPrefix(d.requests[i], "POST ") {
					t.Errorf("%s came with a body: %q", d.requests[i], body)
				}
			}
		})
	}
}

// pull sends the image as JSON, asking for the progress stream.
func TestCLIPullRequest(t *testing.T) {
	var accept, ctype string
	var body map[string]string
	d := newFakeDaemon(t, nil)
	d.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		accept, ctype = r.Header.Get("Accept"), r.Header.Get("Content-Type")
		json.NewDecoder(r.Body).Decode(&body)
		fmt.Fprintf(w, `{"status":"pulled","image":%q,"digest":"d","layers":1}`+"\n", body["image"])
	})
	r := runTestCLI(t, map[string]string{"OPR_EXECUTOR_SECRET": "k"}, "pull", "--addr", d.addr(), "openruntimes/node:v5-18.0")
	if r.code != 0 || r.stdout != "pulled openruntimes/node:v5-18.0 (d, 1 layers)\n" {
		t.Fatalf("exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	if accept != "application/x-ndjson" || ctype != "application/json" {
		t.Errorf("Accept %q, Content-Type %q", accept, ctype)
	}
	if body["image"] != "openruntimes/node:v5-18.0" {
		t.Errorf("the daemon was asked for %q", body)
	}
}

// A daemon that is not there: exit 3, and the address and where it came from are said.
func TestCLIUnreachable(t *testing.T) {
	addr := closedAddr(t)
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"from OPR_EXECUTOR_LISTEN", map[string]string{"OPR_EXECUTOR_LISTEN": addr, "OPR_EXECUTOR_SECRET": "k"}, []string{"runtimes"},
			"executor: cannot reach the daemon at http://" + addr + " (OPR_EXECUTOR_LISTEN " + addr + "): dial tcp " + addr + ": connect: connection refused"},
		{"from --addr", nil, []string{"health", "--addr", addr}, "(--addr " + addr + ")"},
		{"rm stops at the first", map[string]string{"OPR_EXECUTOR_SECRET": "k"}, []string{"rm", "--addr", addr, "a", "b"}, "cannot reach the daemon at http://" + addr},
		{"pull", map[string]string{"OPR_EXECUTOR_SECRET": "k"}, []string{"pull", "--addr", addr, "img"}, "cannot reach"},
		{"logs", map[string]string{"OPR_EXECUTOR_SECRET": "k"}, []string{"logs", "--addr", addr, "fn"}, "cannot reach"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := runTestCLI(t, tt.env, tt.args...)
			if r.code != exitUnreachable || !strings.Contains(r.stderr, tt.want) || strings.Count(r.stderr, "\n") != 1 {
				t.Errorf("exit %d, stderr %q; want 3 and %q", r.code, r.stderr, tt.want)
			}
		})
	}
}

// The progress drawn on a terminal: one bar per layer, redrawn in place, never wider than the terminal.
func TestPullViewTerminal(t *testing.T) {
	var out bytes.Buffer
	v := newPullView(&out, 60)
	v.update(pullLine{Status: "pulling", Layer: "sha256:aaaaaaaaaaaaaaaa", Index: 0, Layers: 2, Size: 1000})
	v.update(pullLine{Status: "pulling", Layer: "sha256:bbbbbbbbbbbbbbbb", Index: 1, Layers: 2, Size: 4 << 20, Done: true})
	v.update(pullLine{Status: "pulling", Layer: "sha256:aaaaaaaaaaaaaaaa", Index: 0, Layers: 2, Size: 1000, Fetched: 500})
	v.finish()
	s := out.String()
	frames := strings.Split(s, "\x1b[2A")
	if len(frames) < 2 {
		t.Fatalf("no redrawing over the bars: %q", s)
	}
	last := frames[len(frames)-1]
	lines := strings.Split(strings.TrimSuffix(last, "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("last frame %q has %d lines, want 2", last, len(lines))
	}
	for _, l := range lines {
		l = strings.TrimPrefix(l, "\r\x1b[2K")
		if len(l) >= 60 {
			t.Errorf("line %q is %d wide on a 60-column terminal", l, len(l))
		}
	}
	if !strings.Contains(lines[0], "aaaaaaaaaaaa  [") || !strings.Contains(lines[0], "500 B / 1000 B") || !strings.Contains(lines[0], "=>") {
		t.Errorf("first layer's bar: %q", lines[0])
	}
	if !strings.Contains(lines[1], "bbbbbbbbbbbb  already in the store") {
		t.Errorf("second layer: %q", lines[1])
	}
}

func TestBytesText(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 5 << 20: "5.0 MiB", 1 << 20: "1.0 MiB", 1<<20 - 1: "1024.0 KiB", 1 << 30: "1.0 GiB", 3 << 30: "3.0 GiB", 3 << 40: "3072.0 GiB"} {
		if got := bytesText(n); got != want {
			t.Errorf("bytesText(%d) = %q, want %q", n, got, want)
		}
	}
}

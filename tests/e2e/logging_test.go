package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// logRecord is one line of the daemon's JSON log: its attributes, and its top-level keys in order (a key that
// appears twice, such as a component added by two layers, is lost in a map but not there).
type logRecord struct {
	attrs map[string]any
	keys  []string
}

func (r logRecord) str(k string) string { s, _ := r.attrs[k].(string); return s }

// parseJSONLog parses every line of out as one JSON object; anything else fails the test.
func parseJSONLog(t *testing.T, out string) []logRecord {
	t.Helper()
	var recs []logRecord
	for i, line := range logLines(out) {
		var rec logRecord
		if err := json.Unmarshal([]byte(line), &rec.attrs); err != nil {
			t.Errorf("line %d is not a JSON object: %v: %q", i+1, err, line)
			continue
		}
		dec := json.NewDecoder(strings.NewReader(line))
		_, _ = dec.Token() // {
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				t.Fatalf("line %d: %v", i+1, err)
			}
			rec.keys = append(rec.keys, k.(string))
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				t.Fatalf("line %d: %v", i+1, err)
			}
		}
		recs = append(recs, rec)
	}
	return recs
}

// TestJSONLogs: with OPR_EXECUTOR_LOG_FORMAT=json the daemon writes nothing but JSON lines through a cold start,
// a failed pull, a rejected request and its shutdown; each line has time, level and msg and no key twice; every
// request has one access line naming its route pattern, failed ones above debug with their type.
func TestJSONLogs(t *testing.T) {
	x := startExecutor(t, "OPR_EXECUTOR_LOG_FORMAT=json")
	src := source(t, map[string]string{"index.js": "x"})
	if r := x.request(t, "POST", "/v1/runtimes/json-logs/executions", execBody(src, nil), jsonAccept); r.status != 200 {
		t.Fatalf("cold execution: %d %s", r.status, r.body)
	}
	missing := shared.registry.Addr() + "/openruntimes/test:does-not-exist"
	if r := x.request(t, "POST", "/v1/runtimes/json-missing/executions", execBody(src, map[string]any{"image": missing}), jsonAccept); r.status != 400 {
		t.Fatalf("execution of a missing image: %d %s", r.status, r.body)
	}
	if r := x.request(t, "GET", "/v1/runtimes/json-nope", nil, nil); r.status != 404 {
		t.Fatalf("unknown runtime: %d %s", r.status, r.body)
	}
	x.stop()

	recs := parseJSONLog(t, x.logs.String())
	var executions, imagePulled []logRecord
	access := map[string][]logRecord{} // by runtime id
	for _, rec := range recs {
		seen := map[string]bool{}
		for _, k := range rec.keys {
			if seen[k] {
				t.Errorf("key %q twice: %v", k, rec.attrs)
			}
			seen[k] = true
		}
		if rec.str("time") == "" || rec.str("level") == "" || rec.str("msg") == "" {
			t.Errorf("line without time, level or msg: %v", rec.attrs)
		}
		if _, ok := rec.attrs["error"]; ok {
			t.Errorf("an error under \"error\", not \"err\": %v", rec.attrs)
		}
		switch rec.str("msg") {
		case "request":
			if rec.str("component") != "api" {
				t.Errorf("access line of component %q: %v", rec.str("component"), rec.attrs)
			}
			if rec.str("route") == "/v1/health" {
				// The harness polled it until the daemon answered.
				if rec.str("level") != "DEBUG" {
					t.Errorf("health check at %s: %v", rec.str("level"), rec.attrs)
				}
				continue
			}
			if rec.str("route") == "/v1/runtimes/:runtimeId/executions" {
				executions = append(executions, rec)
			}
			access[rec.str("runtime")] = append(access[rec.str("runtime")], rec)
		case "image pulled":
			imagePulled = append(imagePulled, rec)
		}
	}
	if len(executions) != 2 {
		t.Errorf("%d access lines for the executions route, want 2: %v", len(executions), executions)
	}
	tests := []struct {
		runtime, method, route, level string
		status                        float64
		typ                           string
	}{
		{"json-logs", "POST", "/v1/runtimes/:runtimeId/executions", "INFO", 200, ""},
		{"json-missing", "POST", "/v1/runtimes/:runtimeId/executions", "INFO", 400, "runtime_failed"},
		{"json-nope", "GET", "/v1/runtimes/:runtimeId", "INFO", 404, "runtime_not_found"},
	}
	for _, tt := range tests {
		lines := access[tt.runtime]
		if len(lines) != 1 {
			t.Errorf("%s: %d access lines, want 1: %v", tt.runtime, len(lines), lines)
			continue
		}
		a := lines[0]
		if a.str("method") != tt.method || a.str("route") != tt.route || a.str("level") != tt.level ||
			a.attrs["status"] != tt.status || a.str("type") != tt.typ {
			t.Errorf("%s: access line %v, want %s %s at %s, status %v, type %q", tt.runtime, a.attrs, tt.method, tt.route, tt.level, tt.status, tt.typ)
		}
		if d, _ := a.attrs["duration"].(float64); d <= 0 {
			t.Errorf("%s: duration %v", tt.runtime, a.attrs["duration"])
		}
		if _, ok := a.attrs["bytes"].(float64); !ok {
			t.Errorf("%s: no bytes: %v", tt.runtime, a.attrs)
		}
		if tt.status >= 400 && a.str("message") == "" {
			t.Errorf("%s: a failed request's line without its message: %v", tt.runtime, a.attrs)
		}
	}
	if len(imagePulled) != 1 || imagePulled[0].str("component") != "images" {
		t.Errorf("image pulled lines %v, want one of component images", imagePulled)
	}
}

// TestJournalPriorities: when stderr is the stream JOURNAL_STREAM names, as systemd sets it for a unit's
// output to journald, every line the daemon writes starts with its syslog priority; when the variable names
// another stream (inherited by a daemon whose stderr was redirected), none does. The daemon is stopped by a data
// dir it cannot make, which it logs as an error.
func TestJournalPriorities(t *testing.T) {
	blocker := filepath.Join(shared.data, "journal-"+filepath.Base(t.TempDir()))
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(blocker) })
	tests := []struct {
		name, format string
		// stream is the shell's JOURNAL_STREAM, evaluated with stderr already the pipe the test reads.
		stream string
		prefix string
	}{
		{"text on journald", "text", `$(stat -L -c %d:%i /proc/self/fd/2)`, "<3>"},
		{"json on journald", "json", `$(stat -L -c %d:%i /proc/self/fd/2)`, "<3>"},
		{"inherited, stderr elsewhere", "text", `$(stat -L -c %d:%i /dev/null)`, ""},
		{"no journald", "json", ``, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cmd := exec.Command("/bin/sh", "-c", `JOURNAL_STREAM=`+tt.stream+` exec "$0"`, shared.bin)
			cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "OPR_EXECUTOR_SECRET=" + secret,
				"OPR_EXECUTOR_DATA_DIR=" + filepath.Join(blocker, "data"), "OPR_EXECUTOR_LOG_FORMAT=" + tt.format}
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			cmd.Stdout = io.Discard
			err := cmd.Run()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != 1 {
				t.Fatalf("exit %v, want 1; stderr:\n%s", err, stderr.String())
			}
			lines := logLines(stderr.String())
			if len(lines) == 0 {
				t.Fatal("nothing on stderr")
			}
			last := lines[len(lines)-1]
			for _, line := range lines {
				if tt.prefix == "" && strings.HasPrefix(line, "<") {
					t.Errorf("a priority without journald: %s", line)
				}
				if tt.prefix != "" && !(strings.HasPrefix(line, "<") && len(line) > 3 && line[2] == '>') {
					t.Errorf("a line without its priority: %s", line)
				}
			}
			rest, ok := strings.CutPrefix(last, tt.prefix)
			if !ok || !strings.Contains(rest, "executor stopped") || !strings.Contains(rest, "OPR_EXECUTOR_DATA_DIR") {
				t.Fatalf("last line %q, want %q then the error that stopped the daemon", last, tt.prefix)
			}
			if tt.format == "json" && !json.Valid([]byte(rest)) {
				t.Errorf("not JSON after the priority: %s", rest)
			}
		})
	}
}

package main

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// What the daemon sends is shown with every control character (C0, DEL, C1) as "?", so that it cannot break the
// table or drive the terminal; printable text, non-ASCII letters and no-break spaces included, is kept.
func TestOneLine(t *testing.T) {
	tests := []struct{ in, want string }{
		{"Up 3s", "Up 3s"},
		{"a\x00b\x1fc", "a?b?c"},
		{"tab\tnewline\n", "tab?newline?"},
		{"~\x7f", "~?"},
		{"\u0080\u009b2J\u009f", "??2J?"},
		{"\u00a0é\u00ff", "\u00a0é\u00ff"},
		{"node:v5-18.0 ✓", "node:v5-18.0 ✓"},
	}
	for _, tt := range tests {
		if got := oneLine(tt.in); got != tt.want {
			t.Errorf("oneLine(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// The CREATED column: the daemon's Unix time on this host's clock, to the second; "-" for a time it did not
// give (0, negative).
func TestRuntimesCreatedColumn(t *testing.T) {
	const when = 1784800900
	list := `[{"name":"host1-a","status":"Up","image":"i","created":1784800900.75},` +
		`{"name":"host1-b","status":"Up","image":"i","created":0},` +
		`{"name":"host1-c","status":"Up","image":"i","created":-1}]`
	d := newFakeDaemon(t, map[string]func(http.ResponseWriter){"GET /v1/runtimes": reply(200, "application/json", list)})
	r := runTestCLI(t, map[string]string{"OPR_EXECUTOR_LISTEN": d.addr(), "OPR_EXECUTOR_SECRET": "k"}, "runtimes")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	// Oldest first, by the time the daemon sent (-1, 0, then a's).
	want := "ID   STATUS   IMAGE   CREATED\n" +
		"c    Up       i       -\n" +
		"b    Up       i       -\n" +
		"a    Up       i       " + time.Unix(when, 0).Local().Format("2006-01-02 15:04:05") + "\n"
	if r.stdout != want {
		t.Errorf("got\n%s\nwant\n%s", r.stdout, want)
	}
	if strings.Contains(r.stdout, "1970") {
		t.Errorf("a time the daemon did not give shown as the epoch:\n%s", r.stdout)
	}
}

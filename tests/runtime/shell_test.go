package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestShellRunsTheBodyBeforeAnswering(t *testing.T) {
	tests := []struct {
		name      string
		target    string
		body      string
		wantBody  string
		wantLogID func(own string) string // own: the id the request's files have
	}{
		{"output is the body", "/shell", `echo one; echo two >&2`, "one\ntwo\n", func(own string) string { return own }},
		{"LOG_ID names this request's files", "/shell", `test -f "$LOGS_DIR/${LOG_ID}_logs.log" && echo "$LOG_ID"`, "req-1\n", func(own string) string { return own }},
		{"a failing script still answers", "/shell", `echo before; exit 3`, "before\nshell: exit status 3\n", func(own string) string { return own }},
		{"logid answers with another id", "/shell?logid=planted", `true`, "", func(string) string { return "planted" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, ProtocolV5)
			res := f.do(t, "POST", tc.target, tc.body, map[string]string{hdrLogID: "req-1"})
			body := readBody(t, res)
			if res.StatusCode != 200 {
				t.Fatalf("status %d: %q", res.StatusCode, body)
			}
			if body != tc.wantBody {
				t.Fatalf("body %q, want %q", body, tc.wantBody)
			}
			if got, want := res.Header.Get(hdrLogID), tc.wantLogID("req-1"); got != want {
				t.Fatalf("log id %q, want %q", got, want)
			}
		})
	}
}

func TestMakeSocketLeavesASocketFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sock")
	if err := run([]string{"-mksock", path}); err != nil {
		t.Fatal(err)
	}
	st, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Type() != os.ModeSocket {
		t.Fatalf("%s is %v, want a socket", path, st.Mode().Type())
	}
	if err := run([]string{"-mksock", path}); err == nil || !strings.Contains(err.Error(), "bind") {
		t.Fatalf("second bind at the same path: %v, want an error", err)
	}
}

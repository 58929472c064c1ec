package api

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"executor/sandbox"
)

func TestCommands(t *testing.T) {
	tests := []struct {
		name        string
		body        string
		auth        bool
		out         string
		err         error
		status      int
		want        string
		wantTimeout time.Duration // checked when the command ran
	}{
		{"runs", `{"command":"echo hi","timeout":5}`, true, "hi\n", nil, 200, `{"output":"hi\n"}`, 5 * time.Second},
		{"default timeout", `{"command":"echo hi"}`, true, "hi\n", nil, 200, `{"output":"hi\n"}`, 600 * time.Second},
		{"needs the key", `{"command":"echo hi"}`, false, "", nil, 401, "Missing executor key", 0},
		{"command required", `{}`, true, "", nil, 400, `Param \"command\" is not optional.`, 0},
		{"timeout is strict", `{"command":"x","timeout":"5"}`, true, "", nil, 400, "Invalid `timeout` param", 0},
		{"timeout error", `{"command":"sleep 9"}`, true, "", &sandbox.Error{Kind: sandbox.CommandTimeout}, 500, "Operation timed out.", 600 * time.Second},
		{"failure", `{"command":"exit 1"}`, true, "", &sandbox.Error{Kind: sandbox.CommandFailed}, 500, "command_failed", 600 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := &fakeBackend{cmdOut: tc.out, cmdErr: tc.err}
			s := newTestServer(t, b)
			req := httptest.NewRequest(http.MethodPost, "/v1/runtimes/rt/commands", strings.NewReader(tc.body))
			req.Header.Set("Content-Type", "application/json")
			if tc.auth {
				req.Header.Set("Authorization", "Bearer "+testSecret)
			}
			rec := httptest.NewRecorder()
			s.ServeHTTP(rec, req)
			if rec.Code != tc.status || !strings.Contains(rec.Body.String(), tc.want) {
				t.Fatalf("got %d %s, want %d with %s", rec.Code, rec.Body.String(), tc.status, tc.want)
			}
			if !tc.auth && b.command != "" {
				t.Fatal("command ran without the key")
			}
			if b.command != "" && b.cmdTimeout != tc.wantTimeout {
				t.Fatalf("timeout %v, want %v", b.cmdTimeout, tc.wantTimeout)
			}
		})
	}
}

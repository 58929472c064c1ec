package api

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"executor/sandbox"
)

// TestAccessLogClientGone: an execution cancelled because its client went away is logged at info as
// clientGone, not as an error; a cancellation the client did not cause (its request still live) is an
// internal error, at error level, with no clientGone.
func TestAccessLogClientGone(t *testing.T) {
	for _, tc := range []struct {
		name       string
		clientGone bool
		level      slog.Level
	}{
		{"client gone", true, slog.LevelInfo},
		{"client still there", false, slog.LevelError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCapture()
			s := newTestServer(t, &fakeBackend{infos: []sandbox.Info{}, execErr: fmt.Errorf("execution: %w", context.Canceled)},
				func(cfg *Config) { cfg.Logger = slog.New(c) })
			c.take()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.clientGone {
				cancel()
			}
			r := httptest.NewRequestWithContext(ctx, http.MethodPost, "/v1/runtimes/fn/executions",
				strings.NewReader(`{"image":"openruntimes/node:v5-18.0","path":"/"}`))
			r.Header.Set("Content-Type", "application/json")
			r.Header.Set("Authorization", "Bearer "+testSecret)
			s.ServeHTTP(httptest.NewRecorder(), r)
			got := c.take()
			if len(got) != 1 {
				t.Fatalf("access lines %+v, want one", got)
			}
			gone := got[0].attrs["clientGone"]
			if got[0].level != tc.level || (gone.Kind() == slog.KindBool && gone.Bool()) != tc.clientGone {
				t.Fatalf("access line %+v, want level %v and clientGone %v", got[0], tc.level, tc.clientGone)
			}
		})
	}
}

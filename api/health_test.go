package api

import (
	"math"
	"net/http"
	"testing"
)

func TestHealth(t *testing.T) {
	stats := func() Backend {
		return statsBackend{fakeBackend: &fakeBackend{}, host: 12.5, per: map[string]float64{"fn-b": 3, "fn-a": math.NaN()}}
	}
	tests := []struct {
		name    string
		backend Backend
		auth    *string
		want    string
	}{
		{"no key", stats(), str(""), `{"status":"pass"}`},
		{"wrong key", stats(), str("Bearer nope"), `{"status":"pass"}`},
		{"valid key with stats", stats(), nil,
			`{"status":"pass","usage":12.5,"runtimes":{"fn-a":{"status":"pass","usage":0},"fn-b":{"status":"pass","usage":3}}}`},
		{"valid key, empty stats", statsBackend{fakeBackend: &fakeBackend{}}, nil, `{"status":"pass","usage":0,"runtimes":{}}`},
		{"valid key without stats", &fakeBackend{}, nil, `{"status":"pass"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, tt.backend)
			w := do(t, s, request{method: http.MethodGet, path: "/v1/health", auth: tt.auth})
			if w.Code != 200 || w.Body.String() != tt.want {
				t.Errorf("status %d body %s, want %s", w.Code, w.Body, tt.want)
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/json; charset=UTF-8" {
				t.Errorf("content type %q", ct)
			}
		})
	}
}

func TestHealthWithEmptySecret(t *testing.T) {
	s := newTestServer(t, statsBackend{fakeBackend: &fakeBackend{}, host: 1}, func(c *Config) { c.Secret = "" })
	w := do(t, s, request{method: http.MethodGet, path: "/v1/health", auth: str("Bearer ")})
	if w.Code != 200 || w.Body.String() != `{"status":"pass"}` {
		t.Errorf("status %d body %s", w.Code, w.Body)
	}
}

package api

import (
	"net/http"
	"testing"
	"time"

	"executor/sandbox"
)

type seen struct {
	method, route string
	status        int
}

type recordingObserver struct{ got []seen }

func (o *recordingObserver) Request(r *http.Request, route string, status int, took time.Duration) {
	if took <= 0 {
		status = -1 // a request always takes some time: make the case fail
	}
	o.got = append(o.got, seen{r.Method, route, status})
}

func TestObserverSeesEveryRequest(t *testing.T) {
	tests := []struct {
		name string
		rq   request
		want seen
	}{
		{"health", request{method: http.MethodGet, path: "/v1/health"}, seen{"GET", "/v1/health", 200}},
		{"unkeyed", request{method: http.MethodGet, path: "/v1/runtimes", auth: str("")}, seen{"GET", "/v1/runtimes", 401}},
		{"runtime by id", request{method: http.MethodGet, path: "/v1/runtimes/nope"}, seen{"GET", "/v1/runtimes/:runtimeId", 404}},
		{"no route", request{method: http.MethodGet, path: "/v2/elsewhere"}, seen{"GET", "", 404}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := &recordingObserver{}
			s := newTestServer(t, &fakeBackend{infos: []sandbox.Info{}}, func(c *Config) { c.Observer = o })
			w := do(t, s, tt.rq)
			if len(o.got) != 1 || o.got[0] != tt.want {
				t.Fatalf("observed %+v (response %d), want one %+v", o.got, w.Code, tt.want)
			}
		})
	}
}

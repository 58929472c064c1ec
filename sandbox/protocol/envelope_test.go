package protocol

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestEnvelopeRequest(t *testing.T) {
	tests := []struct {
		name string
		vars map[string]string
		body string
		want string
	}{
		{"variables", map[string]string{"B": "2", "A": "1"}, `{"x":"é"}`, `{"variables":{"A":"1","B":"2"},"payload":"{\"x\":\"é\"}","headers":{}}`},
		{"no variables", nil, "", `{"variables":{},"payload":"","headers":{}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, reqs := runtimeServer(t, nil)
			c, _ := newClient(t)
			_, err := c.Execute(context.Background(), Target{Addr: addr, Secret: "s3cret", Version: V2}, Request{
				// v2 ignores the caller's method, path and headers.
				Method: "GET", Path: "/ignored", Headers: map[string]string{"X-Custom": "a", "Host": "example.com"},
				Body: []byte(tt.body), Variables: tt.vars, Logging: true, Timeout: time.Second,
			})
			if err != nil {
				t.Fatal(err)
			}
			r := <-reqs
			if r.method != "POST" || r.uri != "/" || r.host != "null" {
				t.Errorf("request line: %s %s host %q", r.method, r.uri, r.host)
			}
			if string(r.body) != tt.want {
				t.Errorf("body\n%s\nwant\n%s", r.body, tt.want)
			}
			want := map[string]string{"Content-Type": "application/json", "X-Internal-Challenge": "s3cret"}
			for k, v := range want {
				if r.header.Get(k) != v {
					t.Errorf("%s = %q, want %q", k, r.header.Get(k), v)
				}
			}
			for k := range r.header {
				if _, ok := want[k]; !ok && k != "Content-Length" {
					t.Errorf("unexpected header %s: %q", k, r.header[k])
				}
			}
		})
	}
}

func TestEnvelopeResponse(t *testing.T) {
	long := strings.Repeat("a", MaxV2Logs+1)
	exact := strings.Repeat("é", MaxV2Logs/2)
	tests := []struct {
		name               string
		status             int
		answer             string
		body, logs, errors string
	}{
		{"string", 200, `{"response":"hello","stdout":"out","stderr":"err"}`, "hello", "out", "err"},
		{"escaped string", 200, `{"response":"caf\u00e9\n"}`, "café\n", "", ""},
		{"object keeps key order", 200, `{"response": {"b": 1, "a": {"z": [1, 2], "y": null}}}`, `{"b":1,"a":{"z":[1,2],"y":null}}`, "", ""},
		{"array", 200, `{"response":[1, "two", {"x": 3}]}`, `[1,"two",{"x":3}]`, "", ""},
		{"number as sent", 200, `{"response":42.50}`, "42.50", "", ""},
		{"bool", 200, `{"response":true}`, "true", "", ""},
		{"null", 200, `{"response":null,"stdout":null}`, "", "", ""},
		{"missing", 200, `{"stdout":"x"}`, "", "x", ""},
		{"stdout and stderr objects", 200, `{"stdout":{"b":1,"a":"x"},"stderr":["e",1]}`, "", `{"a":"x","b":1}`, `["e",1]`},
		{"stdout number", 200, `{"stdout":3}`, "", "3", ""},
		{"user exception", 500, `{"stdout":"","stderr":"Error: boom\n    at x"}`, "", "", "Error: boom\n    at x"},
		{"not JSON", 400, `Invalid JSON`, "", "", ""},
		{"empty", 204, ``, "", "", ""},
		{"logs capped", 200, `{"stdout":"` + long + `","stderr":"` + exact + `"}`, "", long[:MaxV2Logs], exact},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, _ := runtimeServer(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("X-Ignored", "yes")
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.answer)
			})
			c, _ := newClient(t)
			res, err := c.Execute(context.Background(), Target{Addr: addr, Version: V2}, Request{Timeout: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			if res.StatusCode != tt.status {
				t.Errorf("status %d, want %d", res.StatusCode, tt.status)
			}
			if res.Body == nil || string(res.Body) != tt.body {
				t.Errorf("body %q, want %q", res.Body, tt.body)
			}
			if res.Logs != tt.logs || res.Errors != tt.errors {
				t.Errorf("logs %.40q errors %.40q, want %.40q %.40q", res.Logs, res.Errors, tt.logs, tt.errors)
			}
			if res.Headers == nil || len(res.Headers) != 0 {
				t.Errorf("headers %q, want none (and not nil)", res.Headers)
			}
		})
	}
}

func TestEnvelopeBody(t *testing.T) {
	tests := []struct{ in, want string }{
		{``, ``},
		{`null`, ``},
		{`"x"`, `x`},
		{`{ "a" : [ 1 , 2 ] }`, `{"a":[1,2]}`},
		{`{bad`, `{bad`}, // cannot happen after Unmarshal; kept as it came
	}
	for _, tt := range tests {
		if got := string(envelopeBody([]byte(tt.in))); got != tt.want {
			t.Errorf("envelopeBody(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

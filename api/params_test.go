package api

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/julienschmidt/httprouter"

	"executor/sandbox"
)

// TestCreateParamSources sends the same creation through each accepted body encoding.
func TestCreateParamSources(t *testing.T) {
	form := url.Values{"runtimeId": {"ignored", "r1"}, "image": {"img"}, "command": {"make"}, "cpus": {"2.5"}}
	mpBody, mpType := multipartBody(t, [][2]string{{"runtimeId", "r1"}, {"image", "img"}, {"command", "file:make"}, {"cpus", "2.5"}})
	tests := []struct {
		name string
		rq   request
	}{
		{"json", request{body: strings.NewReader(`{"runtimeId":"r1","image":"img","command":"make","cpus":2.5,"workdir":"/x"}`), ctype: "application/json"}},
		{"json with charset", request{body: strings.NewReader(`{"runtimeId":"r1","image":"img","command":"make","cpus":"2.5"}`), ctype: "application/json; charset=utf-8"}},
		{"urlencoded", request{body: strings.NewReader(form.Encode()), ctype: "application/x-www-form-urlencoded"}},
		{"multipart", request{body: mpBody, ctype: mpType}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &fakeBackend{}
			s := newTestServer(t, b)
			tt.rq.method, tt.rq.path = http.MethodPost, "/v1/runtimes?image=fromquery"
			w := do(t, s, tt.rq)
			if w.Code != 201 {
				t.Fatalf("status %d: %s", w.Code, w.Body)
			}
			want := sandbox.Spec{
				RuntimeID: "r1", Image: "img", Command: "make", Variables: map[string]string{},
				Timeout: 600 * time.Second, CPUs: 2.5, MemoryMB: 512, Version: "v5", RestartPolicy: "no",
			}
			if got := *b.spec; !specEqual(got, want) {
				t.Errorf("spec %+v\nwant %+v", got, want)
			}
		})
	}
}

func specEqual(a, b sandbox.Spec) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

func TestBodyWithoutParams(t *testing.T) {
	for _, rq := range []request{
		{body: strings.NewReader(`{"runtimeId":`), ctype: "application/json"},                   // invalid JSON
		{body: strings.NewReader(``), ctype: "application/json"},                                // empty
		{body: strings.NewReader(`["runtimeId"]`), ctype: "application/json"},                   // not an object
		{body: strings.NewReader(`{"runtimeId":"r"} {"image":"i"}`), ctype: "application/json"}, // trailing data
		{body: strings.NewReader(`runtimeId=r&image=i`), ctype: "text/plain"},                   // unknown type
		{body: strings.NewReader(`runtimeId=r&image=i`)},                                        // no type
	} {
		s := newTestServer(t, &fakeBackend{})
		rq.method, rq.path = http.MethodPost, "/v1/runtimes?runtimeId=q&image=q" // query ignored for POST
		w := do(t, s, rq)
		if w.Code != 400 || !strings.Contains(w.Body.String(), `Param \"runtimeId\" is not optional.`) {
			t.Errorf("%s: status %d body %s", rq.ctype, w.Code, w.Body)
		}
	}
}

func TestMalformedMultipart(t *testing.T) {
	s := newTestServer(t, &fakeBackend{})
	for _, ct := range []string{"multipart/form-data", "multipart/form-data; boundary=xyz"} {
		w := do(t, s, request{method: http.MethodPost, path: "/v1/runtimes", ctype: ct, body: strings.NewReader("--xyz\r\nbroken")})
		if w.Code != 400 {
			t.Errorf("%s: status %d body %s", ct, w.Code, w.Body)
		}
	}
}

func TestCreateValidation(t *testing.T) {
	long := strings.Repeat("a", 65)
	tests := []struct {
		name, body, wantType, wantMsg string
	}{
		{"missing image", `{"runtimeId":"r"}`, "general_unknown", `Param "image" is not optional.`},
		{"runtimeId too long", `{"runtimeId":"` + long + `","image":"i"}`, "general_unknown",
			"Invalid `runtimeId` param: Parameter must contain at most 64 chars. Valid chars are a-z, A-Z, 0-9, period, hyphen, and underscore. Can't start with a special char"},
		{"empty image", `{"runtimeId":"r","image":""}`, "general_unknown",
			"Invalid `image` param: Value must be a valid string and at least 1 chars and no longer than 128 chars"},
		{"null required", `{"runtimeId":null,"image":"i"}`, "general_unknown",
			"Invalid `runtimeId` param: Parameter must contain at most 64 chars. Valid chars are a-z, A-Z, 0-9, period, hyphen, and underscore. Can't start with a special char"},
		{"strict timeout string", `{"runtimeId":"r","image":"i","timeout":"600"}`, "general_unknown",
			"Invalid `timeout` param: Value must be a valid signed 32-bit integer between -2,147,483,648 and 2,147,483,647"},
		{"strict memory float", `{"runtimeId":"r","image":"i","memory":512.0}`, "general_unknown",
			"Invalid `memory` param: Value must be a valid signed 32-bit integer between -2,147,483,648 and 2,147,483,647"},
		{"strict remove string", `{"runtimeId":"r","image":"i","remove":"true"}`, "general_unknown",
			"Invalid `remove` param: Value must be a valid boolean"},
		{"variables string", `{"runtimeId":"r","image":"i","variables":"{}"}`, "general_unknown",
			"Invalid `variables` param: Value must be a valid object."},
		{"variables list", `{"runtimeId":"r","image":"i","variables":["a"]}`, "general_unknown",
			"Invalid `variables` param: Value must be a valid object."},
		{"bad version", `{"runtimeId":"r","image":"i","version":"v6"}`, "general_unknown",
			"Invalid `version` param: Value must be one of (v2, v3, v4, v5)"},
		{"bad restart policy", `{"runtimeId":"r","image":"i","restartPolicy":"Always"}`, "general_unknown",
			"Invalid `restartPolicy` param: Value must be one of (no, always, on-failure, unless-stopped)"},
		{"cpus garbage", `{"runtimeId":"r","image":"i","cpus":"two"}`, "general_unknown",
			"Invalid `cpus` param: Value must be a valid float"},
		{"cacheKey regex", `{"runtimeId":"r","image":"i","cacheKey":"-bad"}`, "execution_bad_request",
			"Cache key must start with a letter or number and may only contain letters, numbers, dots, underscores, and hyphens."},
		{"cacheKey dotdot", `{"runtimeId":"r","image":"i","cacheKey":".."}`, "execution_bad_request",
			"Invalid `cacheKey`: path segments \"..\" are not allowed."},
		{"source dotdot", `{"runtimeId":"r","image":"i","source":"/storage/../etc/passwd"}`, "execution_bad_request",
			"Invalid `source`: path segments \"..\" are not allowed."},
		{"destination dotdot", `{"runtimeId":"r","image":"i","destination":"builds/.."}`, "execution_bad_request",
			"Invalid `destination`: path segments \"..\" are not allowed."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &fakeBackend{}
			s := newTestServer(t, b)
			rq := jsonBody(tt.body)
			rq.path = "/v1/runtimes"
			w := do(t, s, rq)
			var got errorBody
			if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			if w.Code != 400 || got.Type != tt.wantType || got.Message != tt.wantMsg {
				t.Errorf("status %d type %q message %q", w.Code, got.Type, got.Message)
			}
			if b.creates != 0 {
				t.Error("backend called")
			}
		})
	}
}

func TestCreateSpecMapping(t *testing.T) {
	b := &fakeBackend{}
	s := newTestServer(t, b, func(c *Config) { c.RuntimeVersions = []string{"v2", "v4"} })
	rq := jsonBody(`{"runtimeId":"r","image":"openruntimes/node:v4-18.0","entrypoint":"index.js","source":"/s/code.tar.gz",
		"destination":"/storage/builds","outputDirectory":"0","variables":{"A":"x","N":5,"F":2.50,"T":true,"B":false,"Z":null,"O":{"k":"v/w"}},
		"runtimeEntrypoint":"sh run","command":"make","cacheKey":"key.1_a-b","timeout":30,"remove":true,"cpus":"0.5","memory":1024,
		"version":"V2","restartPolicy":"unless-stopped"}`)
	rq.path = "/v1/runtimes"
	if w := do(t, s, rq); w.Code != 201 {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	want := sandbox.Spec{
		RuntimeID: "r", Image: "openruntimes/node:v4-18.0", Entrypoint: "index.js", Source: "/s/code.tar.gz",
		Destination: "/storage/builds", OutputDirectory: "",
		Variables:         map[string]string{"A": "x", "N": "5", "F": "2.5", "T": "1", "B": "", "Z": "", "O": `{"k":"v\/w"}`},
		RuntimeEntrypoint: "sh run", Command: "make", CacheKey: "key.1_a-b", Timeout: 30 * time.Second, Remove: true,
		CPUs: 0.5, MemoryMB: 1024, Version: "v2", RestartPolicy: "unless-stopped",
	}
	if !specEqual(*b.spec, want) {
		t.Errorf("spec %+v\nwant %+v", *b.spec, want)
	}

	// Without `version` the newest accepted one is used.
	rq = jsonBody(`{"runtimeId":"r","image":"i"}`)
	rq.path = "/v1/runtimes"
	do(t, s, rq)
	if b.spec.Version != "v4" {
		t.Errorf("default version %q, want v4", b.spec.Version)
	}
}

func TestHasDotDotSegment(t *testing.T) {
	for p, want := range map[string]bool{
		"..": true, "../a": true, "a/..": true, "/a/../b": true, `a\..\b`: true,
		"a..b": false, "...": false, "/storage/builds/x.gz": false, "": false, "..a/b..": false,
	} {
		if got := hasDotDotSegment(p); got != want {
			t.Errorf("%q: %v", p, got)
		}
	}
}

// paramsSample is a request struct for the declaration tests.
type paramsSample struct {
	Name  string
	Count int64
}

func sampleParams(r *paramsSample) []param {
	return []param{
		{name: "name", check: textOf(8), dst: &r.Name},
		{name: "count", optional: true, def: int64(3), check: integer{loose: true}, dst: &r.Count},
	}
}

// TestEndpointDeclarations: New refuses to start with a declaration that does not match its struct, so every
// endpoint's must.
func TestEndpointDeclarations(t *testing.T) {
	s := newTestServer(t, &fakeBackend{})
	if _, err := s.newEndpoints(); err != nil {
		t.Fatal(err)
	}
	if _, err := newEndpoint(sampleParams); err != nil {
		t.Fatalf("sample: %v", err)
	}
}

// TestCheckParamsFindsDrift: a declared parameter that is not bound to a field of the request struct, a field no
// parameter fills, or a value that does not fit its field is an error before any request is served.
func TestCheckParamsFindsDrift(t *testing.T) {
	var other string
	tests := []struct {
		name    string
		declare func(r *paramsSample) []param
		want    string
	}{
		{"parameter bound to nothing", func(r *paramsSample) []param {
			return []param{{name: "name", check: textOf(8)}, {name: "count", optional: true, def: int64(3), check: integer{}, dst: &r.Count}}
		}, `parameter "name" is not bound to one of its fields`},
		{"parameter bound outside the struct", func(r *paramsSample) []param {
			return []param{{name: "name", check: textOf(8), dst: &other}, {name: "count", optional: true, def: int64(3), check: integer{}, dst: &r.Count}}
		}, `parameter "name" is not bound to one of its fields`},
		{"field bound to no parameter", func(r *paramsSample) []param {
			return []param{{name: "name", check: textOf(8), dst: &r.Name}}
		}, "api.paramsSample.Count is bound to no parameter"},
		{"field bound twice", func(r *paramsSample) []param {
			return []param{{name: "name", check: textOf(8), dst: &r.Name}, {name: "nmae", check: textOf(8), dst: &r.Name},
				{name: "count", optional: true, def: int64(3), check: integer{}, dst: &r.Count}}
		}, `api.paramsSample.Name is bound to both "name" and "nmae"`},
		{"parameter declared twice", func(r *paramsSample) []param {
			return []param{{name: "name", check: textOf(8), dst: &r.Name}, {name: "name", optional: true, def: int64(3), check: integer{}, dst: &r.Count}}
		}, `parameter "name" is declared twice`},
		{"validator does not fit the field", func(r *paramsSample) []param {
			return []param{{name: "name", check: textOf(8), dst: &r.Name}, {name: "count", optional: true, def: int64(3), check: textOf(8), dst: &r.Count}}
		}, `api.paramsSample.Count is a int64, parameter "count" gives a string`},
		{"alternative validators do not fit the field", func(r *paramsSample) []param {
			return []param{{name: "name", check: textOf(8), dst: &r.Name}, {name: "count", optional: true, def: int64(3), check: anyOf{textOf(8), textOf(4)}, dst: &r.Count}}
		}, `api.paramsSample.Count is a int64, parameter "count" gives a string`},
		{"default does not fit the field", func(r *paramsSample) []param {
			return []param{{name: "name", check: textOf(8), dst: &r.Name}, {name: "count", optional: true, def: 3, check: integer{}, dst: &r.Count}}
		}, `the default of parameter "count" is 3`},
		{"optional without a default", func(r *paramsSample) []param {
			return []param{{name: "name", check: textOf(8), dst: &r.Name}, {name: "count", optional: true, check: integer{}, dst: &r.Count}}
		}, `the default of parameter "count" is <nil>`},
		{"required with a default", func(r *paramsSample) []param {
			return []param{{name: "name", def: "x", check: textOf(8), dst: &r.Name}, {name: "count", optional: true, def: int64(3), check: integer{}, dst: &r.Count}}
		}, `required parameter "name" has a default`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := newEndpoint(tt.declare)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("newEndpoint = %v, want an error with %q", err, tt.want)
			}
		})
	}
	if err := checkParams(paramsSample{}, nil); err == nil {
		t.Error("a struct value, not a pointer, was accepted")
	}
}

// TestBindRequestFillsTheStruct: values, defaults and conversions land in the fields they are declared for.
func TestBindRequestFillsTheStruct(t *testing.T) {
	e, err := newEndpoint(sampleParams)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		body string
		want paramsSample
	}{
		{`{"name":"a"}`, paramsSample{Name: "a", Count: 3}},
		{`{"name":"a","count":null}`, paramsSample{Name: "a", Count: 3}},
		{`{"name":"b","count":" 7"}`, paramsSample{Name: "b", Count: 7}},
	}
	for _, tt := range tests {
		r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(tt.body))
		r.Header.Set("Content-Type", "application/json")
		got, err := e.bind(r, nil)
		if err != nil || *got != tt.want {
			t.Errorf("%s: %+v, %v; want %+v", tt.body, got, err, tt.want)
		}
	}
}

// TestBindDefaultsAreNotShared: the endpoint's declaration is made once, but an object default is each request's
// own: what one request's handling puts in it is not in the next request's.
func TestBindDefaultsAreNotShared(t *testing.T) {
	s := newTestServer(t, &fakeBackend{})
	bind := func() *executionRequest {
		r := httptest.NewRequest(http.MethodPost, "/v1/runtimes/a/executions", strings.NewReader(`{}`))
		r.Header.Set("Content-Type", "application/json")
		req, err := s.endpoints.execution.bind(r, httprouter.Params{{Key: "runtimeId", Value: "a"}})
		if err != nil {
			t.Fatal(err)
		}
		return req
	}
	first := bind()
	for _, v := range []any{first.Headers, first.Variables} {
		m, ok := v.(map[string]any)
		if !ok || len(m) != 0 {
			t.Fatalf("default %#v, want an empty object", v)
		}
		m["x"] = "1"
	}
	second := bind()
	if h, v := second.Headers.(map[string]any), second.Variables.(map[string]any); len(h) != 0 || len(v) != 0 {
		t.Fatalf("a later request's defaults hold an earlier one's values: headers %v, variables %v", h, v)
	}
}

// BenchmarkBindExecution is the execution route's parameter binding, what every execution pays before it reaches
// its runtime.
func BenchmarkBindExecution(b *testing.B) {
	s := newTestServer(b, &fakeBackend{})
	body := []byte(`{"path":"/status?code=200","method":"POST","headers":{"x-a":"1"},"timeout":15}`)
	ps := httprouter.Params{{Key: "runtimeId", Value: "warm"}}
	b.ReportAllocs()
	for b.Loop() {
		r := httptest.NewRequest(http.MethodPost, "/v1/runtimes/warm/executions", bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		if _, err := s.endpoints.execution.bind(r, ps); err != nil {
			b.Fatal(err)
		}
	}
}

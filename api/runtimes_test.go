package api

import (
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"executor/sandbox"
	"executor/sandbox/protocol"
)

func TestCreateResult(t *testing.T) {
	start := time.Date(2026, 7, 23, 10, 0, 0, 123456000, time.UTC)
	output := []sandbox.LogEntry{
		{Timestamp: time.Date(2026, 7, 23, 10, 0, 1, 123999999, time.FixedZone("x", 3600)), Content: "Step: 1\n"},
		{Timestamp: time.Date(2026, 7, 23, 10, 0, 2, 5000000, time.UTC), Content: "Build finished 👋 <ok> & done\n"},
	}
	tests := []struct {
		name    string
		version string
		res     sandbox.BuildResult
		want    string
	}{
		{"v5 with artifact", "v5",
			sandbox.BuildResult{HasArtifact: true, Path: "/storage/builds/p1/66a0f3c2b1d4e.gz", Size: 123456, Output: output, StartTime: start, Duration: 12340 * time.Millisecond, Version: "v5"},
			`{"size":123456,"path":"\/storage\/builds\/p1\/66a0f3c2b1d4e.gz","output":[` +
				`{"timestamp":"2026-07-23T09:00:01.123+00:00","content":"Step: 1\n"},` +
				`{"timestamp":"2026-07-23T10:00:02.005+00:00","content":"Build finished 👋 <ok> & done\n"}],` +
				`"startTime":1784800800.123456,"duration":12.34}`},
		{"v5 without artifact, no output", "v5",
			sandbox.BuildResult{StartTime: start, Duration: time.Second, Version: "v5"},
			`{"output":[],"startTime":1784800800.123456,"duration":1}`},
		{"empty artifact still reports size", "v5",
			sandbox.BuildResult{HasArtifact: true, Path: "/b/x.gz", StartTime: start, Duration: time.Second},
			`{"size":0,"path":"\/b\/x.gz","output":[],"startTime":1784800800.123456,"duration":1}`},
		{"v4 legacy string", "v4",
			sandbox.BuildResult{Output: output, StartTime: start, Duration: time.Second, Version: "v4"},
			`{"output":"Step: 1\nBuild finished 👋 <ok> & done\n","startTime":1784800800.123456,"duration":1}`},
		{"v2 empty legacy string", "v2",
			sandbox.BuildResult{StartTime: start, Duration: time.Second, Version: "v2"},
			`{"output":"Runtime created successfully!","startTime":1784800800.123456,"duration":1}`},
		{"backend version empty: request version used", "v3",
			sandbox.BuildResult{StartTime: start, Duration: time.Second},
			`{"output":"Runtime created successfully!","startTime":1784800800.123456,"duration":1}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := tt.res
			s := newTestServer(t, &fakeBackend{createRes: &res})
			rq := jsonBody(`{"runtimeId":"r","image":"i","version":"` + tt.version + `"}`)
			rq.path = "/v1/runtimes"
			w := do(t, s, rq)
			if w.Code != http.StatusCreated {
				t.Fatalf("status %d: %s", w.Code, w.Body)
			}
			if got := w.Body.String(); got != tt.want {
				t.Errorf("body\n%s\nwant\n%s", got, tt.want)
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/json; charset=UTF-8" {
				t.Errorf("content type %q", ct)
			}
		})
	}
}

func TestListAndGetRuntimes(t *testing.T) {
	info := sandbox.Info{
		Version: "v5", Created: time.Unix(1784800800, 123456000), Updated: time.Unix(1784800900, 0),
		Name: "executor-fn", Hostname: "0123456789abcdef0123456789abcdef", Status: "Up 3.27s",
		Key: "secretkey", Listening: true, Image: "openruntimes/node:v5-18.0", Initialised: false,
	}
	const prodObj = `{"version":"v5","created":1784800800.123456,"updated":1784800900,"name":"executor-fn",` +
		`"hostname":"0123456789abcdef0123456789abcdef","status":"Up 3.27s","key":"","listening":1,` +
		`"image":"openruntimes\/node:v5-18.0","initialised":0}`
	const devObj = `{"version":"v5","created":1784800800.123456,"updated":1784800900,"name":"executor-fn",` +
		`"hostname":"0123456789abcdef0123456789abcdef","status":"Up 3.27s","key":"secretkey","listening":1,` +
		`"image":"openruntimes\/node:v5-18.0","initialised":0}`
	withUsage, cpuOnly := info, info
	withUsage.Usage = &sandbox.RuntimeUsage{CPU: 12.25, Memory: 67108864, MemoryLimit: 128e6, PIDs: 4, HasMemory: true, HasPIDs: true}
	cpuOnly.Usage = &sandbox.RuntimeUsage{CPU: math.Inf(1)}
	usageObj := prodObj[:len(prodObj)-1] + `,"usage":{"cpu":12.25,"memory":{"usage":67108864,"limit":128000000},"pids":4}}`
	cpuOnlyObj := prodObj[:len(prodObj)-1] + `,"usage":{"cpu":0}}`
	tests := []struct {
		name  string
		dev   bool
		infos []sandbox.Info
		path  string
		code  int
		want  string
	}{
		{"empty list", false, nil, "/v1/runtimes", 200, `[]`},
		{"list hides key in production", false, []sandbox.Info{info}, "/v1/runtimes", 200, `[` + prodObj + `]`},
		{"list shows key in development", true, []sandbox.Info{info}, "/v1/runtimes", 200, `[` + devObj + `]`},
		{"get", false, []sandbox.Info{info}, "/v1/runtimes/fn", 200, prodObj},
		{"get with usage", false, []sandbox.Info{withUsage}, "/v1/runtimes/fn", 200, usageObj},
		{"list with usage", false, []sandbox.Info{info, withUsage, cpuOnly}, "/v1/runtimes", 200,
			`[` + prodObj + `,` + usageObj + `,` + cpuOnlyObj + `]`},
		{"get unknown", false, nil, "/v1/runtimes/id", 404,
			`{"type":"runtime_not_found","message":"Runtime not found","code":404,"version":"test"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, &fakeBackend{infos: tt.infos}, func(c *Config) { c.Development = tt.dev })
			w := do(t, s, request{method: http.MethodGet, path: tt.path})
			if w.Code != tt.code || w.Body.String() != tt.want {
				t.Errorf("status %d body\n%s\nwant %d\n%s", w.Code, w.Body, tt.code, tt.want)
			}
		})
	}
}

func TestDeleteRuntime(t *testing.T) {
	b := &fakeBackend{}
	s := newTestServer(t, b)
	// A body (even a malformed one) is irrelevant to DELETE: only the path parameter counts.
	w := do(t, s, request{method: http.MethodDelete, path: "/v1/runtimes/fn-1", ctype: "application/json"})
	if w.Code != 200 || w.Body.Len() != 0 {
		t.Fatalf("status %d body %q", w.Code, w.Body)
	}
	if len(b.deleted) != 1 || b.deleted[0] != "fn-1" {
		t.Errorf("deleted %q", b.deleted)
	}

	b.deleteErr = &sandbox.Error{Kind: sandbox.NotFound}
	w = do(t, s, request{method: http.MethodDelete, path: "/v1/runtimes/test"})
	if w.Code != 404 || w.Body.String() != `{"type":"runtime_not_found","message":"Runtime not found","code":404,"version":"test"}` {
		t.Errorf("status %d body %s", w.Code, w.Body)
	}
}

// The list, encoded by hand, is byte for byte what marshalPHP makes of it,
// whatever the strings and times hold.
func TestListEncodingMatchesMarshalPHP(t *testing.T) {
	base := sandbox.Info{
		Version: "v5", Created: time.Unix(1784800800, 123456000), Updated: time.Unix(1784800900, 999999999),
		Name: "executor-fn", Hostname: "0123456789abcdef0123456789abcdef", Status: "Up 3.27s",
		Key: "secretkey", Listening: true, Image: "openruntimes/node:v5-18.0", Initialised: true,
	}
	odd := []string{"", `quote " and \ backslash`, "a/b//c", "<html>&amp;</html>", "tab\tnew\nline\r\x00\x1f\x7f",
		"unicode é ✓ 𝄞", "line sep \u2028 para \u2029", "bad utf-8 \xff\xfe/", "\x08\x0c"}
	times := []time.Time{{}, time.Unix(0, 1000), time.Unix(1, 0), time.Unix(1e12, 0), time.Unix(-5, 0), time.Unix(1784800800, 1000)}
	var infos []sandbox.Info
	for i, s := range odd {
		info := base
		info.Name, info.Image, info.Status, info.Key, info.Hostname, info.Version = s, s, s, s, s, protocol.Version(s)
		info.Listening, info.Initialised = i%2 == 0, i%3 == 0
		info.Created, info.Updated = times[i%len(times)], times[(i+1)%len(times)]
		infos = append(infos, info)
	}
	for _, tm := range times {
		info := base
		info.Created, info.Updated = tm, tm
		infos = append(infos, info)
	}
	for _, u := range []sandbox.RuntimeUsage{
		{}, {CPU: 1e-7}, {CPU: 1e21, HasPIDs: true}, {CPU: math.NaN(), HasMemory: true},
		{CPU: 33.333333333333336, Memory: math.MaxUint64, MemoryLimit: math.MaxUint64, PIDs: math.MaxUint64, HasMemory: true, HasPIDs: true},
	} {
		info := base
		info.Usage = &u
		infos = append(infos, info)
	}
	for _, dev := range []bool{false, true} {
		for _, n := range []int{0, 1, len(infos)} {
			s := newTestServer(t, &fakeBackend{infos: infos[:n]}, func(c *Config) { c.Development = dev })
			objs := make([]runtimeJSON, 0, n)
			for _, info := range infos[:n] {
				objs = append(objs, s.runtimeJSON(info))
			}
			want, err := marshalPHP(objs)
			if err != nil {
				t.Fatal(err)
			}
			w := do(t, s, request{method: http.MethodGet, path: "/v1/runtimes"})
			if w.Code != 200 || w.Body.String() != string(want) {
				t.Errorf("dev %v, %d runtimes: %d\n%s\nwant\n%s", dev, n, w.Code, w.Body, want)
			}
			if ct := w.Header().Get("Content-Type"); ct != contentTypeJSON {
				t.Errorf("Content-Type %q", ct)
			}
		}
	}
}

// BenchmarkListRuntimes is GET /v1/runtimes with a thousand runtimes, the
// issue 16 scale (the target is under 20 ms p50 through the daemon).
func BenchmarkListRuntimes(b *testing.B) {
	infos := make([]sandbox.Info, 1000)
	for i := range infos {
		infos[i] = sandbox.Info{Version: "v5", Created: time.Unix(1784800800, 123456000), Updated: time.Unix(1784800900, int64(i)*1000),
			Name: "executor-idle-" + strconv.Itoa(i), Hostname: "0123456789abcdef0123456789abcdef", Status: "Up 3.27s",
			Key: "0123456789abcdef0123456789abcdef", Listening: true, Image: "openruntimes/test:v5-1", Initialised: true}
	}
	benchGet(b, &fakeBackend{infos: infos}, "/v1/runtimes")
}

// benchGet times a keyed GET of path on a server of backend, without
// logs.
func benchGet(b *testing.B, backend Backend, path string) {
	s, err := New(Config{Backend: backend, Secret: testSecret, Version: "test",
		RuntimeVersions: []string{"v5"}, Hostname: "executor", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		r := httptest.NewRequest(http.MethodGet, path, nil)
		r.Header.Set("Authorization", "Bearer "+testSecret)
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		if w.Code != 200 {
			b.Fatalf("%d %s", w.Code, w.Body)
		}
	}
}

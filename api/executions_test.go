package api

import (
	"bytes"
	"encoding/json"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"executor/sandbox"
	"executor/sandbox/protocol"
)

func TestExecutionRequest(t *testing.T) {
	hostVar := map[string]string{"INERNAL_EXECUTOR_HOSTNAME": "executor"}
	tests := []struct {
		name string
		body string
		want sandbox.ExecRequest
	}{
		{"defaults", `{}`, sandbox.ExecRequest{
			RuntimeID: "fn", Method: "GET", Path: "/", Headers: map[string]string{}, Body: []byte{},
			Timeout: 15 * time.Second, Logging: true, Variables: hostVar}},
		{"path runtimeId wins, path gets slash, body 0 is empty", `{"runtimeId":"other","path":"v1/users?x=1","body":"0","method":"HEAD"}`,
			sandbox.ExecRequest{RuntimeID: "fn", Method: "HEAD", Path: "/v1/users?x=1", Headers: map[string]string{}, Body: []byte{},
				Timeout: 15 * time.Second, Logging: true, Variables: hostVar}},
		{"headers and variables as JSON strings", `{"headers":"{\"content-type\":\"application/json\",\"x-n\":1.50}","variables":"{\"A\":true,\"INERNAL_EXECUTOR_HOSTNAME\":\"spoof\"}","timeout":"45","logging":"false","body":"{\"id\":\"2\"}","method":"POST"}`,
			sandbox.ExecRequest{RuntimeID: "fn", Method: "POST", Path: "/",
				Headers: map[string]string{"content-type": "application/json", "x-n": "1.5"}, Body: []byte(`{"id":"2"}`),
				Timeout: 45 * time.Second, Logging: false, Variables: map[string]string{"A": "1", "INERNAL_EXECUTOR_HOSTNAME": "executor"}}},
		{"headers as objects, undecodable string variables", `{"headers":{"host":"cloud.appwrite.io","n":2},"variables":"not json","logging":0}`,
			sandbox.ExecRequest{RuntimeID: "fn", Method: "GET", Path: "/",
				Headers: map[string]string{"host": "cloud.appwrite.io", "n": "2"}, Body: []byte{},
				Timeout: 15 * time.Second, Logging: false, Variables: hostVar}},
		{"empty array and null strings are empty objects", `{"headers":"[]","variables":"null"}`,
			sandbox.ExecRequest{RuntimeID: "fn", Method: "GET", Path: "/", Headers: map[string]string{}, Body: []byte{},
				Timeout: 15 * time.Second, Logging: true, Variables: hostVar}},
		{"image without source: no cold start", `{"image":"openruntimes/node:v5-18.0"}`,
			sandbox.ExecRequest{RuntimeID: "fn", Method: "GET", Path: "/", Headers: map[string]string{}, Body: []byte{},
				Timeout: 15 * time.Second, Logging: true, Variables: hostVar}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &fakeBackend{}
			s := newTestServer(t, b)
			rq := jsonBody(tt.body)
			rq.path = "/v1/runtimes/fn/executions"
			if w := do(t, s, rq); w.Code != 200 {
				t.Fatalf("status %d: %s", w.Code, w.Body)
			}
			if !reflect.DeepEqual(*b.exec, tt.want) {
				t.Errorf("request %+v\nwant    %+v", *b.exec, tt.want)
			}
		})
	}
}

func TestExecutionColdStart(t *testing.T) {
	b := &fakeBackend{}
	s := newTestServer(t, b, func(c *Config) { c.RuntimeVersions = []string{"v2", "v5"} })
	rq := jsonBody(`{"image":"openruntimes/php:v5-8.1","source":"/storage/builds/x.gz","entrypoint":"index.php",
		"runtimeEntrypoint":"php src/server.php","cpus":"2.5","memory":"1024","restartPolicy":"always","variables":{"K":"V"}}`)
	rq.path = "/v1/runtimes/fn/execution" // the alias
	if w := do(t, s, rq); w.Code != 200 {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	want := &sandbox.Spec{
		RuntimeID: "fn", Image: "openruntimes/php:v5-8.1", Entrypoint: "index.php", Source: "/storage/builds/x.gz",
		Variables:         map[string]string{"K": "V", "INERNAL_EXECUTOR_HOSTNAME": "executor"},
		RuntimeEntrypoint: "php src/server.php", Timeout: 600 * time.Second, CPUs: 2.5, MemoryMB: 1024,
		Version: "v5", RestartPolicy: "always",
	}
	if !reflect.DeepEqual(b.exec.Cold, want) {
		t.Errorf("cold %+v\nwant %+v", b.exec.Cold, want)
	}
}

func TestExecutionValidation(t *testing.T) {
	tests := []struct {
		name, body, wantType, wantMsg string
	}{
		{"explicit empty body", `{"body":""}`, "general_unknown",
			"Invalid `body` param: Value must be a valid string and at least 1 chars and no longer than 20971520 chars"},
		{"lower-case method", `{"method":"get"}`, "general_unknown",
			"Invalid `method` param: Value must be one of (GET, POST, PUT, PATCH, DELETE, OPTIONS, HEAD)"},
		{"headers number", `{"headers":5}`, "general_unknown", "Invalid `headers` param: Value must be a valid object."},
		{"headers empty string", `{"headers":""}`, "general_unknown", "Invalid `headers` param: Value must be a valid object."},
		{"headers list string", `{"headers":"[1,2]"}`, "execution_bad_request", "Value must be a valid object."},
		{"variables scalar string", `{"variables":"5"}`, "execution_bad_request", "Value must be a valid object."},
		{"timeout float string", `{"timeout":"1.5"}`, "general_unknown",
			"Invalid `timeout` param: Value must be a valid signed 32-bit integer between -2,147,483,648 and 2,147,483,647"},
		{"logging word", `{"logging":"no"}`, "general_unknown", "Invalid `logging` param: Value must be a valid boolean"},
		{"empty source", `{"source":""}`, "general_unknown", "Invalid `source` param: Value must be a valid string and at least 1 chars"},
		{"source dotdot", `{"image":"i","source":"../../etc/shadow"}`, "execution_bad_request",
			"Invalid `source`: path segments \"..\" are not allowed."},
		{"bad version", `{"version":"v4"}`, "general_unknown", "Invalid `version` param: Value must be one of (v2, v5)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &fakeBackend{}
			s := newTestServer(t, b, func(c *Config) { c.RuntimeVersions = []string{"v2", "v5"} })
			rq := jsonBody(tt.body)
			rq.path = "/v1/runtimes/fn/executions"
			w := do(t, s, rq)
			var got errorBody
			if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			if w.Code != 400 || got.Type != tt.wantType || got.Message != tt.wantMsg {
				t.Errorf("status %d type %q message %q", w.Code, got.Type, got.Message)
			}
			if b.executes != 0 {
				t.Error("backend called")
			}
		})
	}
}

// TestBinaryMultipartRequest sends the body the way Appwrite does: as a multipart part, here with bytes that
// are not UTF-8 and a CRLF, which must reach the runtime unchanged.
func TestBinaryMultipartRequest(t *testing.T) {
	payload := "\x00\x0a\xff\r\n--not-a-boundary\r\n"
	body, ctype := multipartBody(t, [][2]string{
		{"runtimeId", "ignored"}, {"body", "file:" + payload}, {"method", "POST"},
		{"headers", `{"content-type":"application/octet-stream"}`}, {"timeout", "45"}, {"logging", "true"},
	})
	b := &fakeBackend{}
	s := newTestServer(t, b)
	w := do(t, s, request{method: http.MethodPost, path: "/v1/runtimes/fn/executions", body: body, ctype: ctype})
	if w.Code != 200 {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	if string(b.exec.Body) != payload || b.exec.RuntimeID != "fn" || b.exec.Timeout != 45*time.Second ||
		b.exec.Headers["content-type"] != "application/octet-stream" {
		t.Errorf("request %+v", *b.exec)
	}
}

func TestAcceptRule(t *testing.T) {
	tests := []struct {
		accept string
		json   bool
	}{
		{"", false},
		{"application/json", true},
		{"application/json; charset=utf-8", true},
		{"application/*", true},
		{"text/plain, application/json", true},
		{"text/plain,application/json", false}, // no space: one item
		{"application/xml", false},
		{"text/plain", false},
		{"*/*", false},
		{"multipart/form-data", false},
	}
	for _, tt := range tests {
		t.Run(tt.accept, func(t *testing.T) {
			s := newTestServer(t, &fakeBackend{})
			rq := jsonBody(`{}`)
			rq.path = "/v1/runtimes/fn/executions"
			rq.headers = map[string]string{"Accept": tt.accept}
			if tt.accept == "" {
				rq.headers = nil
			}
			w := do(t, s, rq)
			ct := w.Header().Get("Content-Type")
			if tt.json && ct != "application/json" {
				t.Errorf("content type %q, want application/json", ct)
			}
			if !tt.json && !strings.HasPrefix(ct, "multipart/form-data; boundary=") {
				t.Errorf("content type %q, want multipart", ct)
			}
		})
	}
}

func TestResponseFormat(t *testing.T) {
	res := &sandbox.ExecResult{
		StatusCode: 200,
		Headers: []protocol.Header{
			{Name: "content-type", Values: []string{"text/html"}},
			{Name: "set-cookie", Values: []string{"astroCookie1=astroValue1; Max-Age=1800; HttpOnly", "astroCookie2=astroValue2; Max-Age=1800; HttpOnly"}},
		},
		Body: []byte("<p>OK</p>"), StartTime: time.Unix(1753300000, 0), Duration: time.Second,
	}
	const collapsed = `{"content-type":"text\/html","set-cookie":"astroCookie2=astroValue2; Max-Age=1800; HttpOnly"}`
	const arrays = `{"content-type":"text\/html","set-cookie":["astroCookie1=astroValue1; Max-Age=1800; HttpOnly","astroCookie2=astroValue2; Max-Age=1800; HttpOnly"]}`
	tests := []struct {
		format string
		want   string
	}{
		{"", collapsed},
		{"0.10.0", collapsed},
		{"0.10.9", collapsed},
		{"0.11.0", arrays},
		{"0.11.1", arrays},
		{"0.12", arrays},
		{"1.0.0", arrays},
		{"0.11.0-rc1", collapsed},
		{"garbage", collapsed},
	}
	for _, tt := range tests {
		for _, accept := range []string{"application/json", "multipart/form-data"} {
			t.Run(tt.format+"/"+accept, func(t *testing.T) {
				s := newTestServer(t, &fakeBackend{execRes: res})
				rq := jsonBody(`{}`)
				rq.path = "/v1/runtimes/fn/executions"
				rq.headers = map[string]string{"Accept": accept}
				if tt.format != "" {
					rq.headers["x-executor-response-format"] = tt.format
				}
				w := do(t, s, rq)
				var headers string
				if accept == "application/json" {
					var doc map[string]json.RawMessage
					if err := json.Unmarshal(w.Body.Bytes(), &doc); err != nil {
						t.Fatal(err)
					}
					headers = string(doc["headers"])
				} else {
					headers = string(parseAppwriteMultipart(t, w.Header().Get("Content-Type"), w.Body.Bytes())["headers"])
				}
				if headers != tt.want {
					t.Errorf("headers %s, want %s", headers, tt.want)
				}
			})
		}
	}
}

func TestExecutionJSONReply(t *testing.T) {
	res := &sandbox.ExecResult{
		StatusCode: 500,
		Headers:    []protocol.Header{{Name: "content-type", Values: []string{"application/json; charset=utf-8"}}},
		Body:       []byte(`{"message":"Hello Open Runtimes 👋","url":"https://x/y"}`),
		Logs:       "Sample Log\n", Errors: "Execution timed out.\n",
		StartTime: time.Unix(1784800900, 500000000), Duration: 1520 * time.Millisecond,
	}
	s := newTestServer(t, &fakeBackend{execRes: res})
	rq := jsonBody(`{}`)
	rq.path = "/v1/runtimes/fn/executions"
	rq.headers = map[string]string{"Accept": "application/json"}
	w := do(t, s, rq)
	const want = `{"statusCode":500,"headers":{"content-type":"application\/json; charset=utf-8"},` +
		`"body":"{\"message\":\"Hello Open Runtimes 👋\",\"url\":\"https:\/\/x\/y\"}","logs":"Sample Log\n",` +
		`"errors":"Execution timed out.\n","duration":1.52,"startTime":1784800900.5}`
	if w.Code != 200 || w.Body.String() != want {
		t.Errorf("status %d body\n%s\nwant\n%s", w.Code, w.Body, want)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("content type %q", ct)
	}

	// No headers at all: a PHP empty array.
	s = newTestServer(t, &fakeBackend{execRes: &sandbox.ExecResult{StatusCode: 200, StartTime: time.Unix(1, 0)}})
	w = do(t, s, rq)
	if !strings.HasPrefix(w.Body.String(), `{"statusCode":200,"headers":[],"body":""`) {
		t.Errorf("body %s", w.Body)
	}
}

func TestExecutionBadJSON(t *testing.T) {
	const msg = `Execution resulted in binary response, but JSON response does not allow binaries. Use "Accept: multipart/form-data" header to support binaries.`
	for name, res := range map[string]*sandbox.ExecResult{
		"binary body":   {StatusCode: 200, Body: []byte{0x00, 0x0a, 0xff}},
		"binary logs":   {StatusCode: 200, Logs: "\xff"},
		"binary errors": {StatusCode: 200, Errors: "\xc3"},
		"binary header": {StatusCode: 200, Headers: []protocol.Header{{Name: "x", Values: []string{"\xff"}}}},
	} {
		t.Run(name, func(t *testing.T) {
			s := newTestServer(t, &fakeBackend{execRes: res})
			rq := jsonBody(`{}`)
			rq.path = "/v1/runtimes/fn/executions"
			rq.headers = map[string]string{"Accept": "application/json"}
			w := do(t, s, rq)
			var got errorBody
			if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			if w.Code != 400 || got.Type != "execution_bad_json" || got.Message != msg || got.Code != 400 {
				t.Errorf("status %d body %s", w.Code, w.Body)
			}
		})
	}
}

// TestMultipartReply checks the exact layout and that both Appwrite's splitter and a standard MIME parser read
// it back, binary body included.
func TestMultipartReply(t *testing.T) {
	res := &sandbox.ExecResult{
		StatusCode: 201,
		Headers: []protocol.Header{
			{Name: "content-type", Values: []string{"application/octet-stream"}},
			{Name: "x-multi", Values: []string{"a", "b"}},
		},
		Body:      []byte{0x00, 0x0a, 0xff, '\r', '\n', '-', '-'},
		Logs:      "log line\n",
		Errors:    "",
		StartTime: time.Unix(1753300000, 123456000),
		Duration:  1500 * time.Microsecond,
	}
	s := newTestServer(t, &fakeBackend{execRes: res})
	rq := jsonBody(`{}`)
	rq.path = "/v1/runtimes/fn/executions"
	rq.headers = map[string]string{"x-executor-response-format": "0.11.0"}
	w := do(t, s, rq)
	if w.Code != 200 {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	ct := w.Header().Get("Content-Type")
	m := regexp.MustCompile(`^multipart/form-data; boundary=(-{29}[0-9a-f]{13})$`).FindStringSubmatch(ct)
	if m == nil {
		t.Fatalf("content type %q", ct)
	}
	b := m[1]
	want := "--" + b +
		"\r\nContent-Disposition: form-data; name=\"statusCode\"\r\n\r\n201\r\n--" + b +
		"\r\nContent-Disposition: form-data; name=\"headers\"\r\nContent-Type: application/json\r\n\r\n" +
		`{"content-type":"application\/octet-stream","x-multi":["a","b"]}` + "\r\n--" + b +
		"\r\nContent-Disposition: form-data; name=\"body\"\r\n\r\n\x00\x0a\xff\r\n--\r\n--" + b +
		"\r\nContent-Disposition: form-data; name=\"logs\"\r\n\r\nlog line\n\r\n--" + b +
		"\r\nContent-Disposition: form-data; name=\"errors\"\r\n\r\n\r\n--" + b +
		"\r\nContent-Disposition: form-data; name=\"duration\"\r\n\r\n0.0015\r\n--" + b +
		"\r\nContent-Disposition: form-data; name=\"startTime\"\r\n\r\n1753300000.1235\r\n--" + b + "--\r\n"
	if got := w.Body.String(); got != want {
		t.Errorf("body\n%q\nwant\n%q", got, want)
	}

	parts := parseAppwriteMultipart(t, ct, w.Body.Bytes())
	if !bytes.Equal(parts["body"], res.Body) || string(parts["statusCode"]) != "201" || string(parts["logs"]) != res.Logs {
		t.Errorf("appwrite parse: %q", parts)
	}

	_, params, err := mime.ParseMediaType(ct)
	if err != nil {
		t.Fatal(err)
	}
	mr := multipart.NewReader(bytes.NewReader(w.Body.Bytes()), params["boundary"])
	std := map[string][]byte{}
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(p)
		std[p.FormName()] = data
	}
	if !bytes.Equal(std["body"], res.Body) || string(std["startTime"]) != "1753300000.1235" || len(std) != 7 {
		t.Errorf("mime parse: %q", std)
	}
}

func TestKeepHeaderArrays(t *testing.T) {
	for format, want := range map[string]bool{
		"": false, "0.10.0": false, "0.11.0": true, " 0.11.0 ": true, "0.11": true, "0.11.0+build": true,
		"0.11.0-rc.1": false, "0.11.1-rc.1": true, "1": true, "0": false, "a.b.c": false, "0.11.0.1": false, "-1": false,
		// A leading sign is no version (strconv would read "+1" as 1): the default.
		"+1": false, "+0.11.0": false,
	} {
		if got := keepHeaderArrays(format); got != want {
			t.Errorf("%q: %v, want %v", format, got, want)
		}
	}
}

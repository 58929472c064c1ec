package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// Request bodies as clients send them (spec §3.2, §3.6): Appwrite's JSON, the urlencoded and multipart forms, and
// the shapes the decoder must survive (truncated, trailing data, wrong types, a multipart body without its end).
var requestSeeds = []struct{ ctype, body string }{
	{"application/json", `{"runtimeId":"6630a1b2c3d4e5f60718","image":"openruntimes/node:v5-18.0","entrypoint":"index.js","source":"/storage/functions/app/code.tar.gz","destination":"/storage/builds/app","variables":{"OPEN_RUNTIMES_SECRET":"s","N":1},"command":"npm install","timeout":900,"remove":true,"cpus":1,"memory":512,"version":"v5","restartPolicy":"always"}`},
	{"application/json", `{"runtimeId":"r1","body":"{\"hello\":\"world\"}","path":"/ping?x=1","method":"POST","headers":{"content-type":"application/json","x-a":["1","2"]},"timeout":15,"image":"openruntimes/php:v5-8.3","source":"/s/c.tar.gz","entrypoint":"index.php","variables":"{\"A\":\"b\"}","cpus":"0.5","memory":"1024","version":"V5","runtimeEntrypoint":"sh helpers/server.sh","logging":"false"}`},
	{"application/json; charset=UTF-8", `{"runtimeId":"r","image":"i","timeout":1e3,"cpus":-0.0,"memory":2147483648,"remove":"1"}`},
	{"application/json", `{"runtimeId":"r","image":"i","memory":2147483648}`},
	{"application/json", `{"runtimeId":"r","image":"i","timeout":-2147483649}`},
	{"application/json", `{"runtimeId":`},
	{"application/json", `{"runtimeId":"r"} {"image":"i"}`},
	{"application/json", `["runtimeId"]`},
	{"application/json", `{"a":{"b":[1,2,{"c":null}]},"a":"dup","\u00e9":"\ud83d\ude00","bad":"\xff"}`},
	{"application/json", ``},
	{"application/x-www-form-urlencoded", `runtimeId=r1&image=openruntimes%2Fnode%3Av5-18.0&timeout=+600&variables=%7B%22A%22%3A1%7D&runtimeId=r2`},
	{"application/x-www-form-urlencoded", `body=a%zz&=x&path=%2F&&method=GET;x=y&logging=0`},
	{"multipart/form-data; boundary=XyZ", "--XyZ\r\nContent-Disposition: form-data; name=\"runtimeId\"\r\n\r\nr1\r\n--XyZ\r\nContent-Disposition: form-data; name=\"body\"; filename=\"blob\"\r\nContent-Type: application/octet-stream\r\n\r\n\x00\xff\r\nbinary\r\n--XyZ--\r\n"},
	{"multipart/form-data; boundary=XyZ", "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\nContent-Transfer-Encoding: base64\r\n\r\naGk=\r\n--XyZ\r\nbroken"},
	{"multipart/form-data", "--xyz\r\nbroken"},
	{"multipart/form-data; boundary=\"a b\"", "--a b\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n--a b-\r\n--a b--"},
	{"text/plain", `runtimeId=r&image=i`},
}

// fuzzServer is a Server over a backend that answers every call, so that whatever the request, a failure can only
// come from the HTTP layer.
func fuzzServer(tb testing.TB) *Server {
	tb.Helper()
	s, err := New(Config{
		Backend:         &fakeBackend{},
		Secret:          testSecret,
		Version:         "test",
		RuntimeVersions: []string{"v2", "v3", "v4", "v5"},
		Hostname:        "executor",
		Logger:          slog.New(slog.DiscardHandler),
	})
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// FuzzRequestParams decodes bodies the way bind does, and checks what the decoder promises: JSON and urlencoded
// bodies never fail (invalid ones carry no parameters), a multipart body fails only as a 400, every value has one of
// the raw types the validators take, a JSON object gives exactly what encoding/json makes of it, and every value an
// endpoint declaration accepts satisfies its rule.
func FuzzRequestParams(f *testing.F) {
	for _, s := range requestSeeds {
		f.Add(s.ctype, []byte(s.body))
	}
	s := fuzzServer(f)
	f.Fuzz(func(t *testing.T, ctype string, body []byte) {
		newRequest := func() *http.Request {
			r := httptest.NewRequest(http.MethodPost, "/v1/runtimes", bytes.NewReader(body))
			r.Header.Set("Content-Type", ctype)
			return r
		}
		mediaType := strings.ToLower(strings.TrimSpace(strings.SplitN(ctype, ";", 2)[0]))
		raw, err := requestParams(newRequest())
		if err != nil {
			var re *requestError
			if !errors.As(err, &re) || re.code != http.StatusBadRequest || mediaType != "multipart/form-data" {
				t.Fatalf("%s body failed with %v (%T), want success or a multipart 400", mediaType, err, err)
			}
			return
		}
		for k, v := range raw {
			if err := checkRawValue(v); err != nil {
				t.Fatalf("parameter %q: %v", k, err)
			}
		}
		switch mediaType {
		case "application/json":
			want := map[string]any{}
			if json.Valid(body) {
				var v any
				dec := json.NewDecoder(bytes.NewReader(body))
				dec.UseNumber()
				if err := dec.Decode(&v); err != nil {
					t.Fatalf("json.Valid body does not decode: %v", err)
				}
				if m, ok := v.(map[string]any); ok {
					want = m
				}
			}
			if !reflect.DeepEqual(raw, want) {
				t.Fatalf("decoded %#v, encoding/json gives %#v", raw, want)
			}
		case "application/x-www-form-urlencoded", "multipart/form-data":
			for k, v := range raw {
				if _, ok := v.(string); !ok {
					t.Fatalf("form parameter %q is a %T, forms carry strings only", k, v)
				}
			}
		default:
			if len(raw) != 0 {
				t.Fatalf("content type %q carried parameters %v", ctype, raw)
			}
		}

		if req, err := s.endpoints.create.bind(newRequest(), nil); err == nil {
			checkCommon(t, req.RuntimeID, req.Timeout, req.CPUs, req.Memory, req.Version, req.RestartPolicy, s.versions)
			if n := utf8.RuneCountInString(req.Image); n < 1 || n > 128 {
				t.Fatalf("image %q accepted", req.Image)
			}
		}
		if req, err := s.endpoints.execution.bind(newRequest(), nil); err == nil {
			checkCommon(t, req.RuntimeID, req.Timeout, req.CPUs, req.Memory, req.Version, req.RestartPolicy, s.versions)
			if !slices.Contains([]string{"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"}, req.Method) {
				t.Fatalf("method %q accepted", req.Method)
			}
			for name, v := range map[string]any{"headers": req.Headers, "variables": req.Variables} {
				switch x := v.(type) {
				case string:
				case map[string]any:
					if phpJSONLen(x) > 65535 {
						t.Fatalf("%s of %d bytes accepted", name, phpJSONLen(x))
					}
				default:
					t.Fatalf("%s is a %T", name, v)
				}
				if _, err := objectParam(v); err != nil {
					var ae *apiError
					if !errors.As(err, &ae) {
						t.Fatalf("%s: %v is not an API error", name, err)
					}
				}
			}
		}
	})
}

// checkCommon checks what the create and execution declarations share.
func checkCommon(t *testing.T, id string, timeout int64, cpus float64, memory int64, version, policy string, versions []string) {
	t.Helper()
	switch {
	case !validRuntimeID(id):
		t.Fatalf("runtimeId %q accepted", id)
	case timeout < math.MinInt32 || timeout > math.MaxInt32:
		t.Fatalf("timeout %d accepted", timeout)
	case math.IsNaN(cpus) || math.IsInf(cpus, 0):
		t.Fatalf("cpus %v accepted", cpus)
	case memory < math.MinInt32 || memory > math.MaxInt32:
		t.Fatalf("memory %d accepted", memory)
	case !slices.Contains(versions, version):
		t.Fatalf("version %q accepted (%v)", version, versions)
	case !slices.Contains(restartPolicies().list, policy):
		t.Fatalf("restartPolicy %q accepted", policy)
	}
}

// checkRawValue reports a value that is none of the raw types the validators are written for (validator's doc).
func checkRawValue(v any) error {
	switch x := v.(type) {
	case string, bool, nil:
		return nil
	case json.Number:
		if !json.Valid([]byte(x)) {
			return errors.New("json.Number " + string(x) + " is not a JSON number")
		}
		return nil
	case map[string]any:
		for _, e := range x {
			if err := checkRawValue(e); err != nil {
				return err
			}
		}
		return nil
	case []any:
		for _, e := range x {
			if err := checkRawValue(e); err != nil {
				return err
			}
		}
		return nil
	}
	return errors.New("unexpected raw type " + reflect.TypeOf(v).String())
}

// FuzzMultipartRequestRoundTrip sends fields as a multipart/form-data body, as Appwrite's client does (file parts
// included), and checks that every value comes back byte for byte, the last of a repeated name winning.
func FuzzMultipartRequestRoundTrip(f *testing.F) {
	f.Add("runtimeId", "r1", "body", []byte("{\"a\":1}"), true)
	f.Add("body", "\r\n--x\r\n", "body", []byte("\x00\xff\r\n\r\n--"), false)
	f.Add("headers", `{"content-type":"text/plain"}`, "path", []byte("/é?a=b"), true)
	f.Add("a\"b", "", "c\\d", []byte{}, false)
	f.Fuzz(func(t *testing.T, name1, value1, name2 string, value2 []byte, file bool) {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		w, err := mw.CreateFormField(name1)
		if err != nil {
			t.Skip()
		}
		_, _ = w.Write([]byte(value1))
		if file {
			w, err = mw.CreateFormFile(name2, "blob")
		} else {
			w, err = mw.CreateFormField(name2)
		}
		if err != nil {
			t.Skip()
		}
		_, _ = w.Write(value2)
		if err := mw.Close(); err != nil {
			t.Fatal(err)
		}
		// What the reader makes of the names multipart.Writer wrote (it escapes `"` and `\`). A name with a control
		// character is outside the round trip: the writer writes it as it is, and a header line holding one is
		// malformed (net/textproto refuses it, and the request is a 400).
		want := map[string]any{}
		for _, p := range []struct {
			name  string
			value []byte
		}{{name1, []byte(value1)}, {name2, value2}} {
			name := formName(p.name)
			if name != p.name || strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
				t.Skip()
			}
			if name != "" {
				want[name] = string(p.value)
			}
		}
		got, err := multipartParams(bytes.NewReader(buf.Bytes()), mw.FormDataContentType())
		if err != nil {
			t.Fatalf("multipartParams: %v\nbody %q", err, buf.Bytes())
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("got %q, want %q\nbody %q", got, want, buf.Bytes())
		}
	})
}

// formName is the name a part's Content-Disposition carries once parsed, as multipart.Part.FormName reads it.
func formName(name string) string {
	cd := `form-data; name="` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(name) + `"`
	_, params, err := mime.ParseMediaType(cd)
	if err != nil {
		return "\x00unparseable"
	}
	return params["name"]
}

// FuzzServeRequest sends hostile bodies to the two endpoints that read the most parameters, through the whole
// handler: the answer is never a 5xx (a panic is one), and an error is the API's JSON error document with the
// status as its code.
func FuzzServeRequest(f *testing.F) {
	for _, s := range requestSeeds {
		f.Add(s.ctype, []byte(s.body), "multipart/form-data")
		f.Add(s.ctype, []byte(s.body), "application/json")
	}
	s := fuzzServer(f)
	f.Fuzz(func(t *testing.T, ctype string, body []byte, accept string) {
		for _, path := range []string{"/v1/runtimes", "/v1/runtimes/r1/executions"} {
			r := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
			r.Header.Set("Content-Type", ctype)
			r.Header.Set("Accept", accept)
			r.Header.Set("Authorization", "Bearer "+testSecret)
			w := httptest.NewRecorder()
			s.ServeHTTP(w, r)
			if w.Code >= 500 {
				t.Fatalf("%s: status %d: %s", path, w.Code, w.Body)
			}
			if w.Code < 400 {
				continue
			}
			var doc errorBody
			dec := json.NewDecoder(w.Body)
			dec.DisallowUnknownFields()
			if err := dec.Decode(&doc); err != nil || doc.Code != w.Code || doc.Type == "" || doc.Message == "" || doc.Version != "test" {
				t.Fatalf("%s: status %d with error document %+v (%v)", path, w.Code, doc, err)
			}
			if _, err := dec.Token(); !errors.Is(err, io.EOF) {
				t.Fatalf("%s: data after the error document", path)
			}
		}
	})
}

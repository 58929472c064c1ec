package api

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"executor/sandbox"
	"executor/sandbox/protocol"
)

const testSecret = "executor-secret-key"

// fakeBackend records what the HTTP layer hands over and answers with canned results. The real manager is covered
// by the end-to-end tests.
type fakeBackend struct {
	mu       sync.Mutex
	spec     *sandbox.Spec
	exec     *sandbox.ExecRequest
	deleted  []string
	creates  int
	executes int

	createRes *sandbox.BuildResult
	createErr error
	infos     []sandbox.Info
	getErr    error
	deleteErr error
	execRes   *sandbox.ExecResult
	execErr   error
	panicMsg  string

	stream     *fakeStream
	streamErr  error
	command    string
	cmdTimeout time.Duration
	cmdOut     string
	cmdErr     error
}

// fakeStream hands out batches of log entries, then io.EOF.
type fakeStream struct {
	version protocol.Version
	batches [][]sandbox.LogEntry
	block   bool  // after the batches, wait for the context instead of ending
	err     error // after the batches, end with this instead of io.EOF
}

func (s *fakeStream) Version() protocol.Version { return s.version }

func (s *fakeStream) Next(ctx context.Context) ([]sandbox.LogEntry, error) {
	if len(s.batches) > 0 {
		b := s.batches[0]
		s.batches = s.batches[1:]
		return b, nil
	}
	if s.block {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if s.err != nil {
		return nil, s.err
	}
	return nil, io.EOF
}

func (f *fakeBackend) FollowLogs(_ context.Context, id string, _ time.Duration) (sandbox.LogStream, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.streamErr != nil {
		return nil, f.streamErr
	}
	return f.stream, nil
}

func (f *fakeBackend) Command(_ context.Context, id, command string, timeout time.Duration) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.command, f.cmdTimeout = command, timeout
	return f.cmdOut, f.cmdErr
}

func (f *fakeBackend) Create(_ context.Context, spec sandbox.Spec) (*sandbox.BuildResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.panicMsg != "" {
		panic(f.panicMsg)
	}
	f.creates++
	f.spec = &spec
	if f.createErr != nil {
		return nil, f.createErr
	}
	if f.createRes != nil {
		return f.createRes, nil
	}
	return &sandbox.BuildResult{Output: []sandbox.LogEntry{}, StartTime: time.Unix(1784800800, 123456000), Duration: 1500 * time.Millisecond, Version: spec.Version}, nil
}

func (f *fakeBackend) List() []sandbox.Info {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.infos
}

func (f *fakeBackend) Get(id string) (sandbox.Info, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.getErr != nil {
		return sandbox.Info{}, f.getErr
	}
	for _, info := range f.infos {
		if strings.HasSuffix(info.Name, "-"+id) {
			return info, nil
		}
	}
	return sandbox.Info{}, &sandbox.Error{Kind: sandbox.NotFound}
}

func (f *fakeBackend) Delete(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deleted = append(f.deleted, id)
	return f.deleteErr
}

func (f *fakeBackend) Execute(_ context.Context, req sandbox.ExecRequest) (*sandbox.ExecResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.executes++
	f.exec = &req
	if f.execErr != nil {
		return nil, f.execErr
	}
	if f.execRes != nil {
		return f.execRes, nil
	}
	return &sandbox.ExecResult{StatusCode: 200, Body: []byte("OK"), StartTime: time.Unix(1753300000, 123456000), Duration: 250 * time.Millisecond}, nil
}

// statsBackend adds the optional Stats interface.
type statsBackend struct {
	*fakeBackend
	host float64
	per  map[string]float64
}

func (s statsBackend) Usage() (float64, map[string]float64) { return s.host, s.per }

func newTestServer(t testing.TB, b Backend, mutate ...func(*Config)) *Server {
	t.Helper()
	cfg := Config{
		Backend:         b,
		Secret:          testSecret,
		Version:         "test",
		RuntimeVersions: []string{"v2", "v3", "v4", "v5"},
		Hostname:        "executor",
		Logger:          slog.New(slog.DiscardHandler),
	}
	for _, m := range mutate {
		m(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

func development(c *Config) { c.Development = true }

// request describes one call to the server.
type request struct {
	method  string
	path    string
	body    io.Reader
	ctype   string
	auth    *string // nil: the valid key
	headers map[string]string
}

func str(s string) *string { return &s }

func do(t *testing.T, s *Server, rq request) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(rq.method, rq.path, rq.body)
	if rq.ctype != "" {
		r.Header.Set("Content-Type", rq.ctype)
	}
	if rq.auth == nil {
		r.Header.Set("Authorization", "Bearer "+testSecret)
	} else if *rq.auth != "" {
		r.Header.Set("Authorization", *rq.auth)
	}
	for k, v := range rq.headers {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	return w
}

func jsonBody(s string) request {
	return request{method: http.MethodPost, body: strings.NewReader(s), ctype: "application/json"}
}

// multipartBody builds a multipart/form-data request body; values starting with "file:" are sent as file parts.
func multipartBody(t *testing.T, fields [][2]string) (io.Reader, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, f := range fields {
		var w io.Writer
		var err error
		if v, ok := strings.CutPrefix(f[1], "file:"); ok {
			w, err = mw.CreateFormFile(f[0], "blob")
			f[1] = v
		} else {
			w, err = mw.CreateFormField(f[0])
		}
		if err != nil {
			t.Fatal(err)
		}
		_, _ = w.Write([]byte(f[1]))
	}
	if err := mw.Close(); err != nil {
		t.Fatal(err)
	}
	return &buf, mw.FormDataContentType()
}

// parseAppwriteMultipart parses a multipart reply the way Appwrite's executor client does: split on
// `--<boundary>`, strip one leading and trailing CRLF, split headers from value on the first blank line, and take
// the name from Content-Disposition.
func parseAppwriteMultipart(t *testing.T, contentType string, body []byte) map[string][]byte {
	t.Helper()
	boundary, ok := strings.CutPrefix(contentType, "multipart/form-data; boundary=")
	if !ok {
		t.Fatalf("content type %q is not multipart", contentType)
	}
	nameRE := regexp.MustCompile(`name="([^"]+)"`)
	out := map[string][]byte{}
	for _, chunk := range bytes.Split(body, []byte("--"+boundary)) {
		chunk = bytes.TrimPrefix(chunk, []byte("\r\n"))
		chunk = bytes.TrimSuffix(chunk, []byte("\r\n"))
		if len(chunk) == 0 || string(chunk) == "--" {
			continue
		}
		head, value, ok := bytes.Cut(chunk, []byte("\r\n\r\n"))
		if !ok {
			t.Fatalf("part without blank line: %q", chunk)
		}
		m := nameRE.FindSubmatch(head)
		if m == nil {
			t.Fatalf("part without name: %q", head)
		}
		out[string(m[1])] = value
	}
	return out
}

package api

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"executor/images"
)

// fakePuller reports progress, then answers with img or err. With block it
// waits for its context after the reports instead.
type fakePuller struct {
	reports []images.Progress
	img     *images.Image
	err     error
	block   bool

	mu       sync.Mutex
	refs     []string
	canceled chan struct{}
}

func (f *fakePuller) PullWithProgress(ctx context.Context, ref string, progress func(images.Progress)) (*images.Image, error) {
	f.mu.Lock()
	f.refs = append(f.refs, ref)
	f.mu.Unlock()
	for _, p := range f.reports {
		if progress != nil {
			progress(p)
		}
	}
	if f.block {
		<-ctx.Done()
		close(f.canceled)
		return nil, &images.PullError{Ref: ref, Err: ctx.Err()}
	}
	return f.img, f.err
}

func withPuller(p ImagePuller) func(*Config) { return func(c *Config) { c.Images = p } }

func pullFailure(kind error) error {
	if kind == nil {
		return &images.PullError{Ref: "r", Err: fmt.Errorf("disk full")}
	}
	return &images.PullError{Ref: "r", Err: fmt.Errorf("%w: what the source said", kind)}
}

var (
	layerA    = digest.FromString("layer a")
	layerB    = digest.FromString("layer b")
	pulled    = &images.Image{Digest: digest.FromString("manifest").String(), Layers: []string{"/a", "/b"}}
	twoLayers = []images.Progress{
		{Index: 0, Layers: 2, Digest: layerA, Size: 10},
		{Index: 1, Layers: 2, Digest: layerB, Size: 20},
		{Index: 0, Layers: 2, Digest: layerA, Size: 10, Fetched: 10, Done: true},
		{Index: 1, Layers: 2, Digest: layerB, Size: 20, Fetched: 20, Done: true},
	}
)

func ndjson(t *testing.T, body string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		var v map[string]any
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		out = append(out, v)
	}
	return out
}

// POST /v1/images without following: one document when it is done; each
// failure has its type and a status by the pull error's kind.
func TestPullImage(t *testing.T) {
	tests := []struct {
		name     string
		puller   ImagePuller // nil: none configured
		body     string
		auth     *string
		accept   string
		wantCode int
		wantType string
		want     string // the whole body, when set
	}{
		{name: "pulled", puller: &fakePuller{img: pulled, reports: twoLayers}, body: `{"image":"openruntimes/node:v5-18.0"}`,
			wantCode: 200, want: `{"status":"pulled","image":"openruntimes\/node:v5-18.0","digest":"` + pulled.Digest + `","layers":2}`},
		{name: "no puller: unknown route", body: `{"image":"a"}`, wantCode: 404, wantType: "general_unknown"},
		{name: "needs the key", puller: &fakePuller{img: pulled}, body: `{"image":"a"}`, auth: str(""), wantCode: 401, wantType: "general_unauthorized"},
		{name: "image missing", puller: &fakePuller{img: pulled}, body: `{}`, wantCode: 400, wantType: "general_unknown"},
		{name: "image too long", puller: &fakePuller{img: pulled}, body: `{"image":"` + strings.Repeat("a", 129) + `"}`, wantCode: 400, wantType: "general_unknown"},
		{name: "not found", puller: &fakePuller{err: pullFailure(images.ErrImageNotFound)}, body: `{"image":"a"}`, wantCode: 404, wantType: typeImagePullFailed},
		{name: "unreachable", puller: &fakePuller{err: pullFailure(images.ErrRegistryUnreachable)}, body: `{"image":"a"}`, wantCode: 502, wantType: typeImagePullFailed},
		{name: "refused", puller: &fakePuller{err: pullFailure(images.ErrBlocked)}, body: `{"image":"a"}`, wantCode: 400, wantType: typeImagePullFailed},
		{name: "bad image", puller: &fakePuller{err: pullFailure(images.ErrBadImage)}, body: `{"image":"a"}`, wantCode: 400, wantType: typeImagePullFailed},
		{name: "host fault", puller: &fakePuller{err: pullFailure(nil)}, body: `{"image":"a"}`, wantCode: 500, wantType: typeImagePullFailed},
		{name: "failure before any progress, followed: an error document", puller: &fakePuller{err: pullFailure(images.ErrImageNotFound)},
			body: `{"image":"a"}`, accept: contentTypeNDJSON, wantCode: 404, wantType: typeImagePullFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mutate []func(*Config)
			if tt.puller != nil {
				mutate = append(mutate, withPuller(tt.puller))
			}
			s := newTestServer(t, &fakeBackend{}, mutate...)
			rq := jsonBody(tt.body)
			rq.path, rq.auth = "/v1/images", tt.auth
			if tt.accept != "" {
				rq.headers = map[string]string{"Accept": tt.accept}
			}
			w := do(t, s, rq)
			if w.Code != tt.wantCode {
				t.Fatalf("status %d, want %d: %s", w.Code, tt.wantCode, w.Body)
			}
			if tt.want != "" && w.Body.String() != tt.want {
				t.Errorf("body %s, want %s", w.Body, tt.want)
			}
			if tt.wantType != "" {
				var e errorBody
				if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Type != tt.wantType || e.Code != tt.wantCode {
					t.Errorf("error document %s (%v), want type %s code %d", w.Body, err, tt.wantType, tt.wantCode)
				}
			}
		})
	}
}

// A followed pull: NDJSON lines, each layer's reports in order, then the
// result, or the error as the last line once the stream has started.
func TestPullImageStream(t *testing.T) {
	tests := []struct {
		name   string
		puller *fakePuller
		last   map[string]any
	}{
		{"pulled", &fakePuller{reports: twoLayers, img: pulled},
			map[string]any{"status": "pulled", "image": "img:1", "digest": pulled.Digest, "layers": 2.0}},
		{"fails after the first layer", &fakePuller{reports: twoLayers[:3], err: pullFailure(images.ErrImageTooLarge)},
			map[string]any{"status": "error", "error": map[string]any{"type": typeImagePullFailed, "code": 400.0}}},
		{"in the store already: the result only", &fakePuller{img: pulled},
			map[string]any{"status": "pulled", "digest": pulled.Digest}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestServer(t, &fakeBackend{}, withPuller(tt.puller))
			rq := jsonBody(`{"image":"img:1"}`)
			rq.path, rq.headers = "/v1/images", map[string]string{"Accept": "application/json, application/x-ndjson"}
			w := do(t, s, rq)
			if w.Code != 200 || w.Header().Get("Content-Type") != contentTypeNDJSON {
				t.Fatalf("status %d, type %q: %s", w.Code, w.Header().Get("Content-Type"), w.Body)
			}
			lines := ndjson(t, w.Body.String())
			if len(lines) == 0 {
				t.Fatal("no lines")
			}
			fetched := map[string]float64{}
			for _, l := range lines[:len(lines)-1] {
				if l["status"] != "pulling" || l["layers"] != 2.0 {
					t.Errorf("progress line %v", l)
				}
				layer := l["layer"].(string)
				if f := l["fetched"].(float64); f < fetched[layer] {
					t.Errorf("layer %s went back from %v to %v bytes", layer, fetched[layer], f)
				}
				fetched[layer] = l["fetched"].(float64)
			}
			last := lines[len(lines)-1]
			for k, want := range tt.last {
				got := last[k]
				if wm, ok := want.(map[string]any); ok {
					gm, _ := got.(map[string]any)
					for k2, w2 := range wm {
						if gm[k2] != w2 {
							t.Errorf("last line %v: %s.%s = %v, want %v", last, k, k2, gm[k2], w2)
						}
					}
					continue
				}
				if got != want {
					t.Errorf("last line %v: %s = %v, want %v", last, k, got, want)
				}
			}
			if n := len(tt.puller.reports); n > 0 && len(fetched) == 0 {
				t.Errorf("%d reports, no progress line", n)
			}
		})
	}
}

// A client that stops following a pull stops it (when nobody else waits).
func TestPullImageClientLeaves(t *testing.T) {
	p := &fakePuller{reports: twoLayers[:1], block: true, canceled: make(chan struct{})}
	srv := httptest.NewServer(newTestServer(t, &fakeBackend{}, withPuller(p)))
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/images", strings.NewReader(`{"image":"img:1"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", contentTypeNDJSON)
	req.Header.Set("Authorization", "Bearer "+testSecret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || !strings.Contains(line, `"status":"pulling"`) {
		t.Fatalf("first line %q: %v", line, err)
	}
	resp.Body.Close()
	select {
	case <-p.canceled:
	case <-time.After(10 * time.Second):
		t.Fatal("the pull went on after its only client left")
	}
}

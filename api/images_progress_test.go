package api

import (
	"testing"
)

// TestPullImageStreamEndsEachLayerDone: coalescing keeps each layer's latest report, so a client following a
// pull sees every layer reach done, with all its bytes, before the result line, however the reports were
// batched.
func TestPullImageStreamEndsEachLayerDone(t *testing.T) {
	s := newTestServer(t, &fakeBackend{}, withPuller(&fakePuller{reports: twoLayers, img: pulled}))
	rq := jsonBody(`{"image":"img:1"}`)
	rq.path, rq.headers = "/v1/images", map[string]string{"Accept": "application/x-ndjson"}
	w := do(t, s, rq)
	lines := ndjson(t, w.Body.String())
	if w.Code != 200 || len(lines) == 0 || lines[len(lines)-1]["status"] != "pulled" {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	last := map[string]map[string]any{} // layer digest -> its last progress line
	for _, l := range lines[:len(lines)-1] {
		layer, _ := l["layer"].(string)
		last[layer] = l
	}
	for _, p := range twoLayers[2:] {
		l := last[p.Digest.String()]
		if l == nil || l["done"] != true || l["fetched"] != float64(p.Size) || l["size"] != float64(p.Size) {
			t.Errorf("layer %d (%s): last line %v, want done with %d of %d bytes", p.Index, p.Digest, l, p.Size, p.Size)
		}
	}
}

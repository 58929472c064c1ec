package images

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	"go.podman.io/image/v5/types"
)

// progressLog collects what a subscriber was told.
type progressLog struct {
	mu     sync.Mutex
	events []Progress
}

func (l *progressLog) add(p Progress) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, p)
}

func (l *progressLog) all() []Progress {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.events)
}

// last is the latest report of each layer, by index.
func (l *progressLog) last() map[int]Progress {
	out := map[int]Progress{}
	for _, p := range l.all() {
		out[p.Index] = p
	}
	return out
}

// A real pull reports every layer of the image, its bytes and its end; a
// second pull of the image, served from the store, reports nothing.
func TestPullWithProgress(t *testing.T) {
	requireRoot(t)
	s := newTestStore(t, Config{})
	l := newLayout(t, t.TempDir())
	ref := l.tag(l.image(baseImage()), "v1")

	var log progressLog
	img, err := s.PullWithProgress(context.Background(), ref, log.add)
	if err != nil {
		t.Fatal(err)
	}
	if len(img.Layers) != 3 {
		t.Fatalf("Layers = %v", img.Layers)
	}
	events := log.all()
	if len(events) < 6 { // announced, then done, for each of 3 layers
		t.Fatalf("only %d reports: %+v", len(events), events)
	}
	last := log.last()
	if len(last) != 3 {
		t.Fatalf("reports for layers %v, want 0, 1, 2", last)
	}
	for i := range 3 {
		p := last[i]
		blob, ok := l.blobs[p.Digest]
		if !ok {
			t.Errorf("layer %d: digest %s is not a blob of the image", i, p.Digest)
			continue
		}
		if p.Layers != 3 || !p.Done || p.Size != int64(len(blob.data)) || p.Fetched != p.Size {
			t.Errorf("layer %d ended as %+v, want done with all %d bytes fetched", i, p, len(blob.data))
		}
	}
	// Each layer is announced (nothing fetched, not done) before anything else is said of it.
	seen := map[int]bool{}
	for _, p := range events {
		if !seen[p.Index] && (p.Done || p.Fetched != 0) {
			t.Errorf("layer %d: first report %+v is not its announcement", p.Index, p)
		}
		seen[p.Index] = true
	}
	if n := len(s.progress.pulls); n != 0 {
		t.Errorf("%d progress entries left after the pull", n)
	}

	var again progressLog
	if _, err := s.PullWithProgress(context.Background(), ref, again.add); err != nil {
		t.Fatal(err)
	}
	if got := again.all(); len(got) != 0 {
		t.Errorf("a pull served from the store reported %+v", got)
	}
	// Pull itself is unchanged: no progress, same image.
	if img2, err := s.Pull(context.Background(), ref); err != nil || img2.Digest != img.Digest {
		t.Fatalf("Pull: %v, %+v", err, img2)
	}
}

// A bad reference fails as Pull fails it, whether or not progress is asked for.
func TestPullWithProgressBadReference(t *testing.T) {
	requireRoot(t)
	s := newTestStore(t, Config{})
	var log progressLog
	_, err := s.PullWithProgress(context.Background(), "Not A Reference!", log.add)
	var perr *PullError
	if !errors.As(err, &perr) || perr.Kind() != ErrInvalidReference {
		t.Fatalf("err = %v, want an invalid reference PullError", err)
	}
	if len(log.all()) != 0 || len(s.progress.pulls) != 0 {
		t.Errorf("reports %+v, entries %d", log.all(), len(s.progress.pulls))
	}
}

// The hub: who hears what, in which order, and that nothing is kept once
// nobody listens and no pull reports.
func TestProgressHub(t *testing.T) {
	blobs := []types.BlobInfo{{Digest: digest.FromString("a"), Size: 10}, {Digest: digest.FromString("b"), Size: -1}}
	tests := []struct {
		name string
		run  func(t *testing.T, h *progressHub, early, late *progressLog)
		// what early (subscribed before the pull started) and late (after its
		// first bytes) were told, as "index:fetched:done" lines
		wantEarly, wantLate []string
	}{
		{
			name: "subscriber before the pull hears everything; a late one gets the state first",
			run: func(t *testing.T, h *progressHub, early, late *progressLog) {
				defer h.subscribe("k", early.add)()
				r := h.start("k", blobs)
				r.update(0, false, func(p *Progress) { p.Fetched = 4 })
				defer h.subscribe("k", late.add)()
				r.done(0)
				r.done(1)
				r.finish()
			},
			wantEarly: []string{"0:0:false", "1:0:false", "0:4:false", "0:4:true", "1:0:true"},
			wantLate:  []string{"0:4:false", "1:0:false", "0:4:true", "1:0:true"},
		},
		{
			name: "bytes are reported at most every interval; done always",
			run: func(t *testing.T, h *progressHub, early, _ *progressLog) {
				defer h.subscribe("k", early.add)()
				r := h.start("k", blobs[:1])
				for range 5 {
					r.update(0, true, func(p *Progress) { p.Fetched += 2 })
				}
				r.done(0)
				r.finish()
			},
			// The first bytes go out at once (no report yet), the next four
			// within the interval do not.
			wantEarly: []string{"0:0:false", "0:2:false", "0:10:true"},
		},
		{
			name: "an unsubscribed caller hears nothing more",
			run: func(t *testing.T, h *progressHub, early, _ *progressLog) {
				unsubscribe := h.subscribe("k", early.add)
				r := h.start("k", blobs[:1])
				unsubscribe()
				r.done(0)
				r.finish()
			},
			wantEarly: []string{"0:0:false"},
		},
		{
			name: "a pull of another key is not heard",
			run: func(t *testing.T, h *progressHub, early, _ *progressLog) {
				defer h.subscribe("k", early.add)()
				r := h.start("other", blobs)
				r.done(0)
				r.finish()
			},
		},
		{
			name: "a flight winding down does not report over the next one",
			run: func(t *testing.T, h *progressHub, early, _ *progressLog) {
				defer h.subscribe("k", early.add)()
				old := h.start("k", blobs[:1])
				next := h.start("k", blobs[:1])
				old.done(0)
				old.finish()
				next.update(0, false, func(p *Progress) { p.Fetched = 3 })
				next.finish()
			},
			wantEarly: []string{"0:0:false", "0:0:false", "0:3:false"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var h progressHub
			var early, late progressLog
			tc.run(t, &h, &early, &late)
			for _, c := range []struct {
				name string
				log  *progressLog
				want []string
			}{{"early", &early, tc.wantEarly}, {"late", &late, tc.wantLate}} {
				var got []string
				for _, p := range c.log.all() {
					got = append(got, progressLine(p))
				}
				if !slices.Equal(got, c.want) {
					t.Errorf("%s subscriber heard %q, want %q", c.name, got, c.want)
				}
			}
			if len(h.pulls) != 0 {
				t.Errorf("%d entries kept after every subscriber left and every pull finished", len(h.pulls))
			}
		})
	}
}

func progressLine(p Progress) string {
	return fmt.Sprintf("%d:%d:%v", p.Index, p.Fetched, p.Done)
}

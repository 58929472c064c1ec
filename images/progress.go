package images

import (
	"context"
	"io"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"go.podman.io/image/v5/types"
)

// Progress is how far one layer of a pull has come, as PullWithProgress
// reports it.
type Progress struct {
	Index   int           // the layer's position in the image, base layer first
	Layers  int           // how many layers the image has
	Digest  digest.Digest // the layer's blob (as the source serves it, usually compressed)
	Size    int64         // the blob's size in bytes; 0 or -1 when the source did not say
	Fetched int64         // bytes of the blob read so far (from its start again if the fetch was retried)
	Done    bool          // the layer is in the store: unpacked by this pull, or found there
}

// progressInterval is the least time between two reports of one layer's
// bytes: often enough for a progress bar, seldom enough not to matter.
const progressInterval = 200 * time.Millisecond

// PullWithProgress is Pull, with progress called as the layers of the image
// come in: first once per layer when the image's manifest has been read, then
// as its bytes are read (at most every progressInterval per layer), and once
// more when it is in the store. A caller that joins a pull already in flight
// is first told where each layer stands. An image already in the store gives
// no calls.
//
// progress is called from the pull's goroutines, one call at a time, while
// the store holds a lock that every pull's reports take: it must return
// quickly and must not call the store. It is not called once
// PullWithProgress has returned.
func (s *Store) PullWithProgress(ctx context.Context, ref string, progress func(Progress)) (*Image, error) {
	if progress != nil {
		// A reference that does not resolve fails in Pull, with the error
		// Pull gives it.
		if iref, err := s.resolveReference(ref); err == nil {
			defer s.progress.subscribe(imageKey(iref), progress)()
		}
	}
	return s.Pull(ctx, ref)
}

// progressHub hands the progress of pulls to the callers waiting for them,
// by image key. The pull in flight reports through a pullReporter; callers
// subscribe to the key, so that every caller sharing one pull (see
// Store.pullImage) hears it. Its zero value is ready to use.
type progressHub struct {
	mu    sync.Mutex
	pulls map[string]*pullProgress
}

// pullProgress is one key's subscribers and the layers of its pull in
// flight. It exists while either does.
type pullProgress struct {
	subs   map[int]func(Progress)
	nextID int
	// gen counts the pulls started for this key: a flight that was
	// cancelled may still be winding down when the next one starts, and
	// only the newest may report.
	gen    int
	layers []Progress // nil when no pull is in flight
	last   []time.Time
}

func (h *progressHub) entry(key string) *pullProgress {
	if h.pulls == nil {
		h.pulls = make(map[string]*pullProgress)
	}
	p := h.pulls[key]
	if p == nil {
		p = &pullProgress{subs: make(map[int]func(Progress))}
		h.pulls[key] = p
	}
	return p
}

// dropIfIdle forgets key once nobody listens and no pull reports.
func (h *progressHub) dropIfIdle(key string, p *pullProgress) {
	if len(p.subs) == 0 && p.layers == nil && h.pulls[key] == p {
		delete(h.pulls, key)
	}
}

// subscribe calls fn with the progress of the pulls of key until the
// returned function is called; a pull in flight is first replayed, one call
// per layer.
func (h *progressHub) subscribe(key string, fn func(Progress)) (unsubscribe func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.entry(key)
	id := p.nextID
	p.nextID++
	p.subs[id] = fn
	for _, l := range p.layers {
		fn(l)
	}
	return func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		delete(p.subs, id)
		h.dropIfIdle(key, p)
	}
}

// start records that the pull of key, of the layers blobs, is in flight, and
// tells the subscribers.
func (h *progressHub) start(key string, blobs []types.BlobInfo) *pullReporter {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.entry(key)
	p.gen++
	p.layers = make([]Progress, len(blobs))
	p.last = make([]time.Time, len(blobs))
	for i, b := range blobs {
		p.layers[i] = Progress{Index: i, Layers: len(blobs), Digest: b.Digest, Size: b.Size}
	}
	r := &pullReporter{hub: h, key: key, p: p, gen: p.gen}
	for _, l := range p.layers {
		r.broadcast(l)
	}
	return r
}

// pullReporter is how the pull in flight for one key reports.
type pullReporter struct {
	hub *progressHub
	key string
	p   *pullProgress
	gen int
}

// update applies change to layer i and reports it; a bytes-only change
// only once progressInterval has passed since the layer's last report.
func (r *pullReporter) update(i int, throttle bool, change func(*Progress)) {
	r.hub.mu.Lock()
	defer r.hub.mu.Unlock()
	if r.p.gen != r.gen || r.p.layers == nil || i < 0 || i >= len(r.p.layers) {
		return // a newer pull of the key reports now
	}
	change(&r.p.layers[i])
	now := time.Now()
	if throttle && now.Sub(r.p.last[i]) < progressInterval {
		return
	}
	r.p.last[i] = now
	r.broadcast(r.p.layers[i])
}

func (r *pullReporter) broadcast(l Progress) {
	for _, fn := range r.p.subs {
		fn(l)
	}
}

// done reports that layer i is in the store.
func (r *pullReporter) done(i int) {
	r.update(i, false, func(l *Progress) { l.Done = true })
}

// finish ends the pull's reports.
func (r *pullReporter) finish() {
	r.hub.mu.Lock()
	defer r.hub.mu.Unlock()
	if r.p.gen != r.gen {
		return
	}
	r.p.layers, r.p.last = nil, nil
	r.hub.dropIfIdle(r.key, r.p)
}

// source is src with the bytes of layer i's blob counted as they are read.
func (r *pullReporter) source(src types.ImageSource, i int) types.ImageSource {
	return &progressSource{ImageSource: src, r: r, index: i}
}

// progressSource counts what is read of the blobs it hands out.
type progressSource struct {
	types.ImageSource
	r     *pullReporter
	index int
}

func (s *progressSource) GetBlob(ctx context.Context, info types.BlobInfo, cache types.BlobInfoCache) (io.ReadCloser, int64, error) {
	rc, size, err := s.ImageSource.GetBlob(ctx, info, cache)
	if err != nil {
		return nil, 0, err
	}
	s.r.update(s.index, false, func(l *Progress) { l.Fetched = 0 })
	return &progressReader{ReadCloser: rc, r: s.r, index: s.index}, size, nil
}

type progressReader struct {
	io.ReadCloser
	r     *pullReporter
	index int
}

func (p *progressReader) Read(b []byte) (int, error) {
	n, err := p.ReadCloser.Read(b)
	if n > 0 {
		p.r.update(p.index, true, func(l *Progress) { l.Fetched += int64(n) })
	}
	return n, err
}

package api

import (
	"context"
	"errors"
	"mime"
	"net/http"
	"strings"
	"sync"

	"github.com/julienschmidt/httprouter"

	"executor/images"
)

// ImagePuller pulls images into the daemon's store (*images.Store implements it) for POST /v1/images. It is
// optional: without one that route answers as an unknown one.
type ImagePuller interface {
	// PullWithProgress pulls ref unless it is in the store, calling progress (quickly, never after it returned)
	// as the image's layers come in. Its errors are *images.PullError.
	PullWithProgress(ctx context.Context, ref string, progress func(images.Progress)) (*images.Image, error)
}

// contentTypeNDJSON is what a client accepts to follow a pull: one JSON document per line.
const contentTypeNDJSON = "application/x-ndjson"

// typeImagePullFailed is the error type of a failed POST /v1/images. The route is ours, not the reference's, so
// its failures are not dressed as the catalogue's runtime errors.
const typeImagePullFailed = "image_pull_failed"

// pullImageRequest is POST /v1/images.
type pullImageRequest struct {
	Image string
}

// pullImageParams: `image` has the bound of POST /v1/runtimes' `image`; a longer one could not be run anyway.
func pullImageParams(req *pullImageRequest) []param {
	return []param{{name: "image", check: textOf(128), dst: &req.Image}}
}

// pullJSON is a line of the progress stream, and the whole reply of a pull that is not followed. Status is
// "pulling" for a layer's progress, then "pulled" (Image, Digest, Layers) or "error" (Error) ends it.
type pullJSON struct {
	Status string `json:"status"`
	// A layer's progress: its blob digest, position (base 0) among the image's layers, bytes read of its blob
	// and its size (0 or -1 when the registry did not say), and whether it is in the store.
	Layer   string     `json:"layer,omitempty"`
	Index   *int       `json:"index,omitempty"`
	Fetched *int64     `json:"fetched,omitempty"`
	Size    *int64     `json:"size,omitempty"`
	Done    *bool      `json:"done,omitempty"`
	Image   string     `json:"image,omitempty"`
	Digest  string     `json:"digest,omitempty"`
	Layers  int        `json:"layers,omitempty"`
	Error   *errorBody `json:"error,omitempty"`
}

func layerJSON(p images.Progress) pullJSON {
	return pullJSON{Status: "pulling", Layer: p.Digest.String(), Index: &p.Index, Layers: p.Layers,
		Fetched: &p.Fetched, Size: &p.Size, Done: &p.Done}
}

func pulledJSON(ref string, img *images.Image) pullJSON {
	return pullJSON{Status: "pulled", Image: ref, Digest: img.Digest, Layers: len(img.Layers)}
}

// pullImage is POST /v1/images, an extension of ours: pull `image` into the store unless it is there already
// (as a runtime's creation would), so that an operator can prepare a host. A client that accepts
// application/x-ndjson follows the pull as lines of pullJSON; any other gets one pullJSON when it is done.
//
// The stream starts with the first progress report, once the image's manifest has been read: a failure before
// that (a bad reference, an unknown image, an unreachable registry) is an error document with its own status,
// as on every route; one after is the stream's last line.
func (s *Server) pullImage(w http.ResponseWriter, r *http.Request, ps httprouter.Params) error {
	if s.images == nil {
		return newRequestError(http.StatusNotFound, "Not Found")
	}
	req, err := s.endpoints.pullImage.bind(r, ps)
	if err != nil {
		return err
	}
	if !accepts(r, contentTypeNDJSON) {
		img, err := s.images.PullWithProgress(r.Context(), req.Image, nil)
		if err != nil {
			return pullError(r.Context(), err)
		}
		return writeJSON(w, http.StatusOK, pulledJSON(req.Image, img))
	}
	return s.streamPull(w, r, req.Image)
}

// streamPull runs the pull of ref and writes its progress as it comes. Reports are coalesced per layer, so a
// slow client sees fewer lines, never an older state after a newer one, and never holds the pull up.
func (s *Server) streamPull(w http.ResponseWriter, r *http.Request, ref string) error {
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	var (
		mu      sync.Mutex
		pending []images.Progress // the latest report of each layer not written yet, in the order they came
	)
	wake := make(chan struct{}, 1)
	progress := func(p images.Progress) {
		mu.Lock()
		i := 0
		for i < len(pending) && pending[i].Index != p.Index {
			i++
		}
		if i == len(pending) {
			pending = append(pending, p)
		} else {
			pending[i] = p
		}
		mu.Unlock()
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	type result struct {
		img *images.Image
		err error
	}
	done := make(chan result, 1)
	go func() {
		img, err := s.images.PullWithProgress(ctx, ref, progress)
		done <- result{img, err}
	}()

	started := false
	start := func() {
		if started {
			return
		}
		started = true
		h := w.Header()
		h.Set("Content-Type", contentTypeNDJSON)
		h.Set("Cache-Control", "no-cache")
		w.WriteHeader(http.StatusOK)
	}
	write := func(lines ...pullJSON) error {
		mu.Lock()
		batch := pending
		pending = nil
		mu.Unlock()
		var b strings.Builder
		for _, l := range append(progressLines(batch), lines...) {
			data, err := marshalPHP(l)
			if err != nil {
				return err
			}
			b.Write(data)
			b.WriteByte('\n')
		}
		if _, err := w.Write([]byte(b.String())); err != nil {
			return err
		}
		flush(w)
		return nil
	}
	for {
		select {
		case <-wake:
			start()
			if err := write(); err != nil {
				// The client left: a pull nobody else waits for stops.
				cancel()
				<-done
				return nil
			}
		case res := <-done:
			if res.err != nil && !started {
				return pullError(r.Context(), res.err)
			}
			start()
			var last pullJSON
			if res.err != nil {
				body, internal := s.classify(pullError(r.Context(), res.err))
				s.logError(r, res.err, body, internal)
				last = pullJSON{Status: "error", Error: &body}
			} else {
				last = pulledJSON(ref, res.img)
			}
			_ = write(last) // nothing more to do for a client that left
			return nil
		}
	}
}

func progressLines(ps []images.Progress) []pullJSON {
	out := make([]pullJSON, 0, len(ps))
	for _, p := range ps {
		out = append(out, layerJSON(p))
	}
	return out
}

// pullError is a failed pull as the client sees it: what the images package says went wrong (its message never
// repeats what the source said), with a status by kind. A pull stopped because the client left is left as it is,
// to be logged as such.
func pullError(ctx context.Context, err error) error {
	var perr *images.PullError
	if ctx.Err() != nil || !errors.As(err, &perr) {
		return err
	}
	out := &apiError{typ: typeImagePullFailed, message: perr.Error(), err: err, code: http.StatusBadRequest}
	switch kind := perr.Kind(); {
	case kind == nil:
		// This host's own fault (disk, memory): the executor's log has it.
		out.code = http.StatusInternalServerError
	case errors.Is(kind, images.ErrImageNotFound):
		out.code = http.StatusNotFound
	case errors.Is(kind, images.ErrRegistryUnreachable):
		out.code = http.StatusBadGateway
	}
	return out
}

// accepts reports whether the request's Accept header names mediaType.
func accepts(r *http.Request, mediaType string) bool {
	for _, v := range r.Header.Values("Accept") {
		for _, part := range strings.Split(v, ",") {
			mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
			if err == nil && strings.EqualFold(mt, mediaType) {
				return true
			}
		}
	}
	return false
}

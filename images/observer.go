package images

import (
	"context"
	"sync"
	"time"
)

// Observer is told what a Store does, for the daemon's metrics; the store
// itself knows nothing of them. Methods are called on the goroutine doing
// the work and must not block it.
type Observer interface {
	// Pull reports a pull from an image's source (not a use of an image
	// already in the store): bytes is what it unpacked into the layer
	// store (layers already there cost nothing), err why it failed. A pull
	// shared by several callers is reported once.
	Pull(ctx context.Context, took time.Duration, bytes int64, err error)
}

type nopObserver struct{}

func (nopObserver) Pull(context.Context, time.Duration, int64, error) {}

// layerBytes is the layer store's size, measured once when first asked for
// and then kept by the pulls and collections that change it; a layer
// unpacked by a pull that then failed is not counted until the next
// measurement (the next daemon's first).
type layerBytes struct {
	mu    sync.Mutex
	known bool
	n     int64
}

// LayerBytes is the size of the files in the layer store. The first call
// walks the store; later calls are a lock and a read.
func (s *Store) LayerBytes() int64 {
	s.layerSize.mu.Lock()
	defer s.layerSize.mu.Unlock()
	if !s.layerSize.known {
		s.layerSize.n = treeSize(s.layersDir())
		s.layerSize.known = true
	}
	return s.layerSize.n
}

// addLayerBytes accounts for n bytes added to (or, negative, removed from)
// the layer store.
func (s *Store) addLayerBytes(n int64) {
	s.layerSize.mu.Lock()
	defer s.layerSize.mu.Unlock()
	if s.layerSize.known {
		s.layerSize.n = max(0, s.layerSize.n+n)
	}
}

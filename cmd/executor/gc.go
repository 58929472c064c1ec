package main

import (
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// gcHeadroom is the least the daemon's heap may grow between two garbage
// collections. Go's default lets it grow by its live size, 4 MiB at the
// least; the daemon's live heap is a few MiB, so under load it collected
// every few hundred executions (measured: about 15 times a second, one
// client at a time), and the executions that met a collection waited for
// it: on a 2-core host that was most of the warm path's p99 over a direct
// request. The floor costs at most this much memory, and only while the
// daemon allocates; once the live heap is larger, Go's default holds.
const gcHeadroom = 32 << 20

// gcFloor keeps at least headroom bytes between the live heap and the next
// collection, by setting GOGC after each collection from the live heap it
// left.
type gcFloor struct {
	headroom uint64
	live     []metrics.Sample
	mu       sync.Mutex // stop waits for a tune under way
	percent  int        // as last set; -1 before the first
	stopped  bool
}

// keepGCHeadroom starts a gcFloor unless the operator set GOGC, which then
// stands as given. stop ends it and gives GOGC back the value it had.
func keepGCHeadroom(log *slog.Logger, headroom uint64) (stop func()) {
	if v := os.Getenv("GOGC"); v != "" {
		log.Debug("garbage collector: GOGC set, no heap floor", "GOGC", v)
		return func() {}
	}
	f := &gcFloor{headroom: headroom, live: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}, percent: -1}
	before := f.set()
	f.arm()
	return func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.stopped = true
		debug.SetGCPercent(before)
	}
}

// gcSentinel is what a gcFloor watches to learn of a collection. It is not
// a tiny object: the allocator packs those into blocks that outlive them.
type gcSentinel [64]byte

// arm runs tune once the next collection has ended, and arms it again.
func (f *gcFloor) arm() {
	runtime.AddCleanup(new(gcSentinel), func(f *gcFloor) {
		if f.tune() {
			f.arm()
		}
	}, f)
}

// tune sets GOGC from the live heap the last collection left, unless the
// floor was stopped; it reports whether it was not.
func (f *gcFloor) tune() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return false
	}
	f.set()
	return true
}

// set sets GOGC from the live heap the last collection left, and returns
// the value it had.
func (f *gcFloor) set() (previous int) {
	metrics.Read(f.live)
	var live uint64
	if f.live[0].Value.Kind() == metrics.KindUint64 {
		live = f.live[0].Value.Uint64()
	}
	p := gcPercent(live, f.headroom)
	if p == f.percent {
		return p
	}
	f.percent = p
	return debug.SetGCPercent(p)
}

// gcMinHeap is Go's least heap goal at GOGC=100. The least goal scales with
// GOGC: at GOGC=3200 it would be 128 MiB however small the live heap.
const gcMinHeap = 4 << 20

// gcPercent is the GOGC that lets a heap of live bytes grow by headroom
// bytes before the next collection, or by its own size (Go's default, 100)
// where that is more. A live heap under gcMinHeap is taken as gcMinHeap: its
// goal is then the headroom (the least goal GOGC brings), not more.
func gcPercent(live, headroom uint64) int {
	live = max(live, gcMinHeap)
	p := (headroom*100 + live - 1) / live
	return int(max(p, 100))
}

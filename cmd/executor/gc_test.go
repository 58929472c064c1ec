package main

import (
	"log/slog"
	"runtime"
	"runtime/metrics"
	"testing"
	"time"
)

func TestGCPercent(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		live, headroom uint64
		want           int
	}{
		{0, 32 * mib, 800},        // before the first collection: taken as gcMinHeap
		{1 * mib, 32 * mib, 800},  // the least goal, 4 MiB x 8: the headroom
		{4 * mib, 32 * mib, 800},  // 4 + 32 = 36 MiB
		{8 * mib, 32 * mib, 400},  // 8 + 32 = 40 MiB
		{10 * mib, 32 * mib, 320}, // rounded up: at least the headroom
		{32 * mib, 32 * mib, 100}, // from here Go's default
		{200 * mib, 32 * mib, 100},
		{4 * mib, 0, 100},
	}
	for _, tt := range tests {
		if got := gcPercent(tt.live, tt.headroom); got != tt.want {
			t.Errorf("gcPercent(%d, %d) = %d, want %d", tt.live, tt.headroom, got, tt.want)
		}
		// Go's goal: the live heap grown by GOGC percent, and never under
		// gcMinHeap grown by it.
		got := uint64(gcPercent(tt.live, tt.headroom))
		goal := max(tt.live+tt.live*got/100, gcMinHeap*got/100)
		least := tt.live + tt.headroom
		if tt.live < gcMinHeap {
			least = max(tt.headroom, tt.live)
		}
		if goal < least {
			t.Errorf("gcPercent(%d, %d): a goal of %d leaves less than the headroom", tt.live, tt.headroom, goal)
		}
		if tt.headroom >= tt.live && goal > max(tt.live, gcMinHeap)+tt.headroom {
			t.Errorf("gcPercent(%d, %d): a goal of %d leaves more than the headroom", tt.live, tt.headroom, goal)
		}
	}
}

// gogc is the GOGC in force, read without changing it.
func gogc(t *testing.T) int {
	t.Helper()
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return int(s[0].Value.Uint64())
}

// TestKeepGCHeadroom: after each collection GOGC is what keeps the headroom
// over the live heap that collection left, and stop gives back the GOGC
// there was.
func TestKeepGCHeadroom(t *testing.T) {
	t.Setenv("GOGC", "")
	before := gogc(t)
	const headroom = 64 << 20 // larger than this test's live heap: GOGC goes above 100
	stop := keepGCHeadroom(slog.New(slog.DiscardHandler), headroom)
	defer stop()
	live := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	var want, got int
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		runtime.GC()
		// The floor is set once the collection's cleanups ran.
		time.Sleep(10 * time.Millisecond)
		metrics.Read(live)
		want, got = gcPercent(live[0].Value.Uint64(), headroom), gogc(t)
		if got == want && got > 100 {
			break
		}
	}
	if got != want || got <= 100 {
		t.Fatalf("GOGC %d after a collection, want %d", got, want)
	}
	stop()
	if got := gogc(t); got != before {
		t.Fatalf("GOGC %d after stop, want %d as before", got, before)
	}
	// Stopped: a later collection leaves GOGC alone.
	runtime.GC()
	time.Sleep(20 * time.Millisecond)
	if got := gogc(t); got != before {
		t.Fatalf("GOGC %d after a collection once stopped, want %d", got, before)
	}
}

// TestKeepGCHeadroomLeavesGOGC: a GOGC the operator set stands.
func TestKeepGCHeadroomLeavesGOGC(t *testing.T) {
	t.Setenv("GOGC", "150")
	before := gogc(t)
	stop := keepGCHeadroom(slog.New(slog.DiscardHandler), 64<<20)
	defer stop()
	runtime.GC()
	time.Sleep(20 * time.Millisecond)
	if got := gogc(t); got != before {
		t.Fatalf("GOGC %d with GOGC set, want %d as it was", got, before)
	}
}

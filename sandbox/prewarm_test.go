package sandbox

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"executor/sandbox/protocol"
)

func testPool(max int) *pool {
	return &pool{
		max:    max,
		idle:   make(map[poolKey][]*parked),
		making: make(map[poolKey]int),
		demand: make(map[poolKey][]time.Time),
		wake:   make(chan struct{}, 1),
	}
}

// A pool grows to its image's cold starts of the last prewarmWindow, at
// most max, and shrinks, oldest sandbox first, to nothing once they age
// out: an idle executor keeps no sandbox.
func TestPoolSizesByRecentDemand(t *testing.T) {
	p := testPool(2)
	k := poolKey{"img", protocol.V5}
	now := time.Now()
	p.demand[k] = []time.Time{now, now, now}
	for i := 0; i < 2; i++ {
		if key, grow, extra := p.next(); !grow || key != k || extra != nil {
			t.Fatalf("step %d: next = %v %v %v, want to make one for %v", i, key, grow, extra, k)
		}
	}
	if _, grow, extra := p.next(); grow || extra != nil {
		t.Fatal("the pool grows past max while two are being made")
	}
	older, newer := &parked{}, &parked{}
	p.making[k] = 0
	p.idle[k] = []*parked{older, newer}
	if _, grow, extra := p.next(); grow || extra != nil {
		t.Fatal("a pool at its target changes")
	}

	p.demand[k] = []time.Time{now.Add(-2 * prewarmWindow), now}
	if _, _, extra := p.next(); extra != older {
		t.Fatalf("with one cold start left in the window, the older sandbox goes: got %v", extra)
	}
	if _, grow, extra := p.next(); grow || extra != nil {
		t.Fatal("a pool of one for one recent cold start changes")
	}
	p.demand[k] = []time.Time{now.Add(-2 * prewarmWindow)}
	if _, _, extra := p.next(); extra != newer {
		t.Fatalf("with no cold start in the window, the last sandbox goes: got %v", extra)
	}
	if len(p.demand) != 0 || len(p.idle) != 0 {
		t.Errorf("an idle pool keeps state: demand %v, idle %v", p.demand, p.idle)
	}
}

// take counts the cold start and hands out the newest sandbox; a runtime
// that builds first neither takes one nor counts; a nil pool has none.
func TestPoolTake(t *testing.T) {
	p := testPool(4)
	k := poolKey{"img", protocol.V4}
	spec := Spec{Image: "img", Version: protocol.V4}
	if sb, _ := p.take(spec); sb != nil {
		t.Fatal("an empty pool handed out a sandbox")
	}
	if n := len(p.demand[k]); n != 1 {
		t.Fatalf("%d cold starts counted, want 1", n)
	}
	a, b := &parked{}, &parked{}
	p.idle[k] = []*parked{a, b}
	if sb, _ := p.take(Spec{Image: "img", Version: protocol.V5}); sb != nil {
		t.Fatal("a sandbox of another protocol version was handed out")
	}
	if sb, _ := p.take(spec); sb != b {
		t.Fatalf("take = %v, want the newest", sb)
	}
	building := spec
	building.Command = "npm install"
	if sb, _ := p.take(building); sb != nil {
		t.Fatal("a runtime that builds took a sandbox")
	}
	if n := len(p.demand[k]); n != 2 {
		t.Fatalf("%d cold starts counted, want 2 (the build's not among them)", n)
	}
	var none *pool
	if sb, done := none.take(spec); sb != nil || done == nil {
		t.Fatal("a nil pool has sandboxes, or no done to call")
	}
	none.close()
}

// A refill waits while a cold start is in flight, so as not to take the CPU
// the booting runtime needs, until that cold start is over or prewarmYield
// has passed; done may be called more than once.
func TestPoolYieldsToColdStarts(t *testing.T) {
	k := poolKey{"img", protocol.V5}
	spec := Spec{Image: "img", Version: protocol.V5}
	t.Run("until done", func(t *testing.T) {
		p := testPool(2)
		_, done := p.take(spec)
		if _, grow, _ := p.next(); grow {
			t.Fatal("the pool refills while the cold start that asked for it boots")
		}
		done()
		done()
		if p.starting != 0 {
			t.Fatalf("%d cold starts in flight after done, want 0", p.starting)
		}
		if key, grow, _ := p.next(); !grow || key != k {
			t.Fatal("the pool does not refill once the cold start is over")
		}
	})
	t.Run("at most prewarmYield", func(t *testing.T) {
		p := testPool(2)
		p.take(spec)
		if _, grow, _ := p.next(); grow {
			t.Fatal("the pool refills while the cold start that asked for it boots")
		}
		select {
		case <-p.wake: // take's own poke, if any
		default:
		}
		// The loop is woken when the yield is over, without a done.
		select {
		case <-p.wake:
		case <-time.After(30 * time.Second):
			t.Fatal("no wake-up after prewarmYield")
		}
		if time.Since(p.yielding) < prewarmYield {
			t.Fatalf("woken %v into the yield, before prewarmYield", time.Since(p.yielding))
		}
		if _, grow, _ := p.next(); !grow {
			t.Fatal("a cold start that never reports holds off refills past prewarmYield")
		}
	})
}

// The pool hears of a cold start's end (and may refill) once the request
// that made the runtime has its reply: an execution's once the runtime
// answered it, a create's once the runtime is made.
func TestColdStartEndsWithItsReply(t *testing.T) {
	var ended atomic.Int32
	var endedBeforeReply atomic.Int32
	m, h := newTestManagerServing(t, httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		endedBeforeReply.Store(ended.Load())
		_, _ = io.WriteString(w, "ok")
	})))
	h.coldDone = func() { ended.Add(1) }

	if _, err := m.Execute(context.Background(), coldExec("exec")); err != nil {
		t.Fatal(err)
	}
	if n := endedBeforeReply.Load(); n != 0 {
		t.Fatalf("the cold start ended (%d) before its runtime answered the execution", n)
	}
	if n := ended.Load(); n != 1 {
		t.Fatalf("the cold start of an execution ended %d times once answered, want 1", n)
	}

	if _, err := m.Create(context.Background(), Spec{RuntimeID: "create", Image: "img", Version: protocol.V5}); err != nil {
		t.Fatal(err)
	}
	if n := ended.Load(); n != 2 {
		t.Fatalf("a created runtime's cold start did not end once made: %d ends in all, want 2", n)
	}
}

// A refill decided when a cold start ends starts prewarmReplyGrace after
// that end, so as not to compete with the reply on its way out; a pool
// stopped meanwhile makes none.
func TestPoolRefillWaitsForTheReply(t *testing.T) {
	spec := Spec{Image: "img", Version: protocol.V5}
	p := testPool(2)
	p.stop = make(chan struct{})
	_, done := p.take(spec)
	done()
	ended := p.lastDone
	if time.Since(ended) > time.Second || ended.IsZero() {
		t.Fatalf("done recorded the end of the cold start at %v", ended)
	}
	if !p.graceAfterReply() {
		t.Fatal("graceAfterReply reports a stop")
	}
	if d := time.Since(ended); d < prewarmReplyGrace {
		t.Fatalf("the refill may start %v after the cold start ended, before prewarmReplyGrace (%v)", d, prewarmReplyGrace)
	}
	_, done = p.take(spec)
	done()
	close(p.stop)
	if p.graceAfterReply() {
		t.Error("graceAfterReply goes on after the pool stopped")
	}
}

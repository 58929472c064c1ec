package images

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestFlightShared(t *testing.T) {
	var g flightGroup[int]
	var runs atomic.Int32
	release := make(chan struct{})
	fn := func(ctx context.Context) (int, error) {
		runs.Add(1)
		<-release
		return 42, nil
	}
	var wg sync.WaitGroup
	results := make([]int, 8)
	for i := range results {
		wg.Go(func() { results[i], _, _ = g.do(context.Background(), "k", fn) })
	}
	// All 8 must have joined before the work ends, or a late one would
	// start a second flight and the count below would prove nothing.
	waitWaiters(t, &g, "k", len(results))
	close(release)
	wg.Wait()
	if runs.Load() != 1 {
		t.Errorf("fn ran %d times", runs.Load())
	}
	for i, r := range results {
		if r != 42 {
			t.Errorf("caller %d got %d", i, r)
		}
	}
}

// One caller giving up must not fail the others; the work stops only when
// nobody waits for it any more, and a later caller starts afresh.
func TestFlightCancellation(t *testing.T) {
	var g flightGroup[int]
	started := make(chan context.Context, 2)
	fn := func(ctx context.Context) (int, error) {
		started <- ctx
		<-ctx.Done()
		return 0, ctx.Err()
	}
	impatient, cancelImpatient := context.WithCancel(context.Background())
	patient, cancelPatient := context.WithCancel(context.Background())
	errs := make(chan error, 2)
	go func() { _, err, _ := g.do(impatient, "k", fn); errs <- err }()
	work := <-started
	go func() { _, err, _ := g.do(patient, "k", fn); errs <- err }()
	waitWaiters(t, &g, "k", 2)

	cancelImpatient()
	if err := <-errs; !errors.Is(err, context.Canceled) {
		t.Fatalf("impatient caller: %v", err)
	}
	// The impatient caller is gone: the work must still run for the patient
	// one, which can only have returned had the work been cancelled.
	if err := work.Err(); err != nil {
		t.Fatalf("the work was cancelled while a caller still waited: %v", err)
	}
	select {
	case err := <-errs:
		t.Fatalf("the patient caller was failed by the impatient one: %v", err)
	default:
	}
	if n := waiters(&g, "k"); n != 1 {
		t.Fatalf("%d callers wait for the flight, want the patient one", n)
	}
	cancelPatient()
	if err := <-errs; !errors.Is(err, context.Canceled) {
		t.Fatalf("patient caller: %v", err)
	}

	if err := work.Err(); err == nil {
		t.Fatal("the work still runs with nobody waiting for it")
	}
	if n := waiters(&g, "k"); n != 0 {
		t.Fatalf("a flight with %d waiters is still listed after every caller left", n)
	}
	v, err, led := g.do(context.Background(), "k", func(context.Context) (int, error) { return 7, nil })
	if v != 7 || err != nil || !led {
		t.Errorf("fresh call after cancellation: %d %v %v", v, err, led)
	}
}

// waiters is how many callers wait for key's flight (0: none in flight).
func waiters[T any](g *flightGroup[T], key string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if f, ok := g.calls[key]; ok {
		return f.waiters
	}
	return 0
}

// waitWaiters waits until n callers wait for key's flight. The deadline is
// only there so that a broken group fails the test instead of hanging it.
func waitWaiters[T any](t *testing.T, g *flightGroup[T], key string, n int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for waiters(g, key) != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d callers joined the flight, want %d", waiters(g, key), n)
		}
		time.Sleep(time.Millisecond)
	}
}

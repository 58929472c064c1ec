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
	time.Sleep(20 * time.Millisecond) // let them all join
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
	started := make(chan struct{}, 2)
	fn := func(ctx context.Context) (int, error) {
		started <- struct{}{}
		<-ctx.Done()
		return 0, ctx.Err()
	}
	impatient, cancelImpatient := context.WithCancel(context.Background())
	patient, cancelPatient := context.WithCancel(context.Background())
	errs := make(chan error, 2)
	go func() { _, err, _ := g.do(impatient, "k", fn); errs <- err }()
	<-started
	go func() { _, err, _ := g.do(patient, "k", fn); errs <- err }()
	time.Sleep(20 * time.Millisecond)

	cancelImpatient()
	if err := <-errs; !errors.Is(err, context.Canceled) {
		t.Fatalf("impatient caller: %v", err)
	}
	select {
	case err := <-errs:
		t.Fatalf("the patient caller was failed by the impatient one: %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	cancelPatient()
	if err := <-errs; !errors.Is(err, context.Canceled) {
		t.Fatalf("patient caller: %v", err)
	}

	v, err, led := g.do(context.Background(), "k", func(context.Context) (int, error) { return 7, nil })
	if v != 7 || err != nil || !led {
		t.Errorf("fresh call after cancellation: %d %v %v", v, err, led)
	}
}

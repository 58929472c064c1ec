package sandbox

import (
	"context"
	"errors"
	"testing"
	"time"

	"executor/tests/cmd/benchtable/samples"
)

func TestFineTimer(t *testing.T) {
	ft, err := newFineTimer()
	if err != nil {
		t.Fatal(err)
	}
	defer ft.close()
	for _, d := range []time.Duration{0, 200 * time.Microsecond, 3 * time.Millisecond} {
		start := time.Now()
		if err := ft.sleep(context.Background(), d); err != nil {
			t.Fatalf("sleep(%v): %v", d, err)
		}
		if took := time.Since(start); took < d {
			t.Errorf("sleep(%v) returned after %v", d, took)
		}
	}

	// A context that ends wakes a long sleep, and the timer sleeps again
	// after it.
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	if err := ft.sleep(ctx, time.Minute); !errors.Is(err, context.Canceled) {
		t.Fatalf("sleep with a cancelled context: %v", err)
	}
	if took := time.Since(start); took > 30*time.Second {
		t.Fatalf("a cancelled sleep returned after %v", took)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := ft.sleep(ctx, time.Minute); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("sleep past a deadline: %v", err)
	}
	if err := ft.sleep(context.Background(), time.Millisecond); err != nil {
		t.Fatalf("sleep after a cancelled one: %v", err)
	}
	if err := ft.sleep(ctx, time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("sleep with an ended context: %v", err)
	}
}

func TestReadyPollInterval(t *testing.T) {
	for _, tc := range []struct {
		waited, want time.Duration
	}{
		{0, time.Millisecond},
		{30 * time.Millisecond, time.Millisecond},
		{time.Second, time.Millisecond},
		{time.Second + time.Microsecond, 4 * time.Millisecond},
		{time.Minute, 4 * time.Millisecond},
	} {
		if got := readyPollInterval(tc.waited); got != tc.want {
			t.Errorf("readyPollInterval(%v) = %v, want %v", tc.waited, got, tc.want)
		}
	}
}

// BenchmarkSleep compares a 1 ms sleep of the fine timer with Go's timer
// in a process doing nothing else: the poll interval waitReady asks for,
// and what it gets.
func BenchmarkSleep(b *testing.B) {
	const d = time.Millisecond
	b.Run("finetimer", func(b *testing.B) {
		ft, err := newFineTimer()
		if err != nil {
			b.Fatal(err)
		}
		defer ft.close()
		var ds []time.Duration
		for b.Loop() {
			start := time.Now()
			if err := ft.sleep(context.Background(), d); err != nil {
				b.Fatal(err)
			}
			ds = append(ds, time.Since(start))
		}
		samples.Report(b, "sleep", ds)
	})
	b.Run("go-timer", func(b *testing.B) {
		var ds []time.Duration
		for b.Loop() {
			start := time.Now()
			<-time.After(d)
			ds = append(ds, time.Since(start))
		}
		samples.Report(b, "sleep", ds)
	})
}

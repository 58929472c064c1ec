package netns

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"
)

// BenchmarkAttachDetach measures one endpoint's life: Attach then Detach.
// attach-us is the mean time Attach took (what a cold start waits for),
// attach-p50-us / attach-p99-us its quantiles, detach-us the mean time Detach
// took (with AsyncDetach only the hand-off to the background). back-to-back
// drains the pool faster than it refills (Attach then mostly builds inline,
// competing with the refill and the background teardowns); paced waits,
// untimed, for the pool to refill between iterations, as the gaps between
// cold starts allow.
func BenchmarkAttachDetach(b *testing.B) {
	pool := func(c *Config) { c.AsyncDetach = true; c.PoolSize = 8 }
	for _, bc := range []struct {
		name  string
		mod   func(*Config)
		paced bool // between iterations, untimed, wait for the pool to refill
	}{
		{"sync", nil, false},
		{"async-detach", func(c *Config) { c.AsyncDetach = true }, false},
		{"pool8+async-detach/back-to-back", pool, false},
		{"pool8+async-detach/paced", pool, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			n := testNetwork(b, 22, bc.mod)
			ctx := context.Background()
			if err := n.Reset(ctx); err != nil {
				b.Fatal(err)
			}
			if bc.mod != nil {
				// Let the pool fill, as it would between requests.
				time.Sleep(100 * time.Millisecond)
			}
			attach := make([]time.Duration, 0, b.N)
			var detach time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				ep, err := n.Attach(ctx, fmt.Sprintf("b%d", i))
				t1 := time.Now()
				if err != nil {
					b.Fatal(err)
				}
				if err := n.Detach(ctx, ep); err != nil {
					b.Fatal(err)
				}
				attach = append(attach, t1.Sub(t0))
				detach += time.Since(t1)
				if bc.paced {
					b.StopTimer()
					for deadline := time.Now().Add(time.Second); len(n.pool) < cap(n.pool) && time.Now().Before(deadline); {
						time.Sleep(time.Millisecond)
					}
					b.StartTimer()
				}
			}
			b.StopTimer()
			sort.Slice(attach, func(i, j int) bool { return attach[i] < attach[j] })
			var sum time.Duration
			for _, d := range attach {
				sum += d
			}
			b.ReportMetric(float64(sum.Microseconds())/float64(b.N), "attach-us")
			b.ReportMetric(float64(attach[len(attach)/2].Microseconds()), "attach-p50-us")
			b.ReportMetric(float64(attach[len(attach)*99/100].Microseconds()), "attach-p99-us")
			b.ReportMetric(float64(detach.Microseconds())/float64(b.N), "detach-us")
		})
	}
}

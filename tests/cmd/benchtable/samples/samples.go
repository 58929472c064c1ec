// Package samples reports a benchmark's latency samples under the metric
// names tests/cmd/benchtable reads: <figure>-n, <figure>-p50-ms,
// <figure>-p90-ms and <figure>-p99-ms. Every benchmark that make bench runs
// reports through it, so that the table can put any figure beside its
// baseline without knowing the benchmark.
package samples

import (
	"math"
	"slices"
	"testing"
	"time"
)

// Quantiles are the ones every figure reports, with the suffix each gets.
var Quantiles = []struct {
	P      float64
	Suffix string
}{{0.50, "p50"}, {0.90, "p90"}, {0.99, "p99"}}

// Quantile is the nearest-rank p-quantile of ds (0 < p <= 1): the smallest
// sample that at least p of the samples do not exceed. Nearest rank rather
// than interpolation: with the 20 samples make bench takes, p99 is the
// slowest sample, not a value no request saw.
func Quantile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(p*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

// Report reports ds as figure's n, p50, p90 and p99 in milliseconds.
// Nothing is reported for no samples: a figure with n=0 would read as
// measured.
func Report(b *testing.B, figure string, ds []time.Duration) {
	b.Helper()
	if len(ds) == 0 {
		return
	}
	b.ReportMetric(float64(len(ds)), figure+"-n")
	for _, q := range Quantiles {
		b.ReportMetric(Millis(Quantile(ds, q.P)), figure+"-"+q.Suffix+"-ms")
	}
}

// Millis is d in milliseconds, to the microsecond.
func Millis(d time.Duration) float64 {
	return float64(d.Microseconds()) / 1000
}

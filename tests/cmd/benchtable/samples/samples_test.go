package samples

import (
	"testing"
	"time"
)

func TestQuantile(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		var ds []time.Duration
		for _, n := range ns {
			ds = append(ds, time.Duration(n)*time.Millisecond)
		}
		return ds
	}
	twenty := ms(20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1)
	tests := []struct {
		name string
		ds   []time.Duration
		p    float64
		want time.Duration
	}{
		{"empty", nil, 0.5, 0},
		{"one sample is every quantile", ms(7), 0.99, 7 * time.Millisecond},
		{"p50 of 20 is the 10th", twenty, 0.5, 10 * time.Millisecond},
		{"p90 of 20 is the 18th", twenty, 0.9, 18 * time.Millisecond},
		{"p99 of 20 is the slowest", twenty, 0.99, 20 * time.Millisecond},
		{"p50 of an odd count is the middle", ms(3, 1, 2), 0.5, 2 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Quantile(tt.ds, tt.p); got != tt.want {
				t.Errorf("Quantile(%v, %v) = %v, want %v", tt.ds, tt.p, got, tt.want)
			}
		})
	}
	if twenty[0] != 20*time.Millisecond {
		t.Error("Quantile sorted its argument in place")
	}
}

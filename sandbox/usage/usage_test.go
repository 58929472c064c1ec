package usage

import (
	"testing"
)

// A runtime's CPU time over the interval becomes percent of one core; a
// runtime new since the last reading, or whose counter went back (a
// restarted container), reads 0.
func TestRead(t *testing.T) {
	var m Meter
	counters := map[string]uint64{"a": 0, "gone": 5, "reset": 1e12}
	host, per := m.Read(func() map[string]uint64 {
		out := make(map[string]uint64, len(counters))
		for k, v := range counters {
			out[k] = v
		}
		// The second sample: "a" used 50 ms of CPU, "reset" restarted,
		// "new" appeared.
		counters = map[string]uint64{"a": 50e6, "reset": 10, "new": 1e9}
		return out
	})
	if host < 0 || host > 100 {
		t.Errorf("host usage %v%%, want within 0..100", host)
	}
	if got := per["a"]; got <= 0 || got > 50 {
		t.Errorf("a: %v%%, want above 0 and at most 50 (50 ms in at least 100 ms)", got)
	}
	for _, id := range []string{"reset", "new"} {
		if v, ok := per[id]; !ok || v != 0 {
			t.Errorf("%s: %v (present %v), want 0", id, v, ok)
		}
	}
	if _, ok := per["gone"]; ok {
		t.Error("a runtime gone since the last reading is reported")
	}
}

package main

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

// The journal writer builds each line (priority, then the record) in a buffer it reuses: a daemon logging
// ordinary records does not allocate per line, while a record of more than 64 KiB (a huge error, say) is not
// kept around for the rest of the daemon's life. What reaches the stream is the same either way.
func TestPriorityWriterBuffer(t *testing.T) {
	tests := []struct {
		name   string
		size   int // of the line with its priority
		allocs bool
	}{
		{name: "an ordinary line", size: 200, allocs: false},
		{name: "64 KiB: kept", size: 64 << 10, allocs: false},
		{name: "over 64 KiB: let go", size: 64<<10 + 1, allocs: true},
		{name: "1 MiB: let go", size: 1 << 20, allocs: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			record := []byte(strings.Repeat("x", tt.size-4) + "\n")
			var out bytes.Buffer
			w := &priorityWriter{w: &out, prefix: "<6>"}
			if n, err := w.Write(record); n != len(record) || err != nil || out.String() != "<6>"+string(record) {
				t.Fatalf("wrote %d, %v: %d bytes out, want %d", n, err, out.Len(), tt.size)
			}
			w.w = io.Discard
			// Many runs where none is expected: AllocsPerRun averages, and another goroutine's stray allocation
			// must not count as the writer's.
			runs := 100
			if tt.allocs {
				runs = 5
			}
			got := testing.AllocsPerRun(runs, func() { w.Write(record) })
			if (got > 0) != tt.allocs {
				t.Errorf("%.0f allocations per line, want allocations: %v", got, tt.allocs)
			}
		})
	}
}

package sandbox

import (
	"io"
	"log/slog"
	"runtime"
	"testing"
	"time"
)

// newManager fills in what the configuration leaves unset (zero, or a
// negative duration or size) and keeps what it sets.
func TestManagerDefaults(t *testing.T) {
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	obs := &eventLog{}
	tests := []struct {
		name string
		cfg  Config
		want Config
	}{
		{
			name: "unset",
			cfg:  Config{},
			want: Config{Logger: slog.Default(), StopGrace: DefaultStopGrace, BuildSizeLimit: DefaultBuildSizeLimit,
				PidsLimit: DefaultPidsLimit, RetryDelay: DefaultRetryDelay, Observer: NopObserver{}},
		},
		{
			name: "negative",
			cfg:  Config{StopGrace: -time.Second, BuildSizeLimit: -1, RetryDelay: -time.Second},
			want: Config{Logger: slog.Default(), StopGrace: DefaultStopGrace, BuildSizeLimit: DefaultBuildSizeLimit,
				PidsLimit: DefaultPidsLimit, RetryDelay: DefaultRetryDelay, Observer: NopObserver{}},
		},
		{
			name: "set",
			cfg: Config{Logger: logger, StopGrace: time.Second, BuildSizeLimit: 1 << 20, PidsLimit: 64,
				RetryDelay: time.Millisecond, Observer: obs},
			want: Config{Logger: logger, StopGrace: time.Second, BuildSizeLimit: 1 << 20, PidsLimit: 64,
				RetryDelay: time.Millisecond, Observer: obs},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newManager(tt.cfg)
			got := m.cfg
			if got.Logger != tt.want.Logger || m.log != tt.want.Logger {
				t.Errorf("logger %p (manager's %p), want %p", got.Logger, m.log, tt.want.Logger)
			}
			if got.StopGrace != tt.want.StopGrace {
				t.Errorf("StopGrace %v, want %v", got.StopGrace, tt.want.StopGrace)
			}
			if got.BuildSizeLimit != tt.want.BuildSizeLimit {
				t.Errorf("BuildSizeLimit %d, want %d", got.BuildSizeLimit, tt.want.BuildSizeLimit)
			}
			if got.PidsLimit != tt.want.PidsLimit {
				t.Errorf("PidsLimit %d, want %d", got.PidsLimit, tt.want.PidsLimit)
			}
			if got.RetryDelay != tt.want.RetryDelay {
				t.Errorf("RetryDelay %v, want %v", got.RetryDelay, tt.want.RetryDelay)
			}
			if got.Observer != tt.want.Observer {
				t.Errorf("Observer %#v, want %#v", got.Observer, tt.want.Observer)
			}
			// Teardowns run on half the CPUs, at least one at a time.
			if got, want := cap(m.teardownSlots), max(1, runtime.NumCPU()/2); got != want {
				t.Errorf("%d teardown slots on %d CPUs, want %d", got, runtime.NumCPU(), want)
			}
		})
	}
}

package sandbox

import (
	"errors"
	"testing"
)

// An error whose message already quotes its cause says the cause once.
func TestErrorSaysItsCauseOnce(t *testing.T) {
	cause := errors.New("image not found")
	tests := []struct {
		err  *Error
		want string
	}{
		{&Error{Type: ErrRuntimeFailed, Message: "Missing image \"x\" and failed to pull it: image not found", Err: cause},
			"runtime_failed: Missing image \"x\" and failed to pull it: image not found"},
		{&Error{Type: ErrRuntimeFailed, Message: "Something went wrong when starting runtime.", Err: cause},
			"runtime_failed: Something went wrong when starting runtime.: image not found"},
		{&Error{Type: ErrRuntimeNotFound, Message: "Runtime not found"}, "runtime_not_found: Runtime not found"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
		if tt.err.Err != nil && !errors.Is(tt.err, cause) {
			t.Errorf("%q does not wrap its cause", tt.err)
		}
	}
}

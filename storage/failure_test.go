package storage

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

func TestReadFailure(t *testing.T) {
	secret := errors.New("dial tcp 10.0.0.7:9000: access key AKIA... refused")
	tests := []struct {
		err     error
		want    string
		refused bool
	}{
		{fmt.Errorf("open: %w", ErrNotFound), "/s/a.tgz does not exist", false},
		{ErrInvalidPath, "/s/a.tgz is not a valid path", true},
		{ErrOutsideRoots, ErrOutsideRoots.Error(), true},
		{ErrNotRegular, ErrNotRegular.Error(), true},
		{fmt.Errorf("%w: %w", ErrUnauthorized, secret), "/s/a.tgz could not be read: the storage device refused the credentials", false},
		{fmt.Errorf("%w: %w", ErrUnavailable, secret), "/s/a.tgz could not be read: the storage device is unreachable", false},
		{context.Canceled, "/s/a.tgz could not be read: the copy was cancelled", false},
		{secret, "/s/a.tgz could not be read", false},
	}
	for _, tt := range tests {
		if got := ReadFailure("/s/a.tgz", tt.err); got != tt.want {
			t.Errorf("ReadFailure(%v) = %q, want %q", tt.err, got, tt.want)
		}
		if got := Refused(tt.err); got != tt.refused {
			t.Errorf("Refused(%v) = %v, want %v", tt.err, got, tt.refused)
		}
	}
}

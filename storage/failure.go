package storage

import (
	"context"
	"errors"
	"fmt"
)

// Refused reports whether err refuses a path the client should not have
// sent (outside the storage roots, not a regular file, malformed), rather
// than a failure of the device.
func Refused(err error) bool {
	return errors.Is(err, ErrOutsideRoots) || errors.Is(err, ErrNotRegular) || errors.Is(err, ErrInvalidPath)
}

// ReadFailure says in a sentence, for a client, why path could not be read:
// the kind of failure only, as a device's own errors may name hosts,
// buckets or credentials.
func ReadFailure(path string, err error) string {
	switch {
	case errors.Is(err, ErrOutsideRoots), errors.Is(err, ErrNotRegular):
		return err.Error()
	case errors.Is(err, ErrNotFound):
		return fmt.Sprintf("%s does not exist", path)
	case errors.Is(err, ErrInvalidPath):
		return fmt.Sprintf("%s is not a valid path", path)
	case errors.Is(err, ErrUnauthorized):
		return fmt.Sprintf("%s could not be read: the storage device refused the credentials", path)
	case errors.Is(err, ErrUnavailable):
		return fmt.Sprintf("%s could not be read: the storage device is unreachable", path)
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("%s could not be read: the copy was cancelled", path)
	default:
		return fmt.Sprintf("%s could not be read", path)
	}
}

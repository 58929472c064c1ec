// Package storage reads sources from, and writes build artifacts to, the
// storage device named by a DSN: the local filesystem or an S3-family bucket.
package storage

import (
	"context"
	"errors"
	"io"
)

// ErrNotFound means no object exists at the path.
var ErrNotFound = errors.New("storage: object not found")

// ErrInvalidPath means the path would leave the device's root.
var ErrInvalidPath = errors.New("storage: path escapes the device root")

// ErrUnauthorized means the storage service refused the credentials (HTTP 401
// or 403, AccessDenied, SignatureDoesNotMatch, InvalidAccessKeyId, ...).
var ErrUnauthorized = errors.New("storage: access denied")

// ErrUnavailable means the storage service could not be reached or failed
// (connection refused, DNS failure, timeout, 5xx).
var ErrUnavailable = errors.New("storage: service unavailable")

// Device is one storage device with a root. Paths are absolute, in the
// device's namespace ("/storage/functions/x/code.tar.gz").
type Device interface {
	// Read opens the object at path for streaming.
	Read(ctx context.Context, path string) (io.ReadCloser, error)
	// Write stores r at path atomically: on any failure nothing is left at path.
	Write(ctx context.Context, path string, r io.Reader) (int64, error)
	// Exists reports whether an object exists at path.
	Exists(ctx context.Context, path string) (bool, error)
	// Delete removes the object at path; a missing object is not an error.
	Delete(ctx context.Context, path string) error
	// Root is the prefix under which paths of this device live.
	Root() string
}

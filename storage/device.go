// Package storage reads sources from, and writes build artifacts to, the
// storage device named by a DSN: the local filesystem or an S3-family bucket.
//
// An Opener (a DSN, the local storage roots, a size limit) opens the devices.
// The local device keeps to its roots: a path outside them is refused by
// name before any file is touched, and a path inside is opened beneath the
// root's directory fd (safefs), so that a link planted in a shared root
// such as /tmp never leads out of it, a FIFO is never waited on, and only
// regular files are read. Copies stop when their context ends and fail
// past the size limit.
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

// ErrOutsideRoots means a local path lies outside every storage root
// (OPR_EXECUTOR_STORAGE_ROOTS), or a symbolic link in it leads out of its
// root. Nothing outside was touched: the check is made on the name before
// any file is opened, and links are resolved by the kernel beneath the root.
var ErrOutsideRoots = errors.New("storage: path is outside the storage roots")

// ErrNotRegular means the local path names a directory, FIFO, socket or
// device rather than a regular file. It is refused without being waited on.
var ErrNotRegular = errors.New("storage: not a regular file")

// ErrTooLarge means an object holds more bytes than the device's MaxSize.
var ErrTooLarge = errors.New("storage: object is larger than the size limit")

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

package storage

import (
	"context"
	"io"
	"time"
)

// Observer is told of every operation on a device, for the daemon's
// metrics; the devices know nothing of them. It is called on the goroutine
// of the operation, once it returned, and must not block.
type Observer interface {
	// Operation reports op ("read", "write", "exists" or "delete") on a
	// device of kind ("local" or "s3"), lasting took (a read: until the
	// object was open), and its error. A missing object that Exists or
	// Delete answer for is not an error.
	Operation(ctx context.Context, kind, op string, took time.Duration, err error)
}

// Observe is dev reporting its operations to obs; nil obs is dev itself.
func Observe(dev Device, obs Observer) Device {
	if obs == nil || dev == nil {
		return dev
	}
	kind := "local"
	if _, ok := dev.(*S3); ok {
		kind = "s3"
	}
	return &observed{Device: dev, kind: kind, obs: obs}
}

type observed struct {
	Device
	kind string
	obs  Observer
}

func (d *observed) Read(ctx context.Context, p string) (io.ReadCloser, error) {
	start := time.Now()
	rc, err := d.Device.Read(ctx, p)
	d.obs.Operation(ctx, d.kind, "read", time.Since(start), err)
	return rc, err
}

func (d *observed) Write(ctx context.Context, p string, r io.Reader) (int64, error) {
	start := time.Now()
	n, err := d.Device.Write(ctx, p, r)
	d.obs.Operation(ctx, d.kind, "write", time.Since(start), err)
	return n, err
}

func (d *observed) Exists(ctx context.Context, p string) (bool, error) {
	start := time.Now()
	ok, err := d.Device.Exists(ctx, p)
	d.obs.Operation(ctx, d.kind, "exists", time.Since(start), err)
	return ok, err
}

func (d *observed) Delete(ctx context.Context, p string) error {
	start := time.Now()
	err := d.Device.Delete(ctx, p)
	d.obs.Operation(ctx, d.kind, "delete", time.Since(start), err)
	return err
}

package build

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
	"sync"
	"time"

	"executor/storage"
	"executor/storage/safefs"
)

// CacheFile is the cache's file name, in the runtime's cache directory and
// on the device.
const CacheFile = "stores.sqfs"

// Errors of Upload besides the storage device's own.
var (
	// ErrNoArtifact: the build left no artifact.
	ErrNoArtifact = errors.New("no build artifact")
	// ErrTooLarge: a file is larger than the limit.
	ErrTooLarge = errors.New("larger than the build size limit")
)

// RefusedError is a file the runtime left that is not taken: a link, a link
// on its path, a FIFO, a device, a directory.
type RefusedError struct {
	Name string
	Err  error
}

func (e *RefusedError) Error() string { return e.Name + " was refused: " + Refusal(e.Err) }
func (e *RefusedError) Unwrap() error { return e.Err }

// Refusal says in a few words why safefs refused a file.
func Refusal(err error) string {
	switch {
	case errors.Is(err, safefs.ErrSymlink):
		return "it is a symbolic link, or a link is on its path"
	case errors.Is(err, safefs.ErrNotRegular):
		return "it is not a regular file"
	case errors.Is(err, safefs.ErrTooLarge):
		return "it is larger than the limit"
	case errors.Is(err, fs.ErrNotExist):
		return "it does not exist"
	default:
		return err.Error()
	}
}

// Cache keeps build caches on a device, under its root (bucket/build-cache
// on S3, as the reference keeps it), at <key>/lz4-b1M/stores.sqfs.
type Cache struct {
	Dev   storage.Device
	Limit int64 // bytes, both ways
}

func (c Cache) object(key string) string {
	return path.Join(c.Dev.Root(), key, "lz4-b1M", CacheFile)
}

// Restore makes dir beneath d and fills it from the device when the key has
// a cache; a miss is not an error. The directory is the runtime's from its
// first build on, so it is written through d all the same.
func (c Cache) Restore(ctx context.Context, d *safefs.Dir, dir, key string) error {
	if err := d.Mkdir(dir, 0o755); err != nil {
		return fmt.Errorf("cannot create the cache directory: %w", err)
	}
	rc, err := c.Dev.Read(ctx, c.object(key))
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("restore failed: %w", err)
	}
	defer rc.Close()
	tmp := dir + "/." + CacheFile + ".part"
	f, err := d.Create(tmp, 0o644)
	if err == nil {
		_, err = io.Copy(f, safefs.Reader(ctx, rc, c.Limit))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = d.Rename(tmp, dir+"/"+CacheFile)
		}
		if err != nil {
			_ = d.Remove(tmp)
		}
	}
	if errors.Is(err, safefs.ErrTooLarge) {
		return fmt.Errorf("restore failed: the cache is larger than the build size limit of %d bytes (OPR_EXECUTOR_BUILD_SIZE_LIMIT)", c.Limit)
	}
	if err != nil {
		return fmt.Errorf("restore failed: %w", err)
	}
	return nil
}

// Save uploads dir/stores.sqfs after a successful build; without one there
// is nothing to save. The runtime made that file: a link, FIFO, device or
// oversized file is not saved. seen is where the runtime sees dir.
func (c Cache) Save(ctx context.Context, d *safefs.Dir, dir, seen, key string) error {
	f, st, err := d.Open(dir + "/" + CacheFile)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("save failed: %s/%s was refused: %s", seen, CacheFile, Refusal(err))
	}
	defer f.Close()
	tooLarge := fmt.Errorf("save failed: %s/%s is larger than the build size limit of %d bytes (OPR_EXECUTOR_BUILD_SIZE_LIMIT)", seen, CacheFile, c.Limit)
	if st.Size() > c.Limit {
		return tooLarge
	}
	if _, err := c.Dev.Write(ctx, c.object(key), safefs.Reader(ctx, f, c.Limit)); err != nil {
		if errors.Is(err, safefs.ErrTooLarge) {
			return tooLarge
		}
		return fmt.Errorf("save failed: %w", err)
	}
	return nil
}

// FetchSource copies source from dev into name beneath d. The device caps
// the copy (by size before the first byte, and as it streams) and stops it
// when ctx ends.
func FetchSource(ctx context.Context, dev storage.Device, source string, d *safefs.Dir, name string) error {
	rc, err := dev.Read(ctx, source)
	if err != nil {
		return err
	}
	defer rc.Close()
	f, err := d.Create(name, 0o644)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, rc)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// Upload copies the artifact name beneath d to dev as <uniqid>.gz under the
// device's root, and returns its path and size. The artifact must be a
// regular file of at most limit bytes, reached without a link; it may still
// grow while it is copied, and the cap holds for what is read.
func Upload(ctx context.Context, d *safefs.Dir, name string, dev storage.Device, names *Namer, limit int64) (string, int64, error) {
	f, st, err := d.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return "", 0, fmt.Errorf("%w: %w", ErrNoArtifact, err)
	}
	if err != nil {
		return "", 0, &RefusedError{Name: name, Err: err}
	}
	defer f.Close()
	if st.Size() > limit {
		return "", 0, ErrTooLarge
	}
	p := strings.TrimRight(dev.Root(), "/") + "/" + names.Next() + ".gz"
	size, err := dev.Write(ctx, p, safefs.Reader(ctx, f, limit))
	if errors.Is(err, safefs.ErrTooLarge) || errors.Is(err, storage.ErrTooLarge) {
		return "", 0, ErrTooLarge
	}
	if err != nil {
		return "", 0, err
	}
	return p, size, nil
}

// Namer names artifacts as PHP's uniqid() does: 13 hex characters from the
// clock (seconds and microseconds). Names are strictly increasing within a
// Namer, so two builds finishing in the same microsecond still get
// different ones. The zero value is ready to use.
type Namer struct {
	mu   sync.Mutex
	last int64
}

// Next returns a new name.
func (n *Namer) Next() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	us := time.Now().UnixMicro()
	if us <= n.last {
		us = n.last + 1
	}
	n.last = us
	return fmt.Sprintf("%08x%05x", us/1_000_000, us%1_000_000)
}

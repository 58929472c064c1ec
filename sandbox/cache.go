package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"time"

	"executor/storage"
)

// The build cache (§5.5): a squashfs the image's helpers restore from /cache
// before the build and save there after it, kept on the build-cache device.
const (
	buildCacheRoot = "/build-cache"
	cacheFile      = "stores.sqfs"
)

func cacheEnabled(spec Spec) bool { return spec.CacheKey != "" && spec.Command != "" }

// cacheObject is where the cache of key lives on dev, under its root
// (bucket/build-cache on S3, as the reference keeps it).
func cacheObject(dev storage.Device, key string) string {
	return path.Join(dev.Root(), key, "lz4-b1M", cacheFile)
}

// cacheDevice is the build-cache device. On the local filesystem the cache
// lives under the data dir rather than in a /build-cache directory at the
// host's root, where the reference (inside its container) keeps it.
func (m *Manager) cacheDevice() (storage.Device, error) {
	dsn := m.cfg.BuildCacheStorage
	if dsn == "" {
		dsn = m.cfg.Storage
	}
	dev, err := storage.Open(dsn, buildCacheRoot)
	if err != nil {
		return nil, err
	}
	if _, local := dev.(*storage.Local); local {
		return storage.NewLocal(filepath.Join(m.cfg.DataDir, "build-cache"))
	}
	return dev, nil
}

// warn records a build-cache warning; the build goes on without the cache.
func (r *Runtime) warn(msg string) {
	r.mu.Lock()
	r.cacheWarnings = append(r.cacheWarnings, LogEntry{Timestamp: time.Now().UTC(), Content: "[build cache] Warning: " + msg + "\n"})
	r.mu.Unlock()
	r.log.Warn("build cache", "runtime", r.ID, "warning", msg)
}

// restoreCache makes cache/ and fills it from the device when an entry exists.
func (m *Manager) restoreCache(ctx context.Context, r *Runtime, key string) {
	dir := filepath.Join(r.Dir, "cache")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		r.warn(fmt.Sprintf("cannot create the cache directory: %v", err))
		return
	}
	dev, err := m.cacheDevice()
	if err != nil {
		r.warn(err.Error())
		return
	}
	obj := cacheObject(dev, key)
	rc, err := dev.Read(ctx, obj)
	if errors.Is(err, storage.ErrNotFound) {
		return // a miss: the helpers build without it
	}
	if err != nil {
		r.warn(fmt.Sprintf("restore failed: %v", err))
		return
	}
	defer rc.Close()
	tmp := filepath.Join(dir, "."+cacheFile+".part")
	f, err := os.Create(tmp)
	if err == nil {
		_, err = io.Copy(f, rc)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, cacheFile))
	}
	if err != nil {
		os.Remove(tmp)
		r.warn(fmt.Sprintf("restore failed: %v", err))
	}
}

// saveCache uploads cache/stores.sqfs after a successful build.
func (m *Manager) saveCache(ctx context.Context, r *Runtime, key string) {
	f, err := os.Open(filepath.Join(r.Dir, "cache", cacheFile))
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	if err != nil {
		r.warn(fmt.Sprintf("save failed: %v", err))
		return
	}
	defer f.Close()
	dev, err := m.cacheDevice()
	if err != nil {
		r.warn(err.Error())
		return
	}
	if _, err := dev.Write(ctx, cacheObject(dev, key), f); err != nil {
		r.warn(fmt.Sprintf("save failed: %v", err))
	}
}

package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"path/filepath"
	"time"

	"executor/storage"
	"executor/storage/safefs"
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

// openCacheDevice opens the build-cache device. On the local filesystem the cache
// lives under the data dir rather than in a /build-cache directory at the
// host's root, where the reference (inside its container) keeps it.
func openCacheDevice(cfg Config) (storage.Device, error) {
	dsn := cfg.BuildCacheStorage
	if dsn == "" {
		dsn = cfg.Storage
	}
	o, err := storage.NewOpener(storage.Config{DSN: dsn, MaxSize: cfg.BuildSizeLimit})
	if err != nil {
		return nil, err
	}
	if o.Local() {
		return storage.NewLocal(filepath.Join(cfg.DataDir, "build-cache"))
	}
	return o.Open(buildCacheRoot)
}

// warn records a build-cache warning; the build goes on without the cache.
func (r *Runtime) warn(msg string) {
	r.mu.Lock()
	r.cacheWarnings = append(r.cacheWarnings, LogEntry{Timestamp: time.Now().UTC(), Content: "[build cache] Warning: " + msg + "\n"})
	r.mu.Unlock()
	r.log.Warn("build cache", "runtime", r.ID, "warning", msg)
}

// restoreCache makes cache/ and fills it from the device when an entry exists.
// It runs before the runtime starts, but cache/ is the runtime's from its
// first build on: the daemon writes it through safefs all the same.
func (m *Manager) restoreCache(ctx context.Context, r *Runtime, key string) {
	d, err := r.openDir()
	if err != nil {
		r.warn(fmt.Sprintf("cannot open the runtime directory: %v", err))
		return
	}
	defer d.Close()
	if err := d.Mkdir("cache", 0o755); err != nil {
		r.warn(fmt.Sprintf("cannot create the cache directory: %v", err))
		return
	}
	dev := m.cacheDev
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
	tmp := "cache/." + cacheFile + ".part"
	f, err := d.Create(tmp, 0o644)
	if err == nil {
		_, err = io.Copy(f, safefs.Reader(ctx, rc, m.cfg.BuildSizeLimit))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = d.Rename(tmp, "cache/"+cacheFile)
		}
		if err != nil {
			_ = d.Remove(tmp)
		}
	}
	if errors.Is(err, safefs.ErrTooLarge) {
		err = fmt.Errorf("the cache is larger than the build size limit of %d bytes (OPR_EXECUTOR_BUILD_SIZE_LIMIT)", m.cfg.BuildSizeLimit)
	}
	if err != nil {
		r.warn(fmt.Sprintf("restore failed: %v", err))
	}
}

// saveCache uploads cache/stores.sqfs after a successful build. The runtime
// made that file: a link, FIFO, device or oversized file is not saved, and
// the build goes on with a warning.
func (m *Manager) saveCache(ctx context.Context, r *Runtime, key string) {
	d, err := r.openDir()
	if err != nil {
		r.warn(fmt.Sprintf("save failed: %v", err))
		return
	}
	defer d.Close()
	f, st, err := d.Open("cache/" + cacheFile)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err != nil {
		r.warn(fmt.Sprintf("save failed: /cache/%s was refused: %s", cacheFile, refusal(err)))
		return
	}
	defer f.Close()
	limit := m.cfg.BuildSizeLimit
	tooLarge := fmt.Sprintf("save failed: /cache/%s is larger than the build size limit of %d bytes (OPR_EXECUTOR_BUILD_SIZE_LIMIT)", cacheFile, limit)
	if st.Size() > limit {
		r.warn(tooLarge)
		return
	}
	dev := m.cacheDev
	if _, err := dev.Write(ctx, cacheObject(dev, key), safefs.Reader(ctx, f, limit)); err != nil {
		if errors.Is(err, safefs.ErrTooLarge) {
			r.warn(tooLarge)
			return
		}
		r.warn(fmt.Sprintf("save failed: %v", err))
	}
}

package sandbox

import (
	"context"
	"fmt"
	"time"

	"executor/sandbox/build"
)

func cacheEnabled(spec Spec) bool { return spec.CacheKey != "" && spec.Command != "" }

// warn records a build-cache warning; the build goes on without the cache.
func (r *Runtime) warn(msg string) {
	r.mu.Lock()
	r.cacheWarnings = append(r.cacheWarnings, LogEntry{Timestamp: time.Now().UTC(), Content: "[build cache] Warning: " + msg + "\n"})
	r.mu.Unlock()
	r.log.Warn("build cache", "runtime", r.ID, "warning", msg)
}

func (m *Manager) cache() build.Cache {
	return build.Cache{Dev: m.cacheDev, Limit: m.cfg.BuildSizeLimit}
}

// restoreCache fills cache/ from the device before the runtime starts; a
// failure is a warning, never a failed build.
func (m *Manager) restoreCache(ctx context.Context, r *Runtime, key string) {
	d, err := r.openDir()
	if err != nil {
		r.warn(fmt.Sprintf("cannot open the runtime directory: %v", err))
		return
	}
	defer d.Close()
	if err := m.cache().Restore(ctx, d, "cache", key); err != nil {
		r.warn(err.Error())
	}
}

// saveCache uploads cache/stores.sqfs after a successful build; a failure
// is a warning.
func (m *Manager) saveCache(ctx context.Context, r *Runtime, key string) {
	d, err := r.openDir()
	if err != nil {
		r.warn(fmt.Sprintf("save failed: %v", err))
		return
	}
	defer d.Close()
	if err := m.cache().Save(ctx, d, "cache", "/cache", key); err != nil {
		r.warn(err.Error())
	}
}

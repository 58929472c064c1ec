package images

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// Use tracking.
//
// An image is in use while a root made from it is mounted: from MountRoot
// until UnmountRoot of that dir. A layer is pinned while a mounted root or a
// pull in flight needs it. GC removes neither. All of this lives in memory:
// after a restart nothing is in use, which is true, because the daemon's
// Reconcile unmounts every root before serving.
//
// When an image was last used (pulled, returned from the store by Pull,
// mounted, unmounted) is the modification time of its record file, set with
// one utimensat and no write: it survives restarts, and a crash that loses it
// only makes the image look as old as its previous use.
//
// GC decides, and renames what it removes out of sight, under Store.mu, the
// same lock MountRoot takes to check and pin an image's layers and a pull
// takes to pin the layers it is about to look for. So a layer is either still
// in Root/layers and pinned before anyone relies on it, or already gone and
// fetched again. MountRoot of an image GC removed after Pull returned it pulls
// it again.

// mountUse is what one mounted root holds.
type mountUse struct {
	key    string   // image record key; "" for an image the store cannot name
	layers []string // pinned layer dirs
}

// mountKey is the form of dir the registry is keyed by.
func mountKey(dir string) string {
	if abs, err := filepath.Abs(dir); err == nil {
		return abs
	}
	return filepath.Clean(dir)
}

// errLayersGone says that an image's layers were removed (by GC, or by hand)
// between Pull and MountRoot.
var errLayersGone = errors.New("image layers are no longer in the store")

// acquire records that a root is being made at dir from img: the image is in
// use and its layers pinned until release(dir). It fails with errLayersGone
// when a layer is missing, having pinned nothing.
func (s *Store) acquire(img *Image, dir string) error {
	key := img.key
	if key == "" && img.Ref != "" {
		if r, err := s.resolveReference(img.Ref); err == nil {
			key = imageKey(r)
		}
	}
	s.mu.Lock()
	for _, l := range img.Layers {
		if _, err := os.Lstat(l); err != nil {
			s.mu.Unlock()
			return fmt.Errorf("%w: %s: %w", errLayersGone, img.Ref, err)
		}
	}
	u := &mountUse{key: key, layers: slices.Clone(img.Layers)}
	s.hold(u)
	s.mu.Unlock()

	d := mountKey(dir)
	s.mountsMu.Lock()
	if s.mounts == nil {
		s.mounts = make(map[string]*mountUse)
	}
	old := s.mounts[d]
	s.mounts[d] = u
	s.mountsMu.Unlock()
	if old != nil {
		// The dir's earlier root was removed without UnmountRoot; what it
		// held is free now.
		s.drop(old)
	}
	s.touch(key)
	return nil
}

// repull pulls img.Ref again and acquires the result for dir, with the
// image marked as being pulled throughout so GC leaves it alone.
func (s *Store) repull(ctx context.Context, img *Image, dir string) (*Image, error) {
	r, err := s.resolveReference(img.Ref)
	if err != nil {
		return nil, err
	}
	defer s.startPull(imageKey(r), nil)()
	fresh, err := s.Pull(ctx, img.Ref)
	if err != nil {
		return nil, err
	}
	if err := s.acquire(fresh, dir); err != nil {
		return nil, err
	}
	return fresh, nil
}

// release ends the use MountRoot recorded for dir, if any.
func (s *Store) release(dir string) {
	d := mountKey(dir)
	s.mountsMu.Lock()
	u := s.mounts[d]
	delete(s.mounts, d)
	s.mountsMu.Unlock()
	if u != nil {
		s.drop(u)
		s.touch(u.key)
	}
}

// hold counts u's image as in use and pins its layers. Call with s.mu held.
func (s *Store) hold(u *mountUse) {
	if s.inUse == nil {
		s.inUse = make(map[string]int)
	}
	if u.key != "" {
		s.inUse[u.key]++
	}
	s.pinLocked(u.layers)
}

func (s *Store) drop(u *mountUse) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if u.key != "" {
		if s.inUse[u.key]--; s.inUse[u.key] <= 0 {
			delete(s.inUse, u.key)
		}
	}
	s.unpinLocked(u.layers)
}

func (s *Store) pinLocked(layers []string) {
	if s.pins == nil {
		s.pins = make(map[string]int)
	}
	for _, l := range layers {
		s.pins[l]++
	}
}

func (s *Store) unpinLocked(layers []string) {
	for _, l := range layers {
		if s.pins[l]--; s.pins[l] <= 0 {
			delete(s.pins, l)
		}
	}
}

// startPull marks a pull of key in flight and pins the layers it will look
// for; the returned function undoes both.
func (s *Store) startPull(key string, layers []string) func() {
	s.mu.Lock()
	if s.pulling == nil {
		s.pulling = make(map[string]int)
	}
	s.pulling[key]++
	s.pinLocked(layers)
	s.mu.Unlock()
	return func() {
		s.mu.Lock()
		if s.pulling[key]--; s.pulling[key] <= 0 {
			delete(s.pulling, key)
		}
		s.unpinLocked(layers)
		s.mu.Unlock()
	}
}

// touch records a use of the image now. A record that is gone (collected,
// never written) needs no stamp.
func (s *Store) touch(key string) {
	if key == "" {
		return
	}
	now := time.Now()
	if err := os.Chtimes(s.recordPath(key), now, now); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.log.Warn("could not record the use of an image", "record", s.recordPath(key), "err", err)
	}
}

// InUse reports how many mounted roots use the image ref names.
func (s *Store) InUse(ref string) int {
	r, err := s.resolveReference(ref)
	if err != nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inUse[imageKey(r)]
}

// GCStats says what a GC removed.
type GCStats struct {
	// Images are the canonical names of the image records removed.
	Images []string
	// Layers is the number of layer directories removed, Bytes the size of
	// the files in them.
	Layers int
	Bytes  int64
	// Kept counts the records left because they are in use, being pulled,
	// on the keep list or used within olderThan.
	Kept int
}

// GC removes the images no runtime has used for olderThan (see "Use
// tracking": pulled, mounted or unmounted), then every layer no remaining
// image refers to. Images in use (a mounted root), being pulled, or named in
// keep (references as Pull takes them; ones that do not parse are ignored)
// are kept whatever their age, and so are the layers mounted roots and pulls
// in flight use.
//
// The layer directories of other id mappings (Config.IDMap changed since they
// were made) are removed too once they have not changed for olderThan.
//
// What GC removes is first renamed into Root/tmp, so a crash in the middle
// leaves either a complete layer or none (New empties Root/tmp). Pulls and
// MountRoot may run concurrently: they wait only for the renames.
func (s *Store) GC(ctx context.Context, olderThan time.Duration, keep ...string) (GCStats, error) {
	var stats GCStats
	if err := ctx.Err(); err != nil {
		return stats, err
	}
	keepKeys := make(map[string]bool, len(keep))
	for _, ref := range keep {
		if r, err := s.resolveReference(ref); err == nil {
			keepKeys[imageKey(r)] = true
		}
	}
	cutoff := time.Now().Add(-olderThan)

	var doomed []string // under Root/tmp, to remove after the lock
	var trash string    // Root/tmp/gc-*, made when the first layer goes
	var otherMaps []string
	var errs []error
	s.mu.Lock()
	entries, err := os.ReadDir(s.imagesDir())
	if err != nil {
		s.mu.Unlock()
		return stats, fmt.Errorf("images: GC: %w", err)
	}
	referenced := map[string]bool{}
	for _, e := range entries {
		name := e.Name()
		key, ok := strings.CutSuffix(name, ".json")
		if !ok || e.IsDir() {
			continue
		}
		path := filepath.Join(s.imagesDir(), name)
		info, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		rec, recErr := readRecord(path)
		busy := s.inUse[key] > 0 || s.pulling[key] > 0
		if busy || keepKeys[key] || !info.ModTime().Before(cutoff) {
			stats.Kept++
			if recErr == nil {
				for _, id := range rec.Layers {
					if layerKey(id) == nil {
						referenced[id.Encoded()] = true
					}
				}
			}
			continue
		}
		// A record that cannot be read refers to nothing; Pull would
		// replace it anyway.
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
			continue
		}
		label := rec.Name
		if label == "" {
			label = name
		}
		stats.Images = append(stats.Images, label)
	}
	layers, err := os.ReadDir(s.layersDir())
	if err != nil {
		errs = append(errs, err)
	}
	for _, e := range layers {
		name := e.Name()
		if referenced[name] || layerKey(digest.NewDigestFromEncoded(digest.SHA256, name)) != nil {
			continue // in use, or not a layer this store made
		}
		path := filepath.Join(s.layersDir(), name)
		if s.pins[path] > 0 {
			continue
		}
		if trash == "" {
			if trash, err = os.MkdirTemp(s.tmpDir(), "gc-"); err != nil {
				errs = append(errs, err)
				break
			}
		}
		gone := filepath.Join(trash, name)
		if err := os.Rename(path, gone); err != nil {
			errs = append(errs, err)
			continue
		}
		doomed = append(doomed, gone)
	}
	// Layers unpacked for another id mapping (OPR_EXECUTOR_USERNS changed),
	// or by a daemon that ran as real root where this one runs in a user
	// namespace or the other way round (see layersDir): no image of this
	// store can use them.
	if others, err := filepath.Glob(filepath.Join(s.root, "layers*")); err == nil {
		for _, other := range others {
			if other == s.layersDir() {
				continue
			}
			if fi, err := os.Lstat(other); err != nil || !fi.IsDir() || !fi.ModTime().Before(cutoff) {
				continue
			}
			if trash == "" {
				if trash, err = os.MkdirTemp(s.tmpDir(), "gc-"); err != nil {
					errs = append(errs, err)
					break
				}
			}
			gone := filepath.Join(trash, filepath.Base(other))
			if err := os.Rename(other, gone); err != nil {
				errs = append(errs, err)
				continue
			}
			s.log.Info("removing the layers of another user namespace mapping", "dir", other)
			otherMaps = append(otherMaps, gone)
		}
	}
	s.mu.Unlock()

	if len(stats.Images) > 0 {
		errs = append(errs, syncDir(s.imagesDir()))
	}
	if len(doomed) > 0 {
		errs = append(errs, syncDir(s.layersDir()))
	}
	for _, p := range doomed {
		n := treeSize(p)
		stats.Bytes += n
		// Out of the layer store from its rename on, removed or not.
		s.addLayerBytes(-n)
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, err)
			continue
		}
		stats.Layers++
	}
	for _, p := range otherMaps {
		stats.Bytes += treeSize(p)
	}
	if trash != "" {
		errs = append(errs, os.RemoveAll(trash))
	}
	if len(stats.Images) > 0 || stats.Layers > 0 {
		s.log.Debug("removed unused images", "images", stats.Images, "layers", stats.Layers, "bytes", stats.Bytes,
			"unusedFor", olderThan, "kept", stats.Kept)
	}
	if err := errors.Join(errs...); err != nil {
		return stats, fmt.Errorf("images: GC: %w", err)
	}
	return stats, nil
}

func readRecord(path string) (record, error) {
	var rec record
	data, err := os.ReadFile(path)
	if err != nil {
		return rec, err
	}
	err = json.Unmarshal(data, &rec)
	return rec, err
}

// treeSize is the size of the regular files under dir.
func treeSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

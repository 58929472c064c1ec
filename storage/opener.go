package storage

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Config configures an Opener.
type Config struct {
	// DSN names the device (OPR_EXECUTOR_CONNECTION_STORAGE); "" is the
	// local filesystem.
	DSN string
	// LocalRoots are the absolute directories the local device reads and
	// writes beneath (OPR_EXECUTOR_STORAGE_ROOTS); a local path outside all
	// of them is refused with ErrOutsideRoots. A root that does not exist
	// is kept: paths beneath it are simply not found until it appears. It
	// is never created. Unused for S3-family devices.
	LocalRoots []string
	// MaxSize caps every object read or written, in bytes; 0 means no cap.
	// A local file larger than the cap is refused before a byte is copied;
	// a stream that grows past it fails with ErrTooLarge.
	MaxSize int64
	// Observer is told of every operation on the devices opened (see
	// Observe); nil: nothing.
	Observer Observer
}

// Opener opens the devices of one DSN with one set of local roots: the
// source device (root "/") and the destination devices of builds.
type Opener struct {
	cfg       Config
	local     bool
	roots     []string // clean, longest first
	rootsText string   // as configured, for messages
}

// NewOpener checks cfg (it does not contact any service) and returns its
// Opener.
func NewOpener(cfg Config) (*Opener, error) {
	_, local, err := plan(cfg.DSN, "/")
	if err != nil {
		return nil, err
	}
	if cfg.MaxSize < 0 {
		return nil, fmt.Errorf("storage: negative size limit %d", cfg.MaxSize)
	}
	roots, err := cleanRoots(cfg.LocalRoots)
	if err != nil {
		return nil, err
	}
	o := &Opener{cfg: cfg, local: local, roots: roots, rootsText: strings.Join(roots, ",")}
	if len(cfg.LocalRoots) > 0 {
		o.rootsText = strings.Join(cfg.LocalRoots, ",")
	}
	if !local {
		// What the S3 client itself refuses (a bucket name) stops us now.
		if _, err := o.Open("/"); err != nil {
			return nil, err
		}
	}
	return o, nil
}

// cleanRoots checks and normalises storage roots: absolute, no "..", no NUL,
// not "/" (which would give the whole host away again), without duplicates,
// longest first so that the most specific root contains a path.
func cleanRoots(in []string) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	for _, r := range in {
		if !filepath.IsAbs(r) || hasDotDot(r) || strings.ContainsRune(r, 0) {
			return nil, fmt.Errorf("storage root %q must be an absolute path without \"..\" segments", r)
		}
		r = filepath.Clean(r)
		if r == "/" {
			return nil, errors.New("storage root / would expose the whole host: name the shared directories instead")
		}
		if !seen[r] {
			seen[r] = true
			out = append(out, r)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out, nil
}

// Local reports whether the DSN selects the local filesystem.
func (o *Opener) Local() bool { return o.local }

// Roots are the local storage roots, longest first.
func (o *Opener) Roots() []string { return append([]string(nil), o.roots...) }

// Open returns the device with root: "/" for reading sources, the
// destination directory for writing artifacts (§9). A local root outside
// the storage roots is refused here, before anything is written.
func (o *Opener) Open(root string) (Device, error) {
	if hasDotDot(root) || strings.ContainsRune(root, 0) {
		return nil, fmt.Errorf("%w: root %q", ErrInvalidPath, root)
	}
	cfg, local, err := plan(o.cfg.DSN, root)
	if err != nil {
		return nil, err
	}
	if !local {
		cfg.MaxSize = o.cfg.MaxSize
		s3, err := NewS3(cfg)
		if err != nil {
			return nil, err
		}
		return Observe(s3, o.cfg.Observer), nil
	}
	if root == "" {
		root = "/"
	}
	if !filepath.IsAbs(root) {
		return nil, fmt.Errorf("%w: local root %q must be absolute", ErrInvalidPath, root)
	}
	l := o.localDevice(filepath.Clean(root))
	if l.root != "/" {
		if _, _, err := l.locate(l.root); err != nil {
			return nil, err
		}
	}
	return Observe(l, o.cfg.Observer), nil
}

// localDevice is the local device with root, kept to the storage roots.
func (o *Opener) localDevice(root string) *Local {
	return &Local{root: root, roots: o.roots, rootsText: o.rootsText, setting: EnvStorageRoots, maxSize: o.cfg.MaxSize}
}

// CheckPath tells cheaply, before any work, whether p can be used as a
// source or a destination: for the local device it must lie beneath a
// storage root that exists as a directory (one lstat, nothing beneath the
// root is opened: links in p are resolved only when it is used). For
// S3-family devices only the path's form is checked.
func (o *Opener) CheckPath(p string) error {
	if p == "" || hasDotDot(p) || strings.ContainsRune(p, 0) {
		return fmt.Errorf("%w: %q", ErrInvalidPath, p)
	}
	if !o.local {
		return nil
	}
	root, _, err := o.localDevice("/").resolve(p)
	if err != nil {
		return err
	}
	st, err := os.Lstat(root)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return &opError{kind: ErrNotFound, msg: fmt.Sprintf("the storage root %s of %s does not exist", root, p), err: err}
	case err != nil:
		return fmt.Errorf("storage: storage root %s: %w", root, err)
	case !st.IsDir():
		return &opError{kind: ErrNotFound, msg: fmt.Sprintf("the storage root %s of %s is not a directory (a root may not be a symbolic link: name its target)", root, p)}
	}
	return nil
}

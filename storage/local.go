package storage

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// Local is a device on the local filesystem. Root is an absolute directory and
// object paths are absolute host paths inside it.
type Local struct {
	root string
}

// NewLocal returns a local device rooted at root ("/" when empty).
func NewLocal(root string) (*Local, error) {
	if root == "" {
		root = "/"
	}
	if !filepath.IsAbs(root) {
		return nil, fmt.Errorf("storage: local root %q must be absolute", root)
	}
	return &Local{root: filepath.Clean(root)}, nil
}

// Root returns the device root.
func (l *Local) Root() string { return l.root }

// resolve maps an object path onto the filesystem, refusing paths with a ".."
// segment and anything that would leave the root. Relative paths are taken
// relative to the root.
func (l *Local) resolve(p string) (string, error) {
	if p == "" || strings.ContainsRune(p, 0) {
		return "", fmt.Errorf("%w: %q", ErrInvalidPath, p)
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == ".." {
			return "", fmt.Errorf("%w: %q", ErrInvalidPath, p)
		}
	}
	var full string
	if path.IsAbs(p) {
		full = filepath.Clean(p)
	} else {
		full = filepath.Join(l.root, p)
	}
	if l.root != "/" && full != l.root && !strings.HasPrefix(full, l.root+"/") {
		// An absolute path outside the root is read relative to it, the way
		// the reference's local device prefixes its root.
		full = filepath.Join(l.root, full)
	}
	return full, nil
}

// Read opens the file at p.
func (l *Local) Read(ctx context.Context, p string) (io.ReadCloser, error) {
	full, err := l.resolve(p)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(full)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s", ErrNotFound, p)
		}
		return nil, fmt.Errorf("storage: open %s: %w", p, err)
	}
	if st, err := f.Stat(); err == nil && st.IsDir() {
		f.Close()
		return nil, fmt.Errorf("%w: %s is a directory", ErrNotFound, p)
	}
	return f, nil
}

// Write copies r to a temporary file beside p, syncs it and renames it into
// place, so a reader never sees a partial object.
func (l *Local) Write(ctx context.Context, p string, r io.Reader) (int64, error) {
	full, err := l.resolve(p)
	if err != nil {
		return 0, err
	}
	dir := filepath.Dir(full)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, fmt.Errorf("storage: create %s: %w", dir, err)
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	tmp := filepath.Join(dir, ".tmp-"+hex.EncodeToString(rnd[:]))
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return 0, fmt.Errorf("storage: create %s: %w", p, err)
	}
	n, err := io.Copy(f, &ctxReader{ctx: ctx, r: r})
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, full)
	}
	if err != nil {
		os.Remove(tmp)
		return 0, fmt.Errorf("storage: write %s: %w", p, err)
	}
	return n, nil
}

// Exists reports whether a regular file exists at p.
func (l *Local) Exists(ctx context.Context, p string) (bool, error) {
	full, err := l.resolve(p)
	if err != nil {
		return false, err
	}
	st, err := os.Stat(full)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("storage: stat %s: %w", p, err)
	}
	return st.Mode().IsRegular(), nil
}

// Delete removes the file at p.
func (l *Local) Delete(ctx context.Context, p string) error {
	full, err := l.resolve(p)
	if err != nil {
		return err
	}
	if err := os.Remove(full); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("storage: delete %s: %w", p, err)
	}
	return nil
}

// ctxReader stops a copy when its context ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

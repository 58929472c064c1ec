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
	"syscall"

	"executor/storage/safefs"
)

// Local is a device on the local filesystem. Object paths are absolute host
// paths, and each must lie beneath one of the device's storage roots: the
// name is checked against the roots before anything is opened, then opened
// beneath the root's directory fd (safefs), so that symbolic links are
// followed only while they stay inside the root. A root such as /tmp is
// writable by every host user; a link planted there never leads out.
//
// Only regular files are read: a directory, FIFO, socket or device is
// refused at once, never waited on. Reads and writes stop when their
// context ends and fail with ErrTooLarge past the size limit. Files are
// written 0600 and directories made 0700, owned by the daemon: tenant code
// is not for other host users to read.
type Local struct {
	root      string   // device root: "/" for sources, else a directory
	roots     []string // storage roots, clean, longest first
	rootsText string   // the roots as configured, for messages
	setting   string   // the variable naming the roots, for messages ("" for NewLocal)
	maxSize   int64    // 0 = no cap
	// create makes a missing root on Write: only for a directory the
	// daemon owns (NewLocal); configured storage roots are never created.
	create bool
	// tempName names the temporary file of a Write (tests plant links at it).
	tempName func() string
}

// NewLocal returns a local device confined to root, a directory the daemon
// owns (the build cache under its data dir): paths outside root are taken
// relative to it, and Write creates root (0700) when it is missing.
func NewLocal(root string) (*Local, error) {
	roots, err := cleanRoots([]string{root})
	if err != nil {
		return nil, fmt.Errorf("storage: local device: %w", err)
	}
	return &Local{root: roots[0], roots: roots, rootsText: roots[0], create: true}, nil
}

// Root returns the device root.
func (l *Local) Root() string { return l.root }

// locate finds the storage root holding the clean absolute path full and
// full's name relative to it ("" when full is the root itself).
func (l *Local) locate(full string) (root, rel string, err error) {
	for _, r := range l.roots {
		switch {
		case full == r:
			return r, "", nil
		case r == "/":
			return r, full[1:], nil
		case strings.HasPrefix(full, r+"/"):
			return r, full[len(r)+1:], nil
		}
	}
	if l.setting == "" {
		return "", "", &opError{kind: ErrOutsideRoots, msg: fmt.Sprintf("%s is outside the device root %s", full, l.rootsText)}
	}
	return "", "", &opError{kind: ErrOutsideRoots, msg: fmt.Sprintf("%s is outside the storage roots (%s=%s)", full, l.setting, l.rootsText)}
}

// resolve maps an object path onto a storage root and a name beneath it,
// refusing paths with a ".." segment. Relative paths are taken relative to
// the device root, and so is an absolute path outside it, the way the
// reference's local device prefixes its root.
func (l *Local) resolve(p string) (root, rel string, err error) {
	if p == "" || strings.ContainsRune(p, 0) || hasDotDot(p) {
		return "", "", fmt.Errorf("%w: %q", ErrInvalidPath, p)
	}
	var full string
	if path.IsAbs(p) {
		full = filepath.Clean(p)
	} else {
		full = filepath.Join(l.root, p)
	}
	if l.root != "/" && full != l.root && !strings.HasPrefix(full, l.root+"/") {
		full = filepath.Join(l.root, full)
	}
	return l.locate(full)
}

// openRoot opens a storage root as the directory everything beneath it is
// resolved in.
func (l *Local) openRoot(root string, create bool) (*safefs.Dir, error) {
	opts := safefs.Options{FollowBeneath: true}
	d, err := safefs.OpenDir(root, opts)
	if errors.Is(err, fs.ErrNotExist) && create && l.create {
		if err = os.MkdirAll(root, 0o700); err == nil {
			d, err = safefs.OpenDir(root, opts)
		}
	}
	switch {
	case err == nil:
		return d, nil
	case errors.Is(err, fs.ErrNotExist):
		return nil, &opError{kind: ErrNotFound, msg: fmt.Sprintf("the storage root %s does not exist", root), err: err}
	case errors.Is(err, syscall.ENOTDIR), errors.Is(err, safefs.ErrSymlink):
		return nil, &opError{msg: fmt.Sprintf("the storage root %s is not a directory (a root may not be a symbolic link: name its target)", root), err: err}
	}
	return nil, fmt.Errorf("storage: open the storage root %s: %w", root, err)
}

// fail turns an error of safefs beneath root into the device's kinds, with
// a message that names p and the rule.
func (l *Local) fail(op, p, root string, err error) error {
	var kind error
	var msg string
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
		kind, msg = ErrNotFound, fmt.Sprintf("%v: %s", ErrNotFound, p)
	case errors.Is(err, safefs.ErrEscape):
		kind, msg = ErrOutsideRoots, fmt.Sprintf("%s leads out of its storage root %s through a symbolic link", p, root)
	case errors.Is(err, safefs.ErrNotRegular):
		kind, msg = ErrNotRegular, fmt.Sprintf("%s is not a regular file (a directory, FIFO, socket or device)", p)
	case errors.Is(err, safefs.ErrSymlink):
		// Only without openat2, where a link as the last element is not
		// followed even inside the root.
		kind, msg = ErrNotRegular, fmt.Sprintf("%s is a symbolic link, which this kernel cannot follow safely (5.6+ can)", p)
	case errors.Is(err, safefs.ErrInvalidName):
		kind, msg = ErrInvalidPath, fmt.Sprintf("%v: %q", ErrInvalidPath, p)
	default:
		msg = fmt.Sprintf("storage: %s %s: %v", op, p, err)
	}
	return &opError{kind: kind, msg: msg, err: err}
}

// Read opens the regular file at p. Its size is checked against the limit
// before a byte is read.
func (l *Local) Read(ctx context.Context, p string) (io.ReadCloser, error) {
	root, rel, err := l.resolve(p)
	if err != nil {
		return nil, err
	}
	if rel == "" {
		return nil, &opError{kind: ErrNotRegular, msg: fmt.Sprintf("%s is not a regular file (it is a storage root)", p)}
	}
	d, err := l.openRoot(root, false)
	if errors.Is(err, ErrNotFound) {
		return nil, &opError{kind: ErrNotFound, msg: fmt.Sprintf("%v: %s (%v)", ErrNotFound, p, err), err: err}
	}
	if err != nil {
		return nil, err
	}
	defer d.Close()
	f, st, err := d.Open(rel)
	if err != nil {
		return nil, l.fail("read", p, root, err)
	}
	if l.maxSize > 0 && st.Size() > l.maxSize {
		f.Close()
		return nil, tooLarge(p, l.maxSize)
	}
	return &localReader{f: f, r: &limitReader{ctx: ctx, r: f, max: l.maxSize, path: p}}, nil
}

type localReader struct {
	f *os.File
	r io.Reader
}

func (r *localReader) Read(b []byte) (int, error) { return r.r.Read(b) }
func (r *localReader) Close() error               { return r.f.Close() }

// Write copies r to a new temporary file beside p (created exclusively:
// a link planted at its name is refused, never written through), syncs it
// and renames it over p (a link at p is replaced, not followed), so a
// reader never sees a partial object. Missing directories are made one
// level at a time beneath the root.
func (l *Local) Write(ctx context.Context, p string, r io.Reader) (int64, error) {
	root, rel, err := l.resolve(p)
	if err != nil {
		return 0, err
	}
	if rel == "" {
		return 0, fmt.Errorf("%w: %s is a storage root, not a file", ErrInvalidPath, p)
	}
	d, err := l.openRoot(root, true)
	if err != nil {
		return 0, err
	}
	defer d.Close()
	dir := path.Dir(rel)
	if dir == "." {
		dir = ""
	} else {
		if err := mkdirAll(d, dir); err != nil {
			return 0, l.fail("write", p, root, err)
		}
		dir += "/"
	}
	newName := l.tempName
	if newName == nil {
		newName = randomTempName
	}
	var f *os.File
	var tmp string
	// A name taken (by chance, or by a link somebody planted) is skipped.
	for try := 0; try < 3; try++ {
		tmp = dir + newName()
		if f, err = d.Create(tmp, 0o600); !errors.Is(err, fs.ErrExist) {
			break
		}
	}
	if err != nil {
		return 0, l.fail("write", p, root, err)
	}
	n, err := io.Copy(f, &limitReader{ctx: ctx, r: r, max: l.maxSize, path: p})
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = d.Rename(tmp, rel)
	}
	if err != nil {
		d.Remove(tmp)
		if errors.Is(err, ErrTooLarge) {
			return 0, err
		}
		return 0, fmt.Errorf("storage: write %s: %w", p, err)
	}
	return n, nil
}

// mkdirAll makes dir and its parents beneath d, one level at a time, 0700.
// An existing entry is used as it is: a directory, or a link that safefs
// then follows only while it stays beneath d.
func mkdirAll(d *safefs.Dir, dir string) error {
	segs := strings.Split(dir, "/")
	for i := range segs {
		if err := d.Mkdir(strings.Join(segs[:i+1], "/"), 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
	}
	return nil
}

func randomTempName() string {
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	return ".tmp-" + hex.EncodeToString(rnd[:])
}

// Exists reports whether a regular file exists at p.
func (l *Local) Exists(ctx context.Context, p string) (bool, error) {
	root, rel, err := l.resolve(p)
	if err != nil || rel == "" {
		return false, err
	}
	d, err := l.openRoot(root, false)
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer d.Close()
	f, _, err := d.Open(rel)
	if err == nil {
		f.Close()
		return true, nil
	}
	if err = l.fail("stat", p, root, err); errors.Is(err, ErrNotFound) || errors.Is(err, ErrNotRegular) {
		return false, nil
	}
	return false, err
}

// Delete removes the file at p (a link there itself, never its target).
func (l *Local) Delete(ctx context.Context, p string) error {
	root, rel, err := l.resolve(p)
	if err != nil {
		return err
	}
	if rel == "" {
		return fmt.Errorf("%w: %s is a storage root, not a file", ErrInvalidPath, p)
	}
	d, err := l.openRoot(root, false)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Remove(rel); err != nil {
		if err = l.fail("delete", p, root, err); errors.Is(err, ErrNotFound) {
			return nil
		}
		return err
	}
	return nil
}

// limitReader stops a copy when its context ends, and fails with
// ErrTooLarge when more than max bytes (0: no cap) come through. The
// context is checked before every chunk; a reader that can block must
// itself honour it (files and S3 bodies do not block for long).
type limitReader struct {
	ctx  context.Context
	r    io.Reader
	max  int64
	n    int64
	path string
}

func (c *limitReader) Read(b []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	if c.max > 0 && c.n > c.max {
		return 0, tooLarge(c.path, c.max)
	}
	// Ask for one byte past the cap, to tell "exactly max" from "more".
	if c.max > 0 && int64(len(b)) > c.max-c.n+1 {
		b = b[:c.max-c.n+1]
	}
	n, err := c.r.Read(b)
	c.n += int64(n)
	if c.max > 0 && c.n > c.max {
		return 0, tooLarge(c.path, c.max)
	}
	return n, err
}

func tooLarge(p string, max int64) error {
	return &opError{kind: ErrTooLarge, msg: fmt.Sprintf("%s is larger than the size limit of %d bytes", p, max)}
}

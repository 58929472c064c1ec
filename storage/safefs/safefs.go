// Package safefs touches files beneath a directory whose contents somebody
// else controls: a runtime's mounted directories, its root, a storage root
// that other users can write. Every path is resolved beneath an open
// directory without following symbolic links out of it (by default without
// following any), files are opened without blocking and accepted only when
// they are regular, and reads stop at a stated size.
//
// A runtime can replace any name in its directories at any moment, also
// between a check and a use: a symlink to a host file (it resolves in the
// daemon's mount namespace), a FIFO (a plain open blocks forever), a device
// node, a sparse file of a terabyte. Checking a path and then opening it
// cannot be made safe; opening it beneath a directory fd with the kernel
// refusing links, and then checking the open fd, can.
package safefs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	pathrs "github.com/cyphar/filepath-securejoin/pathrs-lite"
	"golang.org/x/sys/unix"
)

var (
	// ErrSymlink: the path goes through a symbolic link where none is allowed.
	ErrSymlink = errors.New("safefs: path goes through a symbolic link")
	// ErrEscape: the path, or a link in it, leads out of the directory.
	ErrEscape = errors.New("safefs: path leads out of its directory")
	// ErrNotRegular: the file is a FIFO, socket, device or directory.
	ErrNotRegular = errors.New("safefs: not a regular file")
	// ErrTooLarge: the file holds more bytes than its cap.
	ErrTooLarge = errors.New("safefs: file is larger than its limit")
	// ErrInvalidName: the name is absolute, empty, or has "..", NUL or an
	// empty segment.
	ErrInvalidName = errors.New("safefs: invalid name")
)

// Options choose how paths beneath a Dir resolve.
type Options struct {
	// FollowBeneath lets symbolic links be followed as long as they
	// resolve beneath the directory (absolute links and links that climb
	// out fail with ErrEscape). Without it no link is followed at all,
	// which is what directories a runtime writes need.
	FollowBeneath bool
}

// Dir is an open directory. Its methods take names relative to it.
type Dir struct {
	f       *os.File
	opts    Options
	openat2 bool // the kernel has openat2 (5.6+) and nothing filters it
}

// OpenDir opens the directory at path. path itself is trusted (the caller
// made it); its last element must not be a symbolic link.
func OpenDir(path string, opts Options) (*Dir, error) {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: mapErrno(err)}
	}
	d := &Dir{f: os.NewFile(uintptr(fd), path), opts: opts}
	d.openat2 = probeOpenat2(fd)
	return d, nil
}

// probeOpenat2 tells whether openat2 works here. Kernels before 5.6 answer
// ENOSYS; some container runtimes' seccomp profiles answer EPERM.
func probeOpenat2(dirfd int) bool {
	fd, err := unix.Openat2(dirfd, ".", &unix.OpenHow{Flags: unix.O_PATH | unix.O_CLOEXEC, Resolve: unix.RESOLVE_BENEATH})
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
}

// OpenDir opens the directory name beneath d as a Dir of its own, with d's
// options, reached as d's other names are (no link followed unless
// FollowBeneath allows it). A caller that works on several files of one
// subdirectory resolves it once this way instead of once per name.
func (d *Dir) OpenDir(name string) (*Dir, error) {
	fd, err := d.openat(name, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	return &Dir{f: os.NewFile(uintptr(fd), d.f.Name()+"/"+name), opts: d.opts, openat2: d.openat2}, nil
}

// Close releases the directory.
func (d *Dir) Close() error { return d.f.Close() }

// Name is the path the directory was opened at.
func (d *Dir) Name() string { return d.f.Name() }

// checkName accepts a relative, clean name: segments separated by single
// slashes, none of them "", "." or "..", no NUL.
func checkName(name string) error {
	if name == "" || strings.HasPrefix(name, "/") || strings.ContainsRune(name, 0) {
		return fmt.Errorf("%w: %q", ErrInvalidName, name)
	}
	for _, seg := range strings.Split(name, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("%w: %q", ErrInvalidName, name)
		}
	}
	return nil
}

// mapErrno turns the kernel's answers to resolution flags into our errors.
func mapErrno(err error) error {
	switch {
	case errors.Is(err, unix.ELOOP):
		return fmt.Errorf("%w (%v)", ErrSymlink, err)
	case errors.Is(err, unix.EXDEV):
		return fmt.Errorf("%w (%v)", ErrEscape, err)
	case errors.Is(err, unix.ENXIO):
		// O_WRONLY|O_NONBLOCK on a FIFO without a reader, or a socket.
		return fmt.Errorf("%w (%v)", ErrNotRegular, err)
	}
	return err
}

// openat opens name beneath d with flags (O_CLOEXEC, O_NOCTTY and
// O_NONBLOCK are always added). The last element is never followed when it
// is a link, unless FollowBeneath is set.
func (d *Dir) openat(name string, flags int, mode uint32) (int, error) {
	if err := checkName(name); err != nil {
		return -1, err
	}
	flags |= unix.O_CLOEXEC
	if flags&unix.O_PATH == 0 {
		// openat2 refuses these beside O_PATH, which needs neither.
		flags |= unix.O_NOCTTY | unix.O_NONBLOCK
	}
	if d.openat2 {
		// RESOLVE_NO_SYMLINKS covers the last element too; O_NOFOLLOW
		// beside O_PATH would instead open a link there as itself.
		resolve := uint64(unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS)
		if !d.opts.FollowBeneath {
			resolve |= unix.RESOLVE_NO_SYMLINKS
		}
		how := &unix.OpenHow{Flags: uint64(flags), Mode: uint64(mode), Resolve: resolve}
		for {
			fd, err := unix.Openat2(int(d.f.Fd()), name, how)
			// EAGAIN: a rename elsewhere raced with RESOLVE_BENEATH's
			// check; the kernel asks to retry.
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				return -1, mapErrno(err)
			}
			return fd, nil
		}
	}
	if d.opts.FollowBeneath {
		return d.openInRoot(name, flags, mode)
	}
	return d.walk(name, flags|unix.O_NOFOLLOW, mode)
}

// walk resolves name one element at a time, refusing every link: the way
// to do without openat2.
func (d *Dir) walk(name string, flags int, mode uint32) (int, error) {
	segs := strings.Split(name, "/")
	cur := int(d.f.Fd())
	owned := false
	defer func() {
		if owned {
			unix.Close(cur)
		}
	}()
	for _, seg := range segs[:len(segs)-1] {
		next, err := unix.Openat(cur, seg, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			err = linkENOTDIR(cur, seg, err)
			return -1, mapErrno(err)
		}
		if owned {
			unix.Close(cur)
		}
		cur, owned = next, true
	}
	fd, err := unix.Openat(cur, segs[len(segs)-1], flags, mode)
	if err != nil {
		return -1, mapErrno(linkENOTDIR(cur, segs[len(segs)-1], err))
	}
	return fd, nil
}

// linkENOTDIR turns the ENOTDIR of O_DIRECTORY|O_NOFOLLOW on a link (which
// O_PATH opens as itself) into ELOOP, so the caller hears it was a link.
func linkENOTDIR(dirfd int, name string, err error) error {
	if !errors.Is(err, unix.ENOTDIR) {
		return err
	}
	var st unix.Stat_t
	if unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
		return unix.ELOOP
	}
	return err
}

// Open opens the regular file name for reading. It never blocks (a FIFO
// is refused, not waited on) and returns the file with its status, taken
// from the open fd so that a later swap of the name changes nothing.
func (d *Dir) Open(name string) (*os.File, fs.FileInfo, error) {
	fd, err := d.openat(name, unix.O_RDONLY, 0)
	if err != nil {
		return nil, nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	f := os.NewFile(uintptr(fd), name)
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, nil, &fs.PathError{Op: "open", Path: name, Err: fmt.Errorf("%w (%s)", ErrNotRegular, st.Mode().Type())}
	}
	// Reads of a regular file do not block; clearing O_NONBLOCK keeps
	// the runtime poller out of it, as os.Open does for regular files.
	if err := unix.SetNonblock(fd, false); err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, st, nil
}

// ReadFile reads at most limit bytes of the regular file name. size is the
// file's size when it was opened, which may exceed limit: the caller
// decides whether that is a truncation or an error.
//
// It works on the bare fd: an *os.File would cost four more system calls a
// file (its poller registration, refused for a regular file, and clearing
// O_NONBLOCK, which reads of a regular file ignore), and every execution
// with logs reads two files.
func (d *Dir) ReadFile(name string, limit int64) (data []byte, size int64, err error) {
	return d.readFile(name, limit, false)
}

// Drain reads at most limit bytes of the regular file name as ReadFile does
// and then empties it, keeping the file (and whoever holds it open) for the
// next use: a log file that is written, read and emptied again costs no
// inode made and freed each time. A file that a stat beneath d (no link
// followed) finds regular and empty is not opened at all.
func (d *Dir) Drain(name string, limit int64) (data []byte, size int64, err error) {
	fd, base, owned, err := d.parent(name)
	if err != nil {
		return nil, 0, &fs.PathError{Op: "stat", Path: name, Err: err}
	}
	var st unix.Stat_t
	err = unix.Fstatat(fd, base, &st, unix.AT_SYMLINK_NOFOLLOW)
	if owned {
		unix.Close(fd)
	}
	if err != nil {
		return nil, 0, &fs.PathError{Op: "stat", Path: name, Err: err}
	}
	switch {
	case st.Mode&unix.S_IFMT == unix.S_IFLNK:
		return nil, 0, &fs.PathError{Op: "open", Path: name, Err: ErrSymlink}
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		// Not opened for writing, whatever it is.
		return nil, 0, &fs.PathError{Op: "open", Path: name, Err: fmt.Errorf("%w (%s)", ErrNotRegular, modeType(st.Mode))}
	case st.Size == 0:
		return nil, 0, nil
	}
	return d.readFile(name, limit, true)
}

// readFile is ReadFile, and Drain once the file is known to be worth
// opening: then the file is opened for writing too, and emptied once read.
func (d *Dir) readFile(name string, limit int64, drain bool) (data []byte, size int64, err error) {
	flags := unix.O_RDONLY
	if drain {
		flags = unix.O_RDWR
	}
	fd, err := d.openat(name, flags, 0)
	if err != nil {
		return nil, 0, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, 0, &fs.PathError{Op: "stat", Path: name, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, 0, &fs.PathError{Op: "open", Path: name, Err: fmt.Errorf("%w (%s)", ErrNotRegular, modeType(st.Mode))}
	}
	// The size is a hint (the file may grow or shrink meanwhile): one
	// byte more than it lets a file that did not change end in one read.
	buf := make([]byte, 0, min(max(st.Size, 0), limit)+1)
	for int64(len(buf)) < limit {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := unix.Read(fd, buf[len(buf):len(buf)+int(min(int64(cap(buf)-len(buf)), limit-int64(len(buf))))])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, 0, &fs.PathError{Op: "read", Path: name, Err: err}
		}
		if n == 0 {
			break
		}
		buf = buf[:len(buf)+n]
	}
	if drain && (st.Size > 0 || len(buf) > 0) {
		if err := unix.Ftruncate(fd, 0); err != nil {
			return nil, 0, &fs.PathError{Op: "truncate", Path: name, Err: err}
		}
	}
	return buf, st.Size, nil
}

// modeType is the type bits of a stat mode as fs.FileMode spells them.
func modeType(m uint32) fs.FileMode {
	switch m & unix.S_IFMT {
	case unix.S_IFDIR:
		return fs.ModeDir
	case unix.S_IFLNK:
		return fs.ModeSymlink
	case unix.S_IFIFO:
		return fs.ModeNamedPipe
	case unix.S_IFSOCK:
		return fs.ModeSocket
	case unix.S_IFCHR:
		return fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFBLK:
		return fs.ModeDevice
	}
	return fs.ModeIrregular
}

// Create makes name anew (it must not exist: a planted link or file is
// refused, never written through) for writing.
func (d *Dir) Create(name string, perm fs.FileMode) (*os.File, error) {
	fd, err := d.openat(name, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, uint32(perm.Perm()))
	if err != nil {
		return nil, &fs.PathError{Op: "create", Path: name, Err: err}
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), name), nil
}

// WriteFile creates name anew with data.
func (d *Dir) WriteFile(name string, data []byte, perm fs.FileMode) error {
	f, err := d.Create(name, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// parent opens the directory holding name and returns it with name's last
// element. The caller closes the fd when it is not d's own.
func (d *Dir) parent(name string) (fd int, base string, owned bool, err error) {
	if err := checkName(name); err != nil {
		return -1, "", false, err
	}
	i := strings.LastIndexByte(name, '/')
	if i < 0 {
		return int(d.f.Fd()), name, false, nil
	}
	fd, err = d.openat(name[:i], unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return -1, "", false, err
	}
	return fd, name[i+1:], true, nil
}

// Mkdir makes the directory name; its parent must exist.
func (d *Dir) Mkdir(name string, perm fs.FileMode) error {
	fd, base, owned, err := d.parent(name)
	if err != nil {
		return &fs.PathError{Op: "mkdir", Path: name, Err: err}
	}
	if owned {
		defer unix.Close(fd)
	}
	if err := unix.Mkdirat(fd, base, uint32(perm.Perm())); err != nil {
		return &fs.PathError{Op: "mkdir", Path: name, Err: err}
	}
	return nil
}

// Remove removes the file (not directory) name. A link is removed itself,
// never its target.
func (d *Dir) Remove(name string) error {
	fd, base, owned, err := d.parent(name)
	if err != nil {
		return &fs.PathError{Op: "remove", Path: name, Err: err}
	}
	if owned {
		defer unix.Close(fd)
	}
	if err := unix.Unlinkat(fd, base, 0); err != nil {
		return &fs.PathError{Op: "remove", Path: name, Err: err}
	}
	return nil
}

// Rename moves oldname to newname, both beneath d, replacing what newname
// names (a link there is replaced, not followed).
func (d *Dir) Rename(oldname, newname string) error {
	ofd, obase, oowned, err := d.parent(oldname)
	if err != nil {
		return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: err}
	}
	if oowned {
		defer unix.Close(ofd)
	}
	nfd, nbase, nowned, err := d.parent(newname)
	if err != nil {
		return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: err}
	}
	if nowned {
		defer unix.Close(nfd)
	}
	if err := unix.Renameat(ofd, obase, nfd, nbase); err != nil {
		return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: err}
	}
	return nil
}

// maxDepth bounds ChownTree's recursion: a runtime can nest directories
// far deeper than a goroutine's stack should follow.
const maxDepth = 256

// ChownTree gives the directory name (or d itself for ".") and everything
// beneath it to uid:gid. Links are changed themselves, never their
// targets, and never descended into.
func (d *Dir) ChownTree(name string, uid, gid int) error {
	var fd int
	var err error
	if name == "." {
		fd, err = unix.Openat(int(d.f.Fd()), ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	} else {
		fd, err = d.openat(name, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	}
	if err != nil {
		return &fs.PathError{Op: "chown", Path: name, Err: err}
	}
	return chownTree(fd, name, uid, gid, 0)
}

// chownTree owns fd and closes it.
func chownTree(fd int, path string, uid, gid, depth int) error {
	dir := os.NewFile(uintptr(fd), path)
	defer dir.Close()
	if err := unix.Fchown(fd, uid, gid); err != nil {
		return &fs.PathError{Op: "chown", Path: path, Err: err}
	}
	if depth >= maxDepth {
		return &fs.PathError{Op: "chown", Path: path, Err: errors.New("directories nested too deep")}
	}
	for {
		entries, err := dir.ReadDir(256)
		for _, e := range entries {
			p := path + "/" + e.Name()
			if e.IsDir() {
				sub, err := unix.Openat(fd, e.Name(), unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
				if err != nil {
					return &fs.PathError{Op: "chown", Path: p, Err: mapErrno(err)}
				}
				if err := chownTree(sub, p, uid, gid, depth+1); err != nil {
					return err
				}
				continue
			}
			if err := unix.Fchownat(fd, e.Name(), uid, gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
				return &fs.PathError{Op: "chown", Path: p, Err: err}
			}
		}
		if err == io.EOF || len(entries) == 0 {
			return nil
		}
		if err != nil {
			return &fs.PathError{Op: "chown", Path: path, Err: err}
		}
	}
}

// Reader returns r read up to limit bytes: one byte more fails with
// ErrTooLarge (rather than silently ending), and ctx ending stops it.
func Reader(ctx context.Context, r io.Reader, limit int64) io.Reader {
	return &cappedReader{ctx: ctx, r: r, left: limit}
}

type cappedReader struct {
	ctx  context.Context
	r    io.Reader
	left int64
}

func (c *cappedReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	// Ask for one byte past the cap, to tell "exactly limit" from "more".
	if int64(len(p)) > c.left+1 {
		p = p[:c.left+1]
	}
	n, err := c.r.Read(p)
	if int64(n) > c.left {
		c.left = -1
		return 0, ErrTooLarge
	}
	c.left -= int64(n)
	return n, err
}

// openInRoot is FollowBeneath without openat2: the directories leading to
// name resolve through filepath-securejoin (links followed, scoped to d);
// the last element is opened without following a link, which is stricter
// than openat2's path but never weaker.
func (d *Dir) openInRoot(name string, flags int, mode uint32) (int, error) {
	cur := int(d.f.Fd())
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		h, err := pathrs.OpenatInRoot(d.f, name[:i])
		if err != nil {
			return -1, mapErrno(err)
		}
		defer h.Close()
		var st unix.Stat_t
		if err := unix.Fstat(int(h.Fd()), &st); err != nil {
			return -1, err
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return -1, unix.ENOTDIR
		}
		cur, name = int(h.Fd()), name[i+1:]
	}
	fd, err := unix.Openat(cur, name, flags|unix.O_NOFOLLOW, mode)
	if err != nil {
		return -1, mapErrno(linkENOTDIR(cur, name, err))
	}
	return fd, nil
}

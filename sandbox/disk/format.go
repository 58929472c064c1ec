package disk

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// formatVersion names templates: change it when mkfsArgs changes, so that
// templates made by an older version are not used.
const formatVersion = "v1"

// features are ext4's defaults in Debian 12's mke2fs.conf without
// has_journal (the disk is thrown away, nothing to recover) and resize_inode
// (never grown; saves writing ~130 reserved descriptor blocks). Listed in
// full after "none" so that the host's mke2fs.conf changes nothing.
const features = "none,ext_attr,dir_index,filetype,extent,flex_bg,sparse_super,large_file,huge_file,dir_nlink,extra_isize,64bit,metadata_csum"

// mkfsArgs are mke2fs's arguments to format path for cfg. On a regular file
// mke2fs punches the whole file ("discard"), which reads back as zeros, so
// it marks every inode table zeroed: the kernel's lazy-init thread has
// nothing to write, and the file stays as sparse as mke2fs left it.
func mkfsArgs(cfg Config, path string) []string {
	return []string{
		"-q", "-F",
		"-b", strconv.Itoa(blockSize),
		"-I", "256",
		"-m", "0",
		"-N", strconv.FormatUint(cfg.inodes(), 10),
		"-O", features,
		"-E", "lazy_itable_init=1,discard",
		path,
		strconv.FormatInt(cfg.size()/blockSize, 10),
	}
}

// e2fsprogsPath finds a program of e2fsprogs (mke2fs, debugfs), also where
// PATH lacks the sbin directories.
func e2fsprogsPath(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found (install e2fsprogs)", name)
}

// e2fsprogs runs an e2fsprogs program on f, which has no name: the child
// reaches it as its fd 3.
func e2fsprogs(ctx context.Context, f *os.File, name string, args ...string) error {
	bin, err := e2fsprogsPath(name)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUnsupported, err)
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.ExtraFiles = []*os.File{f}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", name, err, bytes.TrimSpace(out))
	}
	return nil
}

const childFile = "/proc/self/fd/3"

// mkfs formats f, an open file of cfg.size() bytes.
func mkfs(ctx context.Context, f *os.File, cfg Config) error {
	return e2fsprogs(ctx, f, "mke2fs", mkfsArgs(cfg, childFile)...)
}

// formatTemplate formats f and removes lost+found, which Mount would
// otherwise remove from each disk (reading a directory block and two bitmaps
// through the loop device on the cold-start path).
func formatTemplate(ctx context.Context, f *os.File, cfg Config) error {
	if err := mkfs(ctx, f, cfg); err != nil {
		return err
	}
	return e2fsprogs(ctx, f, "debugfs", "-w", "-R", "rmdir lost+found", childFile)
}

// newTempFile makes a nameless file of size bytes in dir.
func newTempFile(dir string, size int64) (*os.File, error) {
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create backing file in %s: %w", dir, err)
	}
	f := os.NewFile(uintptr(fd), filepath.Join(dir, "(disk)"))
	if err := f.Truncate(size); err != nil {
		f.Close()
		return nil, fmt.Errorf("size backing file: %w", err)
	}
	return f, nil
}

// newBacking makes the disk's formatted backing file in dir. With a template
// it also returns the template's path.
func newBacking(ctx context.Context, dir string, cfg Config) (_ *os.File, tpl string, err error) {
	f, err := newTempFile(dir, cfg.size())
	if err != nil {
		return nil, "", err
	}
	defer func() {
		if err != nil {
			f.Close()
		}
	}()
	if cfg.TemplateDir == "" {
		return f, "", mkfs(ctx, f, cfg)
	}
	src, tpl, err := openTemplate(ctx, cfg)
	if err != nil {
		return nil, "", err
	}
	defer src.Close()
	if err := copySparse(f, src); err != nil {
		return nil, "", fmt.Errorf("copy template %s: %w", tpl, err)
	}
	return f, tpl, nil
}

func templatePath(cfg Config) string {
	return filepath.Join(cfg.TemplateDir, fmt.Sprintf("ext4-%s-%d-%d.img", formatVersion, cfg.size(), cfg.inodes()))
}

// openTemplate opens cfg's template, formatting it first if there is none.
// A template appears whole or not at all: it is formatted as a nameless file
// and then linked into place.
func openTemplate(ctx context.Context, cfg Config) (*os.File, string, error) {
	path := templatePath(cfg)
	f, err := os.Open(path)
	if err == nil {
		fi, err := f.Stat()
		if err == nil && fi.Mode().IsRegular() && fi.Size() == cfg.size() {
			return f, path, nil
		}
		f.Close()
		// Not what this version makes: replace it.
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, "", err
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, "", err
	}
	if err := os.MkdirAll(cfg.TemplateDir, 0o700); err != nil {
		return nil, "", err
	}
	f, err = newTempFile(cfg.TemplateDir, cfg.size())
	if err != nil {
		return nil, "", err
	}
	if err := formatTemplate(ctx, f, cfg); err != nil {
		f.Close()
		return nil, "", err
	}
	// Linking through /proc needs no CAP_DAC_READ_SEARCH (AT_EMPTY_PATH
	// does). EEXIST: a concurrent Mount linked its own first. Any other
	// failure costs only speed: this disk uses f all the same, and the next
	// Mount formats and tries again.
	_ = unix.Linkat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", f.Fd()), unix.AT_FDCWD, path, unix.AT_SYMLINK_FOLLOW)
	return f, path, nil
}

// copySparse copies src's data into dst, which is as large as src and all
// hole, leaving src's holes as holes.
func copySparse(dst, src *os.File) error {
	fi, err := src.Stat()
	if err != nil {
		return err
	}
	size := fi.Size()
	sfd, dfd := int(src.Fd()), int(dst.Fd())
	kernelCopy := true
	var buf []byte
	for off := int64(0); off < size; {
		data, err := unix.Seek(sfd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			return nil // only a hole is left
		}
		if err != nil {
			return fmt.Errorf("seek data: %w", err)
		}
		hole, err := unix.Seek(sfd, data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("seek hole: %w", err)
		}
		for data < hole {
			n := hole - data
			if kernelCopy {
				roff, woff := data, data
				c, err := unix.CopyFileRange(sfd, &roff, dfd, &woff, int(n), 0)
				switch {
				case err == nil && c > 0:
					data += int64(c)
					continue
				case err == nil || errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EINVAL) ||
					errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP):
					// Not between these files (another filesystem): copy by hand.
					kernelCopy = false
					buf = make([]byte, 256<<10)
				default:
					return fmt.Errorf("copy_file_range: %w", err)
				}
			}
			c, err := src.ReadAt(buf[:min(n, int64(len(buf)))], data)
			if c > 0 {
				if _, werr := dst.WriteAt(buf[:c], data); werr != nil {
					return werr
				}
				data += int64(c)
			}
			if err != nil && !(errors.Is(err, io.EOF) && c > 0) {
				return err
			}
		}
		off = hole
	}
	return nil
}

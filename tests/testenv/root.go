package testenv

import (
	"archive/tar"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// WriteRuntimeRoot writes the files of the test runtime image of opts as a
// plain directory tree at dir (which must not exist): what an unpacked image
// root holds, for running the runtime's own start outside any sandbox (the
// baseline a cold start is measured against). opts.Dir is not used.
func WriteRuntimeRoot(dir string, opts ImageOptions) error {
	opts.Dir = dir
	if err := opts.setDefaults(); err != nil {
		return err
	}
	busybox, err := os.ReadFile(opts.Busybox)
	if err != nil {
		return fmt.Errorf("read busybox: %w", err)
	}
	server, err := os.ReadFile(opts.ServerBinary)
	if err != nil {
		return fmt.Errorf("read runtime server: %w", err)
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	// The whiteout layer only removes and adds marker files no start reads.
	for _, e := range append(baseLayer(busybox), runtimeLayer(opts, server)...) {
		p := filepath.Join(dir, strings.TrimSuffix(e.hdr.Name, "/"))
		mode := os.FileMode(e.hdr.Mode).Perm()
		switch e.hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, mode); err != nil {
				return err
			}
			if e.hdr.Mode&0o1000 != 0 { // /tmp, /var/tmp
				mode |= os.ModeSticky
			}
			err = os.Chmod(p, mode)
		case tar.TypeReg:
			err = os.WriteFile(p, e.data, mode)
		case tar.TypeSymlink:
			err = os.Symlink(e.hdr.Linkname, p)
		default:
			err = fmt.Errorf("entry %s: type %c not written", e.hdr.Name, e.hdr.Typeflag)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

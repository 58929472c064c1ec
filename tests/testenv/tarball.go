package testenv

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"os"
	"path"
	"sort"
	"strings"
)

// MakeSourceTarball writes a code.tar.gz holding files (slash-separated
// relative name -> content), as a function's source or build artifact.
// Parent directories get their own entries; "*.sh" files are executable.
func MakeSourceTarball(dest string, files map[string]string) (err error) {
	names := make([]string, 0, len(files))
	for name := range files {
		clean := path.Clean(name)
		if path.IsAbs(clean) || clean == "." || clean == ".." || strings.HasPrefix(clean, "../") {
			return fmt.Errorf("source tarball: invalid file name %q", name)
		}
		names = append(names, name)
	}
	sort.Strings(names)

	f, err := os.Create(dest)
	if err != nil {
		return fmt.Errorf("create %s: %w", dest, err)
	}
	defer func() { err = errors.Join(err, f.Close()) }()
	zw := gzip.NewWriter(f)
	tw := tar.NewWriter(zw)

	dirs := map[string]bool{}
	for _, name := range names {
		clean := path.Clean(name)
		// Directories first, shallowest first, each once.
		var parents []string
		for d := path.Dir(clean); d != "."; d = path.Dir(d) {
			parents = append([]string{d}, parents...)
		}
		for _, d := range parents {
			if dirs[d] {
				continue
			}
			dirs[d] = true
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: 0o755, ModTime: epoch}); err != nil {
				return fmt.Errorf("source tarball %s: %w", d, err)
			}
		}
		mode := int64(0o644)
		if strings.HasSuffix(clean, ".sh") {
			mode = 0o755
		}
		content := files[name]
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: clean, Mode: mode, Size: int64(len(content)), ModTime: epoch}); err != nil {
			return fmt.Errorf("source tarball %s: %w", clean, err)
		}
		if _, err := tw.Write([]byte(content)); err != nil {
			return fmt.Errorf("source tarball %s: %w", clean, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("source tarball: %w", err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("source tarball: %w", err)
	}
	return nil
}

package images

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// hostSecret is the content of the file outside the layer: no file of the layer may ever hold it, unless the
// layer wrote it itself.
const hostSecret = "h0st-s3cr3t-n0t-f0r-layers"

// unpackSeeds are layers in the script tarScript reads: one entry a line, "<typeflag><name>|<arg>|<xattr>=<value>".
// They are the hostile layers of TestUnpackHostileLayers and the layer rules of doc.go: "..", absolute names and
// links, hard links out of the layer and to the layer below, AUFS whiteouts and opaque markers, overlay whiteouts,
// devices, planted overlay xattrs.
var unpackSeeds = []string{
	"5etc/\n0etc/passwd|root:x:0:0::/root:/bin/sh\n2bin/sh|/bin/busybox\n1etc/passwd.bak|etc/passwd",
	"0../escape|x",
	"5a/\n0a/../../escape|x",
	"0/abs/../../x|x",
	"2link|@OUT\n0link/pwned|x",
	"2link|../../../../outside\n0link/pwned|x",
	"2t|/tmp\n0t/pwned|x",
	"2s|@OUT/secret\n0s|overwritten",
	"1pw|/etc/passwd",
	"1pw|../outside/secret",
	"2l|@OUT\n1h|l/secret",
	"2s|@OUT/secret\n1h|s\n0h|overwritten",
	"2d|@OUT\n0d/.wh.secret|",
	"2d|@OUT\n0d/.wh..wh..opq|",
	"5d/\n2d|@OUT",
	"2s|@OUT/secret||trusted.evil=1",
	"2./|@OUT",
	"2a|b\n2b|a\n0a/x|x",
	"3dev/sda|8,0\n4dev/loop0|7,0\n3dev/null|1,3\n3wh|0,0\n1hl|dev/sda",
	"5d/||trusted.overlay.opaque=y\n5e/||user.overlay.redirect=/x\n0f|x|trusted.overlay.metacopy=",
	"0.wh.lf|\n5ld/\n0ld/.wh..wh..opq|\n1x|lf",
	"1x|lf\n1y|ld/f\n1z|ls/secret\n1w|lsecret\n1q|lw",
	"0.wh.lf|\n1x|lf",
	"6fifo|\n0setuid|x\n7cont|x\ngglobal|\nSsparse|x",
	"0a|" + strings.Repeat("x", 100) + "\n1b|a\n1c|b\n0a|replaced",
}

// tarScript builds a layer from a script (see unpackSeeds); "@OUT" in a link stands for the directory outside the
// layer. The first byte of a line is the raw typeflag; an entry archive/tar will not write is left out.
func tarScript(script, outside string) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Unix(1700000000, 0)
	for line := range strings.SplitSeq(script, "\n") {
		if line == "" {
			continue
		}
		typ, rest := line[0], line[1:]
		name, rest, _ := strings.Cut(rest, "|")
		arg, xattr, _ := strings.Cut(rest, "|")
		arg = strings.ReplaceAll(arg, "@OUT", outside)
		hdr := &tar.Header{Typeflag: typ, Name: name, Mode: 0o644, ModTime: mtime, Format: tar.FormatPAX}
		switch typ {
		case tar.TypeReg, tar.TypeCont, tar.TypeGNUSparse:
			hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(arg))
			if typ == tar.TypeCont {
				hdr.Mode |= 0o6000 // setuid and setgid, kept as the image says
			}
		case tar.TypeLink, tar.TypeSymlink:
			hdr.Linkname = arg
		case tar.TypeChar, tar.TypeBlock:
			major, minor, _ := strings.Cut(arg, ",")
			hdr.Devmajor, _ = strconv.ParseInt(major, 10, 32)
			hdr.Devminor, _ = strconv.ParseInt(minor, 10, 32)
		case tar.TypeDir:
			hdr.Mode = 0o755
		}
		if k, v, ok := strings.Cut(xattr, "="); ok {
			hdr.PAXRecords = map[string]string{"SCHILY.xattr." + k: v}
		}
		if tw.WriteHeader(hdr) != nil {
			continue
		}
		if hdr.Size > 0 {
			_, _ = tw.Write([]byte(arg))
		}
	}
	_ = tw.Close()
	return buf.Bytes()
}

// newLowerLayer makes an unpacked layer below the fuzzed one, inside outside: a file, a directory, links out of
// it and a whiteout, for hard links to reach for (copyUp).
func newLowerLayer(t testing.TB, outside string) string {
	t.Helper()
	lower := filepath.Join(outside, "lower")
	for _, d := range []string{lower, filepath.Join(lower, "ld")} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, content := range map[string]string{"lf": "lower file", "ld/f": "lower dir file"} {
		if err := os.WriteFile(filepath.Join(lower, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, target := range map[string]string{"ls": outside, "lrel": "../../outside", "lsecret": filepath.Join(outside, "secret")} {
		if err := os.Symlink(target, filepath.Join(lower, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.Mknod(filepath.Join(lower, "lw"), unix.S_IFCHR, 0); err != nil {
		t.Fatal(err)
	}
	return lower
}

// FuzzUnpackLayer unpacks fuzzed layers over a layer below and checks the promises of unpackLayer and doc.go
// ("Layer safety"): nothing outside the layer directory changes, whether the layer fails or not; no file of the
// layer is a hard link to one outside it or holds the content of one outside it; the only device nodes are
// overlay whiteouts (0/0); a layer that unpacks carries no overlay xattr but the store's opaque markers ("y" on
// directories); a layer past the pull's limits fails with ErrImageTooLarge.
func FuzzUnpackLayer(f *testing.F) {
	requireRoot(f)
	for _, s := range unpackSeeds {
		f.Add(s)
	}
	const maxEntries = 64
	f.Fuzz(func(t *testing.T, script string) {
		sb := newSandbox(t)
		if err := os.WriteFile(filepath.Join(sb.outside, "secret"), []byte(hostSecret), 0o600); err != nil {
			t.Fatal(err)
		}
		lower := newLowerLayer(t, sb.outside)
		layer := tarScript(script, sb.outside)

		unlock := lockHostEtc(t)
		defer unlock()
		before := sb.snapshot(t)
		var x overlayXattrs
		_, err := unpackLayer(bytes.NewReader(layer), sb.dest, unpackOptions{
			budget: newPullBudget(1<<20, maxEntries),
			lower:  func() ([]string, error) { return []string{lower}, nil },
			xattrs: x,
		})
		sb.assertUntouched(t, before)
		if t.Failed() {
			t.Fatalf("layer %q (unpack: %v) changed what lies outside it", script, err)
		}
		if n := tarEntries(layer); err == nil && n > maxEntries {
			t.Fatalf("layer %q of %d entries unpacked past the limit of %d", script, n, maxEntries)
		}
		if cerr := checkLayerDir(sb.dest, x, err == nil, !strings.Contains(script, hostSecret)); cerr != nil {
			t.Fatalf("layer %q (unpack: %v): %v", script, err, cerr)
		}
	})
}

// tarEntries counts the headers of a tar stream, up to its end or the first it cannot read.
func tarEntries(layer []byte) int {
	tr := tar.NewReader(bytes.NewReader(layer))
	n := 0
	for {
		if _, err := tr.Next(); err != nil {
			return n
		}
		n++
	}
}

// checkLayerDir checks what an unpacked layer directory may hold (see FuzzUnpackLayer). Xattrs are checked only
// for a layer that unpacked: a failed one is removed whole by fetchLayer before anything sees it.
func checkLayerDir(dest string, x overlayXattrs, complete, noSecret bool) error {
	links := map[uint64]int{}    // inode -> names found in the layer
	nlinks := map[uint64]int{}   // inode -> its link count
	names := map[uint64]string{} // inode -> one name, for the message
	buf := make([]byte, 4096)
	err := filepath.WalkDir(dest, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		switch {
		case fi.Mode()&fs.ModeDevice != 0 && !isWhiteout(fi):
			return fmt.Errorf("%s is a device node (%v, rdev %d)", p, fi.Mode(), st.Rdev)
		case fi.Mode().IsRegular():
			links[st.Ino]++
			nlinks[st.Ino] = int(st.Nlink)
			names[st.Ino] = p
			if noSecret && fi.Size() == int64(len(hostSecret)) {
				if data, err := os.ReadFile(p); err == nil && string(data) == hostSecret {
					return fmt.Errorf("%s holds the content of a file outside the layer", p)
				}
			}
		}
		if !complete {
			return nil
		}
		xattrs, err := listXattrs(p, &buf)
		if err != nil {
			return err
		}
		for _, name := range xattrs {
			if !isOverlayXattr(name) {
				continue
			}
			if name != x.opaque() || !d.IsDir() || !isOpaqueDir(p, x) {
				v, _ := getXattr(p, name)
				return fmt.Errorf("%s carries the overlay xattr %s=%q", p, name, v)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for ino, n := range links {
		if n != nlinks[ino] {
			return fmt.Errorf("%s has %d links, %d of them in the layer: it is linked to a file outside", names[ino], nlinks[ino], n)
		}
	}
	return nil
}

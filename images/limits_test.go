package images

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

// dirBytes is the size of the regular files under dir, and how many entries it holds.
func dirBytes(t testing.TB, dir string) (size, entries int64) {
	t.Helper()
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return nil
		}
		entries++
		if d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				size += fi.Size()
			}
		}
		return nil
	})
	return size, entries
}

// sparseTar is a tar holding one PAX (0.1) sparse file whose apparent size
// is apparent bytes, with 512 bytes of data: the stream stays tiny while
// unpacking would write every byte of it.
func sparseTar(t testing.TB, name string, apparent int64) []byte {
	t.Helper()
	records := ""
	for _, kv := range [][2]string{
		{"GNU.sparse.major", "0"},
		{"GNU.sparse.minor", "1"},
		{"GNU.sparse.numblocks", "1"},
		{"GNU.sparse.map", "0,512"},
		{"GNU.sparse.name", name},
		{"GNU.sparse.realsize", fmt.Sprint(apparent)},
		{"GNU.sparse.size", fmt.Sprint(apparent)},
	} {
		rec := " " + kv[0] + "=" + kv[1] + "\n"
		// The length prefix counts itself.
		n := len(rec) + 1
		for len(fmt.Sprint(n))+len(rec) != n {
			n++
		}
		records += fmt.Sprint(n) + rec
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	// archive/tar writes no extended headers by hand: write a plain entry and
	// turn it into one by its type flag.
	if err := tw.WriteHeader(&tar.Header{Name: "PaxHeaders/" + name, Typeflag: tar.TypeReg, Size: int64(len(records)), Mode: 0o644, Format: tar.FormatUSTAR}); err != nil {
		t.Fatal(err)
	}
	tw.Write([]byte(records))
	if err := tw.WriteHeader(&tar.Header{Name: "GNUSparseFile.0/" + name, Typeflag: tar.TypeReg, Size: 512, Mode: 0o644, Format: tar.FormatUSTAR}); err != nil {
		t.Fatal(err)
	}
	tw.Write(bytes.Repeat([]byte{'x'}, 512))
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	out := buf.Bytes()
	hdr := out[:512]
	hdr[156] = tar.TypeXHeader
	copy(hdr[148:156], "        ")
	sum := 0
	for _, b := range hdr {
		sum += int(b)
	}
	copy(hdr[148:156], fmt.Sprintf("%06o\x00 ", sum))
	// The reader must see it as the sparse file it is.
	tr := tar.NewReader(bytes.NewReader(out))
	h, err := tr.Next()
	if err != nil || h.Name != name || h.Size != apparent {
		t.Fatalf("sparse tar reads as %+v, %v", h, err)
	}
	return out
}

// Unpacking stops at the pull's limits, before the entry that crosses one is
// written, and says which limit it was.
func TestUnpackLimits(t *testing.T) {
	requireRoot(t)
	const limit = 1 << 20
	many := []entry{dir("d/")}
	for i := range 20 {
		many = append(many, file(fmt.Sprintf("d/f%d", i), "x"))
	}
	tests := []struct {
		name       string
		layer      []byte
		maxEntries int64
		want       string // in the message; "" = no error
	}{
		{name: "within the limits", layer: buildTar(t, dir("a/"), file("a/f", strings.Repeat("x", limit/2))), maxEntries: 10},
		{name: "one file over the size", layer: buildTar(t, file("small", "x"), file("big", strings.Repeat("x", limit+1))),
			maxEntries: 10, want: "more than the limit of 1 MiB"},
		{name: "files adding up over the size", layer: buildTar(t, file("a", strings.Repeat("x", limit/2)),
			file("b", strings.Repeat("x", limit/2)), file("c", strings.Repeat("x", 2))),
			maxEntries: 10, want: "more than the limit of 1 MiB"},
		{name: "sparse file of a small stream", layer: sparseTar(t, "sparse", 64<<30), maxEntries: 10,
			want: "more than the limit of 1 MiB"},
		{name: "sparse file within the limits", layer: sparseTar(t, "sparse", 64<<10), maxEntries: 10},
		{name: "too many entries", layer: buildTar(t, many...), maxEntries: 10, want: "more than the limit of 10 files"},
		{name: "exactly the entries", layer: buildTar(t, many[:10]...), maxEntries: 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sb := newSandbox(t)
			budget := newPullBudget(limit, tt.maxEntries)
			_, err := unpackLayer(&meteredReader{r: bytes.NewReader(tt.layer), budget: budget}, sb.dest, unpackOptions{budget: budget})
			size, entries := dirBytes(t, sb.dest)
			t.Logf("err %v; %d bytes in %d entries written", err, size, entries)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrImageTooLarge) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want ErrImageTooLarge saying %q", err, tt.want)
			}
			if size > limit || entries > tt.maxEntries {
				t.Errorf("%d bytes in %d entries written past the limits", size, entries)
			}
		})
	}
}

// A decompression bomb fails the pull with ErrImageTooLarge, whether its
// bytes are in a file or after the end of the archive, and leaves nothing
// behind; the limit is per pull, across its layers.
func TestPullSizeLimits(t *testing.T) {
	requireRoot(t)
	const limit = 4 << 20
	zeros := strings.Repeat("\x00", 64<<20)
	half := strings.Repeat("y", limit/2+1)
	tests := []struct {
		name  string
		image testImage
		cfg   Config
		want  string
	}{
		{name: "gzip bomb in a file", cfg: Config{SizeLimit: limit},
			image: testImage{layers: []testLayer{{compression: "gzip", entries: []entry{file("zeros", zeros)}}}},
			want:  "more than the limit of 4 MiB"},
		{name: "zstd bomb after the end of the archive", cfg: Config{SizeLimit: limit},
			image: testImage{layers: []testLayer{{compression: "zstd", entries: []entry{file("f", "x")}}},
				mangle: func(i int, blob []byte, _ digest.Digest) ([]byte, digest.Digest) {
					raw := append(buildTar(t, file("f", "x")), zeros...)
					c, _ := compressBytes(t, raw, "zstd")
					return c, digest.FromBytes(raw)
				}},
			want: "more than the limit of 4 MiB"},
		{name: "layers adding up", cfg: Config{SizeLimit: limit},
			image: testImage{layers: []testLayer{{entries: []entry{file("a", half)}}, {entries: []entry{file("b", half)}}}},
			want:  "more than the limit of 4 MiB"},
		{name: "entries across layers", cfg: Config{MaxEntries: 3},
			image: testImage{layers: []testLayer{{entries: []entry{file("a", "a"), file("b", "b")}}, {entries: []entry{file("c", "c"), file("d", "d")}}}},
			want:  "more than the limit of 3 files"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestStore(t, tt.cfg)
			l := newLayout(t, t.TempDir())
			_, err := s.Pull(context.Background(), l.tag(l.image(tt.image), "bomb"))
			if !errors.Is(err, ErrImageTooLarge) || !strings.HasPrefix(err.Error(), "image too large: its layers ") ||
				!strings.HasSuffix(err.Error(), tt.want) {
				t.Fatalf("err = %v, want ErrImageTooLarge saying %q", err, tt.want)
			}
			t.Log(err)
			// The layer that crossed is gone; one unpacked before it may stay.
			assertNoPartialState(t, s, 1)
		})
	}
	// Within the limits, the same store pulls.
	s := newTestStore(t, Config{SizeLimit: limit, MaxEntries: 100})
	l := newLayout(t, t.TempDir())
	if _, err := s.Pull(context.Background(), l.tag(l.image(baseImage()), "v1")); err != nil {
		t.Fatal(err)
	}
}

// meteredReader stops a stream at the limit: what an endless stream of
// zeros costs is the limit, not the stream.
func TestMeteredReaderStops(t *testing.T) {
	budget := newPullBudget(1<<20, 10)
	n, err := io.Copy(io.Discard, &meteredReader{r: zeroReader{}, budget: budget})
	if !errors.Is(err, ErrImageTooLarge) || n > 1<<20+64<<10 {
		t.Fatalf("read %d bytes, err %v", n, err)
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// The settings are checked when the store opens.
func TestNewRejectsNegativeLimits(t *testing.T) {
	for _, cfg := range []Config{{SizeLimit: -1}, {MaxEntries: -1}} {
		cfg.Root = filepath.Join(t.TempDir(), "images")
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) accepted a negative limit", cfg)
		}
	}
}

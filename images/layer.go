package images

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	"go.podman.io/image/v5/types"
	"golang.org/x/sys/unix"
)

// ensureLayer makes sure the layer with diffID is unpacked in the store,
// fetching blob from src if it is not. Concurrent callers for one diffID,
// from the same image or from different images, share one unpack.
//
// The layer is charged to budget, the pull's: a layer found in the store
// costs nothing. The owners squashed while unpacking it are reported to
// every pull that waited for the unpack; a layer found in the store reports
// none (the pull that unpacked it did).
func (s *Store) ensureLayer(ctx context.Context, src types.ImageSource, blob types.BlobInfo, diffID digest.Digest, budget *pullBudget) (ownerSquash, error) {
	if err := layerKey(diffID); err != nil {
		return ownerSquash{}, err
	}
	dir := s.layerPath(diffID)
	if exists(dir) {
		return ownerSquash{}, nil
	}
	for attempt := 0; ; attempt++ {
		squashed, err, led := s.layers.do(ctx, diffID.Encoded(), func(ctx context.Context) (ownerSquash, error) {
			if exists(dir) {
				return ownerSquash{}, nil
			}
			return s.fetchLayer(ctx, src, blob, diffID, budget)
		})
		// A shared flight ran with another pull's source, which that pull may
		// have closed on its way out; one retry with our own source settles it.
		if err == nil || led || ctx.Err() != nil || attempt > 0 {
			return squashed, err
		}
		s.log.Debug("retrying a layer another pull failed to fetch", "diffID", diffID, "err", err)
	}
}

// fetchLayer streams the blob, verifies its digest and the diffID of its
// content, unpacks it into Root/tmp and renames the result into place only
// when all of that succeeded, so Root/layers never shows a partial layer.
// A layer that crosses budget's limits stops there and is removed.
func (s *Store) fetchLayer(ctx context.Context, src types.ImageSource, blob types.BlobInfo, diffID digest.Digest, budget *pullBudget) (_ ownerSquash, err error) {
	if strings.Contains(blob.MediaType, "encrypted") {
		return ownerSquash{}, refuse(ErrBadImage, "layer %s: encrypted layers (%s) are not supported", blob.Digest, blob.MediaType)
	}
	if err := blob.Digest.Validate(); err != nil {
		return ownerSquash{}, fmt.Errorf("layer %s: %w", blob.Digest, err)
	}
	start := time.Now()
	rc, _, err := src.GetBlob(ctx, blob, s.cache)
	if err != nil {
		return ownerSquash{}, fmt.Errorf("fetch layer %s: %w", blob.Digest, err)
	}
	defer rc.Close()

	var body io.Reader = rc
	if blob.Size > 0 {
		// The digest covers exactly Size bytes; never read an endless body.
		body = io.LimitReader(rc, blob.Size)
	}
	blobDigest := blob.Digest.Verifier()
	compressed := &countingReader{r: io.TeeReader(&ctxReader{ctx: ctx, r: body}, blobDigest)}

	tmp, err := os.MkdirTemp(s.tmpDir(), "layer-")
	if err != nil {
		return ownerSquash{}, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	if err := os.Chmod(tmp, 0o755); err != nil {
		return ownerSquash{}, err
	}

	dec, err := decompress(compressed)
	if err != nil {
		return ownerSquash{}, fmt.Errorf("layer %s: %w", blob.Digest, err)
	}
	diffDigest := diffID.Verifier()
	// Metered before the tar reader sees it: a stream of zeros is a valid
	// end of archive, and the rest of it is read for the diffID below.
	content := &meteredReader{r: io.TeeReader(dec, diffDigest), budget: budget}
	var st unpackStats
	st, err = unpackLayer(content, tmp, unpackOptions{idmap: s.cfg.IDMap, budget: budget})
	if err == nil {
		// The tar reader stops at the end-of-archive marker; the padding after
		// it is part of the diffID too.
		_, err = io.Copy(io.Discard, content)
	}
	if st.devices > 0 {
		s.log.Warn("layer holds device nodes; they are left out of the layer store", "diffID", diffID,
			"devices", st.devices, "first", st.firstDevice)
	}
	if cerr := dec.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return ownerSquash{}, fmt.Errorf("layer %s: %w", blob.Digest, err)
	}
	if _, err = io.Copy(io.Discard, compressed); err != nil {
		return ownerSquash{}, fmt.Errorf("layer %s: %w", blob.Digest, err)
	}
	if !blobDigest.Verified() {
		return ownerSquash{}, refuse(ErrBadImage, "layer %s: content does not match its digest (%d bytes read)", blob.Digest, compressed.n)
	}
	if !diffDigest.Verified() {
		return ownerSquash{}, refuse(ErrBadImage, "layer %s: uncompressed content does not match diffID %s", blob.Digest, diffID)
	}

	if err = syncTree(tmp); err != nil {
		return ownerSquash{}, err
	}
	dir := s.layerPath(diffID)
	if err = os.Rename(tmp, dir); err != nil {
		if (errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ENOTEMPTY)) && exists(dir) {
			// Someone else (a flight this one outlived) committed it first.
			os.RemoveAll(tmp)
			return st.owners, nil
		}
		return ownerSquash{}, err
	}
	if err = syncDir(s.layersDir()); err != nil {
		return ownerSquash{}, err
	}
	s.log.Info("layer unpacked", "diffID", diffID, "blob", blob.Digest,
		"compressed", compressed.n, "size", content.n, "duration", time.Since(start))
	return st.owners, nil
}

// decompress recognises the compression by its magic number rather than by
// the media type, which Docker and OCI spell differently and some pushers get
// wrong: gzip, zstd, or none. It never runs external programs.
func decompress(r io.Reader) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	magic, err := br.Peek(4)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		return gzip.NewReader(br)
	case bytes.Equal(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(br)
		if err != nil {
			return nil, err
		}
		return zr.IOReadCloser(), nil
	default:
		return io.NopCloser(br), nil
	}
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// ctxReader stops a copy when ctx ends; local transports (oci:, archives)
// do not look at the context themselves.
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

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

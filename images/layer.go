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

// layerResult is where a layer was unpacked and what unpacking it squashed.
type layerResult struct {
	// key names the layer's dir: its diffID, or its chain ID when its
	// content depends on the layers below it (see fetchLayer).
	key    digest.Digest
	owners ownerSquash
}

// ensureLayer makes sure the layer with diffID, whose chain ID (the diffIDs
// of the layers up to it) is chainID, is unpacked in the store, fetching
// blob from src if it is not. lower finds the layers below it. Concurrent
// callers for one chain ID, from the same image or from different images,
// share one unpack; one layer in two different chains may be unpacked by
// both, and the first to finish commits it (fetchLayer).
//
// The layer is charged to budget, the pull's: a layer found in the store
// costs nothing. The owners squashed while unpacking it are reported to
// every pull that waited for the unpack; a layer found in the store reports
// none (the pull that unpacked it did).
func (s *Store) ensureLayer(ctx context.Context, src types.ImageSource, blob types.BlobInfo, diffID, chainID digest.Digest, lower lowerFinder, budget *pullBudget) (layerResult, error) {
	if err := layerKey(diffID); err != nil {
		return layerResult{}, err
	}
	if err := layerKey(chainID); err != nil {
		return layerResult{}, err
	}
	found := func() (layerResult, bool) {
		for _, key := range []digest.Digest{diffID, chainID} {
			if exists(s.layerPath(key)) {
				return layerResult{key: key}, true
			}
		}
		return layerResult{}, false
	}
	if r, ok := found(); ok {
		return r, nil
	}
	for attempt := 0; ; attempt++ {
		// Keyed by chain ID: an unpack may read the layers below (lower),
		// and those of one chain are the same whichever pull waits for
		// them. A flight only ever waits for flights of shorter chains, so
		// flights cannot wait for each other in a circle.
		r, err, led := s.layers.do(ctx, chainID.Encoded(), func(ctx context.Context) (layerResult, error) {
			if r, ok := found(); ok {
				return r, nil
			}
			return s.fetchLayer(ctx, src, blob, diffID, chainID, lower, budget)
		})
		// A shared flight ran with another pull's source, which that pull may
		// have closed on its way out; one retry with our own source settles it.
		if err == nil || led || ctx.Err() != nil || attempt > 0 {
			return r, err
		}
		s.log.Debug("retrying a layer another pull failed to fetch", "diffID", diffID, "err", err)
	}
}

// fetchLayer streams the blob, verifies its digest and the diffID of its
// content, unpacks it into Root/tmp and renames the result into place only
// when all of that succeeded, so Root/layers never shows a partial layer.
// A layer that crosses budget's limits stops there and is removed.
//
// A layer is committed under its diffID, and shared by every image that
// has it, unless unpacking it copied files up from the layers below (hard
// links to lower files, see layerFilter.copyUp): its content then depends
// on those layers, and it is committed under its chain ID, which names
// exactly them. Records list these keys (record.Layers), so GC and
// loadImage need not know which is which; a rename either way keeps
// crashes from leaving partial layers.
func (s *Store) fetchLayer(ctx context.Context, src types.ImageSource, blob types.BlobInfo, diffID, chainID digest.Digest, lower lowerFinder, budget *pullBudget) (_ layerResult, err error) {
	if strings.Contains(blob.MediaType, "encrypted") {
		return layerResult{}, refuse(ErrBadImage, "layer %s: encrypted layers (%s) are not supported", blob.Digest, blob.MediaType)
	}
	if err := blob.Digest.Validate(); err != nil {
		return layerResult{}, fmt.Errorf("layer %s: %w", blob.Digest, err)
	}
	start := time.Now()
	rc, _, err := src.GetBlob(ctx, blob, s.cache)
	if err != nil {
		return layerResult{}, fmt.Errorf("fetch layer %s: %w", blob.Digest, err)
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
		return layerResult{}, err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	if err := os.Chmod(tmp, 0o755); err != nil {
		return layerResult{}, err
	}

	dec, err := decompress(compressed)
	if err != nil {
		return layerResult{}, fmt.Errorf("layer %s: %w", blob.Digest, err)
	}
	diffDigest := diffID.Verifier()
	// Metered before the tar reader sees it: a stream of zeros is a valid
	// end of archive, and the rest of it is read for the diffID below.
	content := &meteredReader{r: io.TeeReader(dec, diffDigest), budget: budget}
	var st unpackStats
	st, err = unpackLayer(content, tmp, unpackOptions{idmap: s.cfg.IDMap, budget: budget, lower: lower, xattrs: s.xattrs})
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
		return layerResult{}, fmt.Errorf("layer %s: %w", blob.Digest, err)
	}
	if _, err = io.Copy(io.Discard, compressed); err != nil {
		return layerResult{}, fmt.Errorf("layer %s: %w", blob.Digest, err)
	}
	if !blobDigest.Verified() {
		return layerResult{}, refuse(ErrBadImage, "layer %s: content does not match its digest (%d bytes read)", blob.Digest, compressed.n)
	}
	if !diffDigest.Verified() {
		return layerResult{}, refuse(ErrBadImage, "layer %s: uncompressed content does not match diffID %s", blob.Digest, diffID)
	}

	if err = syncTree(tmp); err != nil {
		return layerResult{}, err
	}
	key := diffID
	if st.copied > 0 {
		key = chainID
	}
	res := layerResult{key: key, owners: st.owners}
	dir := s.layerPath(key)
	if err = os.Rename(tmp, dir); err != nil {
		if (errors.Is(err, unix.EEXIST) || errors.Is(err, unix.ENOTEMPTY)) && exists(dir) {
			// Someone else (a flight this one outlived, or one for
			// another chain) committed it first.
			os.RemoveAll(tmp)
			return res, nil
		}
		return layerResult{}, err
	}
	if err = syncDir(s.layersDir()); err != nil {
		return layerResult{}, err
	}
	attrs := []any{"diffID", diffID, "blob", blob.Digest, "compressed", compressed.n, "size", content.n, "duration", time.Since(start)}
	if st.copied > 0 {
		attrs = append(attrs, "chainID", chainID, "copiedUp", st.copied)
	}
	s.log.Info("layer unpacked", attrs...)
	return res, nil
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

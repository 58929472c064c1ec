package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// PushRaw uploads what desc names in the OCI layout at dir (a manifest, or
// a manifest list with every manifest it lists) to the plain-HTTP registry
// at addr as repo:tag, byte for byte, through the distribution API.
//
// PushImage goes through containers/image, which copies one platform of a
// list and may convert a manifest on the way; this keeps Docker schema 2
// manifests, manifest lists and every blob exactly as built, which is what
// a pull of a real image meets.
func PushRaw(ctx context.Context, addr, repo, tag, dir string, desc ocispec.Descriptor) error {
	p := rawPusher{base: &url.URL{Scheme: "http", Host: addr}, repo: repo, dir: dir, client: http.DefaultClient}
	if err := p.pushManifest(ctx, desc, tag); err != nil {
		return fmt.Errorf("push %s/%s:%s: %w", addr, repo, tag, err)
	}
	return nil
}

type rawPusher struct {
	base   *url.URL
	repo   string
	dir    string
	client *http.Client
}

// pushManifest pushes what the manifest (or list) refers to, then itself
// under ref: a registry refuses a manifest whose blobs it lacks.
func (p rawPusher) pushManifest(ctx context.Context, desc ocispec.Descriptor, ref string) error {
	data, err := p.blob(desc.Digest)
	if err != nil {
		return err
	}
	switch desc.MediaType {
	case ocispec.MediaTypeImageIndex, DockerManifestListMediaType:
		var list ocispec.Index
		if err := json.Unmarshal(data, &list); err != nil {
			return fmt.Errorf("manifest list %s: %w", desc.Digest, err)
		}
		for _, m := range list.Manifests {
			if err := p.pushManifest(ctx, m, m.Digest.String()); err != nil {
				return err
			}
		}
	default:
		var m ocispec.Manifest
		if err := json.Unmarshal(data, &m); err != nil {
			return fmt.Errorf("manifest %s: %w", desc.Digest, err)
		}
		for _, b := range append([]ocispec.Descriptor{m.Config}, m.Layers...) {
			if err := p.pushBlob(ctx, b.Digest); err != nil {
				return err
			}
		}
	}
	u := p.base.JoinPath("v2", p.repo, "manifests", ref)
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u.String(), bytes.NewReader(data))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", desc.MediaType)
	return p.do(req, http.StatusCreated)
}

// pushBlob uploads one blob in a single PUT after opening an upload session.
func (p rawPusher) pushBlob(ctx context.Context, d digest.Digest) error {
	data, err := p.blob(d)
	if err != nil {
		return err
	}
	start := p.base.JoinPath("v2", p.repo, "blobs", "uploads") // the API wants the trailing slash
	start.Path += "/"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, start.String(), nil)
	if err != nil {
		return err
	}
	res, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("start upload of %s: %w", d, err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != http.StatusAccepted {
		return fmt.Errorf("start upload of %s: %s", d, res.Status)
	}
	loc, err := res.Location()
	if err != nil {
		return fmt.Errorf("start upload of %s: %w", d, err)
	}
	q := loc.Query()
	q.Set("digest", d.String())
	loc.RawQuery = q.Encode()
	req, err = http.NewRequestWithContext(ctx, http.MethodPut, loc.String(), bytes.NewReader(data))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	return p.do(req, http.StatusCreated)
}

func (p rawPusher) do(req *http.Request, want int) error {
	res, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
	if res.StatusCode != want {
		return fmt.Errorf("%s %s: %s: %s", req.Method, req.URL.Path, res.Status, bytes.TrimSpace(body))
	}
	return nil
}

func (p rawPusher) blob(d digest.Digest) ([]byte, error) {
	if err := d.Validate(); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(BlobPath(p.dir, d))
	if err != nil {
		return nil, fmt.Errorf("read blob: %w", err)
	}
	return data, nil
}

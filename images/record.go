package images

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/opencontainers/go-digest"
)

// Image is a pulled image whose layers are unpacked on disk.
type Image struct {
	Ref    string   // as given to Pull
	Digest string   // digest of the image manifest that was unpacked (the platform's instance when Ref names a manifest list)
	Layers []string // absolute paths of unpacked layer dirs, bottom (base) layer first
	Config ImageConfig

	key string // record key: identifies the image for use tracking and GC
}

// ImageConfig is the part of the image configuration a runtime needs.
type ImageConfig struct {
	Env        []string `json:"env,omitempty"`
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
	WorkingDir string   `json:"workingDir,omitempty"`
	User       string   `json:"user,omitempty"`
}

// record is what Root/images/<key>.json holds. Layers are the names of the
// layer dirs rather than paths so the store can be moved: a layer's diffID,
// or its chain ID for a layer whose content depends on the layers below it
// (see fetchLayer).
type record struct {
	Name   string          `json:"name"` // canonical reference, transport included
	Digest digest.Digest   `json:"digest"`
	Layers []digest.Digest `json:"layers"` // diffIDs or chain IDs, bottom first
	Config ImageConfig     `json:"config"`
	Pulled time.Time       `json:"pulled"`
}

func (s *Store) recordPath(key string) string {
	return filepath.Join(s.imagesDir(), key+".json")
}

// layerPath is where the layer with this diffID is unpacked. diffID must have
// been validated (layerKey) before it is used to build a path.
func (s *Store) layerPath(diffID digest.Digest) string {
	return filepath.Join(s.layersDir(), diffID.Encoded())
}

// layerKey checks a diffID taken from an image config before it names a
// directory: a hostile config must not be able to say "sha256:../../x".
func layerKey(diffID digest.Digest) error {
	if err := diffID.Validate(); err != nil {
		return fmt.Errorf("layer diffID %q: %w", diffID, err)
	}
	if diffID.Algorithm() != digest.SHA256 {
		return fmt.Errorf("layer diffID %q: only sha256 diffIDs are supported", diffID)
	}
	return nil
}

// loadImage returns the image recorded under key, or an error wrapping
// os.ErrNotExist when it is not (completely) in the store: a record whose
// layers were removed behind the store's back counts as missing.
func (s *Store) loadImage(key string) (*Image, error) {
	data, err := os.ReadFile(s.recordPath(key))
	if err != nil {
		return nil, err
	}
	var rec record
	if err := json.Unmarshal(data, &rec); err != nil {
		return nil, fmt.Errorf("image record %s: %w", s.recordPath(key), err)
	}
	img := &Image{Digest: rec.Digest.String(), Config: rec.Config, Layers: make([]string, 0, len(rec.Layers)), key: key}
	for _, id := range rec.Layers {
		if err := layerKey(id); err != nil {
			return nil, fmt.Errorf("image record %s: %w", s.recordPath(key), err)
		}
		p := s.layerPath(id)
		if _, err := os.Lstat(p); err != nil {
			return nil, fmt.Errorf("image record %s: layer %s: %w", s.recordPath(key), id, err)
		}
		img.Layers = append(img.Layers, p)
	}
	return img, nil
}

func (s *Store) saveImage(key string, rec record) error {
	data, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(s.tmpDir(), s.recordPath(key), data, 0o600)
}

func isMissing(err error) bool { return errors.Is(err, os.ErrNotExist) }

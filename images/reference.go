package images

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"go.podman.io/image/v5/docker"
	dockerarchive "go.podman.io/image/v5/docker/archive"
	"go.podman.io/image/v5/docker/reference"
	ociarchive "go.podman.io/image/v5/oci/archive"
	"go.podman.io/image/v5/oci/layout"
	"go.podman.io/image/v5/transports"
	"go.podman.io/image/v5/types"
)

const dockerTransport = "docker"

// parseReference accepts what `docker pull` accepts ("node", "openruntimes/node:v5-18.0",
// "ghcr.io/x/y@sha256:...") and, with an explicit prefix, the transports
// docker://, oci:, oci-archive: and docker-archive:. Other containers/image
// transports (dir:, docker-daemon:, containers-storage:...) are not accepted:
// this is not a general image copier.
func parseReference(ref string) (types.ImageReference, error) {
	if ref == "" {
		return nil, fmt.Errorf("%w: empty reference", ErrInvalidReference)
	}
	var (
		r   types.ImageReference
		err error
	)
	name, rest, hasPrefix := strings.Cut(ref, ":")
	switch {
	case hasPrefix && name == dockerTransport:
		if !strings.HasPrefix(rest, "//") {
			return nil, fmt.Errorf("%w: %q: docker transport references start with docker://", ErrInvalidReference, ref)
		}
		r, err = docker.ParseReference(rest)
	case hasPrefix && name == "oci":
		r, err = layout.ParseReference(rest)
	case hasPrefix && name == "oci-archive":
		r, err = ociarchive.ParseReference(rest)
	case hasPrefix && name == "docker-archive":
		r, err = dockerarchive.ParseReference(rest)
	default:
		// No transport: docker semantics, short names normalised to docker.io
		// ("node" -> docker.io/library/node:latest), as `docker pull` does.
		r, err = docker.ParseReference("//" + ref)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %w", ErrInvalidReference, ref, err)
	}
	return r, nil
}

// canonicalName is the reference as containers/image spells it, transport
// included: the identity of a pulled image, whatever spelling the caller used.
func canonicalName(r types.ImageReference) string {
	if r.Transport().Name() == dockerTransport {
		if named := r.DockerReference(); named != nil {
			// Fully qualified: containers/image would print "node:latest".
			return "docker://" + named.String()
		}
	}
	return transports.ImageName(r)
}

// imageKey names an image record: hex sha256 of the canonical name.
func imageKey(r types.ImageReference) string {
	sum := sha256.Sum256([]byte(canonicalName(r)))
	return hex.EncodeToString(sum[:])
}

// isDockerHub reports whether r is pulled from docker.io itself, the only
// registry the DockerHub credentials of Config are meant for.
func isDockerHub(r types.ImageReference) bool {
	if r.Transport().Name() != dockerTransport {
		return false
	}
	named := r.DockerReference()
	return named != nil && reference.Domain(named) == "docker.io"
}

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
	"go.podman.io/image/v5/pkg/sysregistriesv2"
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

// hasTransport reports whether ref names one of the transports parseReference
// accepts explicitly.
func hasTransport(ref string) bool {
	name, _, ok := strings.Cut(ref, ":")
	if !ok {
		return false
	}
	switch name {
	case dockerTransport, "oci", "oci-archive", "docker-archive":
		return true
	}
	return false
}

// resolveReference is parseReference plus the short-name aliases of
// containers-registries.conf(5): a reference without a transport and without
// a registry ("node:20", "openruntimes/node:v5-18.0") that has an alias in the
// [aliases] tables of registries.conf (drop-ins included) or in the
// machine-written short-name-aliases.conf is pulled from the alias, with the
// tag or digest the caller gave. Without an alias it is docker.io's, as with
// `docker pull`: unqualified-search-registries are not searched (there is no
// one to ask which match is meant, and Open Runtimes images live on docker.io).
// "docker://name" is always docker.io's, as containers/image's tools do it.
func (s *Store) resolveReference(ref string) (types.ImageReference, error) {
	if ref == "" || hasTransport(ref) {
		return parseReference(ref)
	}
	parsed, err := reference.Parse(ref)
	if err != nil {
		return parseReference(ref) // reports the error the usual way
	}
	named, ok := parsed.(reference.Named)
	if !ok {
		return parseReference(ref)
	}
	if domain := reference.Domain(named); strings.ContainsAny(domain, ".:") || domain == "localhost" {
		return parseReference(ref) // fully qualified: no alias applies
	}
	alias, _, err := sysregistriesv2.ResolveShortNameAlias(s.aliasContext(), reference.TrimNamed(named).Name())
	if err != nil {
		return nil, fmt.Errorf("short-name alias of %q: %w", ref, err)
	}
	if alias == nil {
		return parseReference(ref)
	}
	target := alias
	if tagged, ok := named.(reference.Tagged); ok {
		if target, err = reference.WithTag(target, tagged.Tag()); err != nil {
			return nil, fmt.Errorf("%w: %q: alias %s: %w", ErrInvalidReference, ref, alias, err)
		}
	}
	if digested, ok := named.(reference.Digested); ok {
		if target, err = reference.WithDigest(target, digested.Digest()); err != nil {
			return nil, fmt.Errorf("%w: %q: alias %s: %w", ErrInvalidReference, ref, alias, err)
		}
	}
	r, err := docker.NewReference(reference.TagNameOnly(target))
	if err != nil {
		return nil, fmt.Errorf("%w: %q: alias %s: %w", ErrInvalidReference, ref, alias, err)
	}
	return r, nil
}

// aliasContext is the SystemContext short-name aliases are looked up with.
func (s *Store) aliasContext() *types.SystemContext {
	return &types.SystemContext{SystemRegistriesConfPath: s.cfg.RegistriesConf}
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

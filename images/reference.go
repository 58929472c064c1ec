package images

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"

	securejoin "github.com/cyphar/filepath-securejoin"

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
//
// The last three read files on this host, as root, at a path the caller
// chooses: they are refused unless Config.ArchiveDir is set, and then take
// only paths inside it (see archivePath).
func (s *Store) parseReference(ref string) (types.ImageReference, error) {
	if ref == "" {
		return nil, refuse(ErrInvalidReference, "empty reference")
	}
	var (
		r   types.ImageReference
		err error
	)
	name, rest, hasPrefix := strings.Cut(ref, ":")
	switch {
	case hasPrefix && name == dockerTransport:
		if !strings.HasPrefix(rest, "//") {
			return nil, refuse(ErrInvalidReference, "docker transport references start with docker://")
		}
		r, err = docker.ParseReference(rest)
	case hasPrefix && name == "oci":
		return s.archiveReference(name, rest, layout.ParseReference)
	case hasPrefix && name == "oci-archive":
		return s.archiveReference(name, rest, ociarchive.ParseReference)
	case hasPrefix && name == "docker-archive":
		return s.archiveReference(name, rest, dockerarchive.ParseReference)
	default:
		// No transport: docker semantics, short names normalised to docker.io
		// ("node" -> docker.io/library/node:latest), as `docker pull` does.
		r, err = docker.ParseReference("//" + ref)
	}
	if err != nil {
		// A parser's words about the string itself: nothing was looked up.
		return nil, refuse(ErrInvalidReference, "%v", err)
	}
	return r, nil
}

// archiveReference parses "<path>[:<rest>]" of a transport that reads host
// files (all three split at the first colon), with path confined to
// Config.ArchiveDir. Nothing is looked up before the path is known to be
// inside it, and every refusal says only which rule the string broke, so a
// reference cannot tell whether a host path exists.
func (s *Store) archiveReference(transport, rest string, parse func(string) (types.ImageReference, error)) (types.ImageReference, error) {
	if s.archiveDir == "" {
		return nil, refuse(ErrInvalidReference, "the %s: transport reads files on the executor's host and is disabled "+
			"(no image archive directory is configured); use a registry reference", transport)
	}
	path, tail, hasTail := strings.Cut(rest, ":")
	resolved, err := s.archivePath(path)
	if err != nil {
		return nil, refuse(ErrInvalidReference, "%s: %v", transport, err)
	}
	if hasTail {
		resolved += ":" + tail
	}
	r, err := parse(resolved)
	var pathErr *fs.PathError
	switch {
	case err == nil:
		return r, nil
	case errors.Is(err, fs.ErrNotExist):
		// Its parent is missing too: as missing as a missing layout.
		return nil, fmt.Errorf("%w: %w", ErrImageNotFound, err)
	case errors.As(err, &pathErr):
		s.log.Warn("image archive path cannot be resolved", "path", resolved, "err", err)
		return nil, refuse(ErrInvalidReference, "%s: the path cannot be resolved inside the image archive directory", transport)
	default:
		// The parser's words about the string (a tag, an index).
		return nil, refuse(ErrInvalidReference, "%s: %v", transport, err)
	}
}

// archivePath resolves p, absolute or relative to Config.ArchiveDir, to a
// path inside that directory. ".." is refused outright; an absolute p must
// be inside the directory as written (or as its symlinks resolve); symlinks
// below it are resolved as if the directory were "/" (securejoin), so one
// pointing out of it, "/etc" or "../../etc", names a path inside it instead.
//
// The files of a layout or archive found there are then opened by
// containers/image, which follows symlinks inside them: the directory is
// the operator's, for archives the operator placed, writable by root only.
func (s *Store) archivePath(p string) (string, error) {
	if p == "" {
		return "", errors.New("empty path")
	}
	if slices.Contains(strings.Split(p, "/"), "..") {
		return "", errors.New(`paths must not contain ".."`)
	}
	rel := p
	if filepath.IsAbs(p) {
		rel = ""
		for _, dir := range []string{s.cfg.ArchiveDir, s.archiveDir} {
			if r, err := filepath.Rel(filepath.Clean(dir), filepath.Clean(p)); err == nil && r != ".." && !strings.HasPrefix(r, "../") {
				rel = r
				break
			}
		}
		if rel == "" {
			return "", errors.New("paths must be inside the image archive directory")
		}
	}
	resolved, err := securejoin.SecureJoin(s.archiveDir, rel)
	if err != nil {
		// A symlink loop, or a component that cannot be read: the path is
		// the operator's to fix; what exactly failed is for the log only.
		s.log.Warn("image archive path cannot be resolved", "path", p, "err", err)
		return "", errors.New("the path cannot be resolved inside the image archive directory")
	}
	return resolved, nil
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
		return s.parseReference(ref)
	}
	parsed, err := reference.Parse(ref)
	if err != nil {
		return s.parseReference(ref) // reports the error the usual way
	}
	named, ok := parsed.(reference.Named)
	if !ok {
		return s.parseReference(ref)
	}
	if domain := reference.Domain(named); strings.ContainsAny(domain, ".:") || domain == "localhost" {
		return s.parseReference(ref) // fully qualified: no alias applies
	}
	alias, _, err := sysregistriesv2.ResolveShortNameAlias(s.aliasContext(), reference.TrimNamed(named).Name())
	if err != nil {
		return nil, fmt.Errorf("short-name alias of %q: %w", ref, err)
	}
	if alias == nil {
		return s.parseReference(ref)
	}
	target := alias
	if tagged, ok := named.(reference.Tagged); ok {
		if target, err = reference.WithTag(target, tagged.Tag()); err != nil {
			return nil, refuse(ErrInvalidReference, "alias %s: %v", alias, err)
		}
	}
	if digested, ok := named.(reference.Digested); ok {
		if target, err = reference.WithDigest(target, digested.Digest()); err != nil {
			return nil, refuse(ErrInvalidReference, "alias %s: %v", alias, err)
		}
	}
	r, err := docker.NewReference(reference.TagNameOnly(target))
	if err != nil {
		return nil, refuse(ErrInvalidReference, "alias %s: %v", alias, err)
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

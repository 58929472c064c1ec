package images

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/image"
	"go.podman.io/image/v5/manifest"
	"go.podman.io/image/v5/pkg/sysregistriesv2"
	"go.podman.io/image/v5/signature"
	"go.podman.io/image/v5/types"
	"golang.org/x/sync/errgroup"
)

// parallelLayers bounds concurrent layer downloads of one image, as Docker does.
const parallelLayers = 3

// Pull resolves ref and returns the local image, pulling and unpacking only
// what is missing. ref has docker semantics by default ("openruntimes/node:v5-18.0"
// is docker.io/openruntimes/node:v5-18.0); the transports docker://, oci:,
// oci-archive: and docker-archive: may be named explicitly.
//
// An image pulled before is returned from the store without contacting its
// source ("pull if missing"). Concurrent Pulls of one image share one pull;
// images that share a layer unpack it once.
//
// Short names ("node:20") honour the [aliases] of registries.conf and are
// docker.io's otherwise (see resolveReference). A registry that registries.conf
// blocks is not pulled from.
//
// The oci:, oci-archive: and docker-archive: transports read host files and
// are refused unless Config.ArchiveDir is set (see parseReference). Requests
// to registries on this host's own addresses are refused unless
// registries.conf names them (see registryProxy). A pull unpacks at most
// Config.SizeLimit bytes and Config.MaxEntries files.
//
// Errors are *PullError, whose message is safe to show to an API client and
// which wraps ErrImageNotFound, ErrUnauthorized, ErrRegistryUnreachable,
// ErrInvalidReference, ErrPolicyRejected, ErrBlocked, ErrImageTooLarge or
// ErrBadImage where they apply (PullError.Kind; none only for this host's
// own faults); the details are logged.
func (s *Store) Pull(ctx context.Context, ref string) (*Image, error) {
	img, err := s.pullImage(ctx, ref)
	if err != nil {
		perr := newPullError(ctx, ref, err)
		// perr.Err starts with what the client is told (the kind) and goes
		// on with what the source said.
		s.log.Warn("image pull failed", "ref", ref, "err", perr.Err)
		return nil, perr
	}
	return img, nil
}

func (s *Store) pullImage(ctx context.Context, ref string) (*Image, error) {
	iref, err := s.resolveReference(ref)
	if err != nil {
		return nil, err
	}
	key := imageKey(iref)
	img, err := s.loadImage(key)
	if err == nil {
		// A use: GC must not take it away between this and MountRoot.
		s.touch(key)
	} else {
		if !isMissing(err) {
			s.log.Warn("image record unusable, pulling again", "ref", ref, "err", err)
		}
		img, err, _ = s.pulls.do(ctx, key, func(ctx context.Context) (*Image, error) {
			// Another flight may have finished between our look and this one.
			if img, err := s.loadImage(key); err == nil {
				return img, nil
			}
			return s.pullWithin(ctx, iref, key)
		})
		if err != nil {
			return nil, err
		}
	}
	// The flight's result is shared: give each caller its own copy, with the
	// reference spelled the way it asked.
	out := *img
	out.Ref = ref
	out.key = key
	out.Layers = slices.Clone(img.Layers)
	out.Config = ImageConfig{
		Env:        slices.Clone(img.Config.Env),
		Entrypoint: slices.Clone(img.Config.Entrypoint),
		Cmd:        slices.Clone(img.Config.Cmd),
		WorkingDir: img.Config.WorkingDir,
		User:       img.Config.User,
	}
	return &out, nil
}

// DefaultPullTimeout is Config.PullTimeout when unset: several times what a
// multi-GiB runtime image takes over a slow link, and still a bound on a
// registry that stalls.
const DefaultPullTimeout = 10 * time.Minute

// errPullTimedOut is the cause of a pull's context past Config.PullTimeout.
var errPullTimedOut = errors.New("pull timeout")

// pullWithin is pull bounded by Config.PullTimeout. The bound is the flight's,
// not a caller's: one caller's patience neither shortens nor lengthens it.
func (s *Store) pullWithin(ctx context.Context, ref types.ImageReference, key string) (img *Image, err error) {
	start := time.Now()
	budget := newPullBudget(s.cfg.SizeLimit, s.cfg.MaxEntries)
	defer func() {
		unpacked := budget.data.Load()
		if err == nil {
			s.addLayerBytes(unpacked)
		}
		s.cfg.Observer.Pull(ctx, time.Since(start), unpacked, err)
	}()
	ctx, cancel := context.WithTimeoutCause(ctx, s.cfg.PullTimeout, errPullTimedOut)
	defer cancel()
	img, err = s.pull(ctx, ref, key, budget)
	if err != nil && errors.Is(context.Cause(ctx), errPullTimedOut) {
		// Whatever the source was doing when the time ran out (a stalled
		// read, a dial), the client is told the limit; the log gets err.
		// err as text only: its context.DeadlineExceeded is not the
		// caller's deadline, and a caller that matched it would say its
		// own timeout ran out.
		return nil, fmt.Errorf("%w: %v", refuse(ErrRegistryUnreachable, "the pull did not finish within %v", s.cfg.PullTimeout), err)
	}
	return img, err
}

// pull fetches the image named by ref from its source.
// budget counts what it unpacks.
func (s *Store) pull(ctx context.Context, ref types.ImageReference, key string, budget *pullBudget) (*Image, error) {
	start := time.Now()
	name := canonicalName(ref)
	sys := s.systemContext(ref)

	if err := checkBlocked(ref, sys); err != nil {
		return nil, err
	}
	src, err := ref.NewImageSource(ctx, sys)
	if err != nil {
		if ref.Transport().Name() != dockerTransport && errors.Is(err, fs.ErrNotExist) {
			// A local layout or archive that is not there.
			return nil, fmt.Errorf("%w: %w", ErrImageNotFound, err)
		}
		return nil, classify(err)
	}
	defer src.Close()

	// Resolve a manifest list to this platform's image ourselves, as
	// containers/image's copy does, so that the policy is checked against,
	// and Digest names, the image that is actually unpacked.
	//
	// From here on the source has answered: what fails that is not its
	// answer (classify) nor this host's fault is the image's (badImage).
	raw, mime, err := src.GetManifest(ctx, nil)
	if err != nil {
		return nil, badImage(err)
	}
	var instance *digest.Digest
	if manifest.MIMETypeIsMultiImage(mime) {
		list, err := manifest.ListFromBlob(raw, mime)
		if err != nil {
			return nil, badImage(fmt.Errorf("parse manifest list: %w", err))
		}
		d, err := list.ChooseInstance(sys)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", &refusal{kind: ErrImageNotFound, reason: "no image for linux/" + runtime.GOARCH + " in the manifest list"}, err)
		}
		instance = &d
	}
	unparsed := image.UnparsedInstance(src, instance)
	if err := s.checkPolicy(ctx, unparsed); err != nil {
		return nil, err
	}
	img, err := image.FromUnparsedImage(ctx, sys, unparsed)
	if err != nil {
		return nil, badImage(err)
	}
	manifestBlob, _, err := img.Manifest(ctx)
	if err != nil {
		return nil, badImage(err)
	}
	manifestDigest, err := manifest.Digest(manifestBlob)
	if err != nil {
		return nil, badImage(err)
	}
	config, err := img.OCIConfig(ctx)
	if err != nil {
		return nil, badImage(fmt.Errorf("read image config: %w", err))
	}
	if config.OS != "" && config.OS != "linux" {
		return nil, refuse(ErrImageNotFound, "the image is for %s, not linux", config.OS)
	}
	blobs, err := img.LayerInfosForCopy(ctx)
	if err != nil {
		return nil, badImage(err)
	}
	if blobs == nil {
		blobs = img.LayerInfos()
	}
	diffIDs := config.RootFS.DiffIDs
	if len(diffIDs) != len(blobs) {
		// Schema 1 manifests and broken configs: without one diffID per layer
		// a layer cannot be named before it is unpacked.
		return nil, refuse(ErrBadImage, "image has %d layers but %d diffIDs in its config (schema 1 images are not supported)", len(blobs), len(diffIDs))
	}

	for _, id := range diffIDs {
		if err := layerKey(id); err != nil {
			return nil, badImage(err)
		}
	}
	chainIDs := identity.ChainIDs(slices.Clone(diffIDs))
	// A layer lies under its diffID, or its chain ID (see fetchLayer).
	paths := make([]string, 0, 2*len(diffIDs))
	for i := range diffIDs {
		paths = append(paths, s.layerPath(diffIDs[i]), s.layerPath(chainIDs[i]))
	}
	// GC leaves these layers alone until the record naming them is written.
	defer s.startPull(key, paths)()
	// Callers of PullWithProgress waiting for this pull hear of its layers.
	rep := s.progress.start(key, blobs)
	defer rep.finish()

	limit := 1
	if src.HasThreadSafeGetBlob() {
		limit = parallelLayers
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(limit)
	var (
		mu       sync.Mutex
		squashed ownerSquash
		// keys[i] is set before done[i] is closed, when layer i is in
		// the store; a layer with hard links to files below it waits for
		// them (lower).
		keys = make([]digest.Digest, len(diffIDs))
		done = make([]chan struct{}, len(diffIDs))
	)
	for i := range done {
		done[i] = make(chan struct{})
	}
	lower := func(i int) lowerFinder {
		return func() ([]string, error) {
			dirs := make([]string, i)
			for j := range i {
				select {
				case <-done[j]:
				case <-gctx.Done():
					return nil, gctx.Err()
				}
				if keys[j] == "" {
					return nil, fmt.Errorf("layer %s was not unpacked", diffIDs[j])
				}
				dirs[j] = s.layerPath(keys[j])
			}
			return dirs, nil
		}
	}
	for i := range blobs {
		g.Go(func() error {
			defer close(done[i])
			r, err := s.ensureLayer(gctx, rep.source(src, i), blobs[i], diffIDs[i], chainIDs[i], lower(i), budget)
			mu.Lock()
			squashed.add(r.owners)
			mu.Unlock()
			if err == nil {
				keys[i] = r.key
				rep.done(i)
			}
			return err
		})
	}
	err = g.Wait()
	// Whether or not the pull succeeds, the layers unpacked are in the store.
	s.warnSquashed(name, squashed)
	if err != nil {
		return nil, badImage(err)
	}

	rec := record{
		Name:   name,
		Digest: manifestDigest,
		Layers: keys,
		Config: ImageConfig{
			Env:        config.Config.Env,
			Entrypoint: config.Config.Entrypoint,
			Cmd:        config.Config.Cmd,
			WorkingDir: config.Config.WorkingDir,
			User:       config.Config.User,
		},
		Pulled: time.Now().UTC(),
	}
	if err := s.saveImage(key, rec); err != nil {
		return nil, fmt.Errorf("save image record: %w", err)
	}
	s.log.Info("image pulled", "ref", name, "digest", manifestDigest, "layers", len(diffIDs), "duration", time.Since(start))
	return s.loadImage(key)
}

// checkPolicy applies the signature policy to the image about to be unpacked.
// A PolicyContext is not safe for concurrent use, hence one per pull.
func (s *Store) checkPolicy(ctx context.Context, unparsed types.UnparsedImage) error {
	pc, err := signature.NewPolicyContext(s.policy)
	if err != nil {
		return fmt.Errorf("signature policy: %w", err)
	}
	defer pc.Destroy()
	allowed, err := pc.IsRunningImageAllowed(ctx, unparsed)
	if !allowed || err != nil { // Be paranoid, as copy is: either value refuses.
		if err == nil {
			err = errors.New("not allowed")
		}
		return fmt.Errorf("%w: %w", ErrPolicyRejected, classify(err))
	}
	return nil
}

// checkBlocked refuses a docker reference whose registry registries.conf
// blocks. containers/image refuses it too, but with an error that cannot be
// told from others.
func checkBlocked(ref types.ImageReference, sys *types.SystemContext) error {
	if ref.Transport().Name() != dockerTransport || ref.DockerReference() == nil {
		return nil
	}
	reg, err := sysregistriesv2.FindRegistry(sys, ref.DockerReference().String())
	if err != nil {
		return fmt.Errorf("registries.conf: %w", err)
	}
	if reg != nil && reg.Blocked {
		return fmt.Errorf("%w (the [[registry]] entry with prefix %q in %s)",
			refuse(ErrBlocked, "%s is blocked by registries.conf", reference.Domain(ref.DockerReference())),
			reg.Prefix, sysregistriesv2.ConfigurationSourceDescription(sys))
	}
	return nil
}

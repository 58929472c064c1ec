package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"executor/sandbox/build"
	"executor/storage"
)

// exec runs command in the runtime with the runtime's shell, its stdout on
// stdout and its stderr on stderr (on stdout too when stderr is nil, in the
// order they were written). It returns the exit code; ctx ending kills it.
func (r *Runtime) exec(ctx context.Context, command string, stdout, stderr io.Writer) (int, error) {
	ct := r.current()
	if ct == nil || ct.Exited() {
		return -1, errors.New("runtime is not running")
	}
	return ct.Exec(ctx, []string{r.shell, "-c", command}, stdout, stderr)
}

// runBuild runs the build command with its output in out, for at most
// spec.Timeout, saves the build cache and uploads the artifact.
func (m *Manager) runBuild(ctx context.Context, r *Runtime, spec Spec, res *BuildResult, out *build.Output) (err error) {
	start := time.Now()
	defer func() { m.cfg.Observer.Build(ctx, time.Since(start), err) }()
	r.begin()
	defer r.end()
	timeout := spec.Timeout
	bctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	code, err := r.exec(bctx, spec.Command, out, nil)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return newError(RuntimeFailed, fmt.Sprintf("Operation timed out after %d milliseconds: build command did not finish within %s.", timeout.Milliseconds(), timeout), err)
		}
		return newError(BuildFailed, "Build command failed: "+err.Error(), err)
	}
	if code != 0 {
		out.Add(fmt.Sprintf("Build command exited with code %d.", code))
		msg := strings.TrimSpace(truncateUTF8(build.Text(r.withWarnings(spec, out.Snapshot())), build.MaxOutput))
		if msg == "" {
			msg = "Build command failed."
		}
		return newError(BuildFailed, msg, nil)
	}
	if cacheEnabled(spec) {
		m.saveCache(ctx, r, spec.CacheKey)
	}
	res.Output = r.withWarnings(spec, out.Snapshot())
	if spec.Destination != "" {
		path, size, err := m.upload(ctx, r, spec.Destination)
		if err != nil {
			return err
		}
		res.HasArtifact, res.Path, res.Size = true, path, size
	}
	return nil
}

// upload moves builds/code.tar.gz to the destination device.
func (m *Manager) upload(ctx context.Context, r *Runtime, destination string) (string, int64, error) {
	d, err := r.openDir()
	if err != nil {
		return "", 0, newError(HostFailed, "Something went wrong when starting runtime.", err)
	}
	defer d.Close()
	dev, err := m.sources.Open(destination)
	if err != nil {
		return "", 0, newError(BuildFailed, "Failed to move built code to storage: "+err.Error(), err)
	}
	path, size, err := build.Upload(ctx, d, "builds/"+artifactName, dev, &m.names, m.cfg.BuildSizeLimit)
	var refused *build.RefusedError
	switch {
	case err == nil:
		return path, size, nil
	case errors.Is(err, build.ErrNoArtifact):
		// The reference's answer when no artifact was produced.
		return "", 0, newError(HostFailed, "Something went wrong when starting runtime.", err)
	case errors.As(err, &refused):
		return "", 0, newError(BuildFailed, fmt.Sprintf("Build artifact %s was refused: %s.", r.Version.ArtifactPath(), build.Refusal(refused.Err)), err)
	case errors.Is(err, build.ErrTooLarge):
		return "", 0, newError(BuildFailed, fmt.Sprintf("Build artifact %s is larger than the build size limit of %d bytes (OPR_EXECUTOR_BUILD_SIZE_LIMIT).", r.Version.ArtifactPath(), m.cfg.BuildSizeLimit), nil)
	case errors.Is(err, storage.ErrOutsideRoots):
		// A link beneath the root that leads out of it.
		return "", 0, newError(BuildFailed, "Failed to move built code to storage: "+err.Error(), err)
	default:
		return "", 0, newError(HostFailed, "Failed to move built code to storage", err)
	}
}

// artifactName is the file a build leaves in its code directory.
const artifactName = "code.tar.gz"

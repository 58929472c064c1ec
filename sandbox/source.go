package sandbox

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"

	"executor/sandbox/build"
	"executor/storage"
)

// copySource fetches the source archive into src/, where the runtime sees it
// as /tmp/code.tar.gz (or /tmp/code.tar for an uncompressed one).
func (m *Manager) copySource(ctx context.Context, r *Runtime, source string) error {
	name := "code.tar.gz"
	if strings.HasSuffix(source, ".tar") {
		name = "code.tar"
	}
	d, err := r.openDir()
	if err == nil {
		err = build.FetchSource(ctx, m.sourceDev, source, d, "src/"+name)
		d.Close()
	}
	const prefix = "Failed to copy source code to temporary directory: "
	switch {
	case err == nil:
		return nil
	case (errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT)) && m.cfg.DiskLimit == 0:
		// No disk of the runtime's own: the data dir's file system is
		// full, which is this host's fault, not the request's.
		return newError(HostFailed, prefix+"the executor's data dir is out of space", err)
	case errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT):
		return newError(RuntimeFailed, fmt.Sprintf(prefix+"%s does not fit on the runtime's disk of %d bytes (OPR_EXECUTOR_DISK_LIMIT)", source, m.cfg.DiskLimit), err)
	case errors.Is(err, storage.ErrTooLarge):
		return newError(RuntimeFailed, fmt.Sprintf(prefix+"%s is larger than the build size limit of %d bytes (OPR_EXECUTOR_BUILD_SIZE_LIMIT)", source, m.cfg.BuildSizeLimit), err)
	case storage.Refused(err):
		return newError(RuntimeFailed, prefix+storage.ReadFailure(source, err), err)
	default:
		return newError(HostFailed, prefix+storage.ReadFailure(source, err), err)
	}
}

// checkStorage refuses a source or destination the storage device will
// refuse, in milliseconds, before a runtime is made or a build runs.
func (m *Manager) checkStorage(spec Spec) error {
	o := m.sources
	if spec.Source != "" {
		// A missing file (or root) is left to the copy, which reports it
		// as the reference does.
		if err := o.CheckPath(spec.Source); storage.Refused(err) {
			return newError(RuntimeFailed, "Failed to copy source code to temporary directory: "+err.Error(), err)
		}
	}
	if spec.Destination != "" && spec.Command != "" {
		if err := o.CheckPath(spec.Destination); err != nil {
			return newError(BuildFailed, "Failed to move built code to storage: "+err.Error(), err)
		}
	}
	return nil
}

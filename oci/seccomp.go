package oci

import (
	"fmt"

	"github.com/moby/profiles/seccomp"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// DefaultSeccomp is moby's default seccomp profile (an allowlist: anything
// else fails with EPERM), resolved for the capabilities runtimes get so that
// the rules tied to capabilities match. Compute it once and share it.
func DefaultSeccomp() (*configs.Seccomp, error) {
	caps := DefaultCapabilities()
	rs := &specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{
		Bounding: caps, Effective: caps, Permitted: caps,
	}}}
	profile, err := seccomp.GetDefaultProfile(rs)
	if err != nil {
		return nil, fmt.Errorf("oci: default seccomp profile: %w", err)
	}
	cfg, err := specconv.SetupSeccomp(profile)
	if err != nil {
		return nil, fmt.Errorf("oci: default seccomp profile: %w", err)
	}
	return cfg, nil
}

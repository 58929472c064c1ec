package oci

import (
	"fmt"
	"runtime"
	"slices"

	"github.com/moby/profiles/seccomp"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/specconv"
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// nativeArch names GOARCH the way libcontainer's seccomp config does.
var nativeArch = map[string]string{
	"amd64": "amd64", "arm64": "arm64", "386": "x86", "arm": "arm",
	"ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64",
}

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
	// Only the native ABI: moby also admits the 32-bit ones (x86, x32 on
	// amd64) for old binaries, which triples the filter libseccomp compiles
	// at every container start (~40 ms) and opens syscall paths runtimes
	// never need. Other ABIs are refused.
	native, ok := nativeArch[runtime.GOARCH]
	if !ok || !slices.Contains(cfg.Architectures, native) {
		return nil, fmt.Errorf("oci: no seccomp architecture for %s", runtime.GOARCH)
	}
	cfg.Architectures = []string{native}
	return cfg, nil
}

package container

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/opencontainers/runc/libcontainer/configs"

	"executor/oci"
)

// The default seccomp profile's rules are most of a start's message to the
// spawner (25 of its 31 KB), and decoding them was 1.3 ms of each cold
// start (p50 on the 2-core VM, in the spawner, against 0.25 ms to encode
// them in the daemon). The spawner holds the profile itself, built as the
// runner builds it (oci.DefaultSeccomp), and greets the runner with its
// digest; the runner then sends the digest in the rules' place. A spawner
// of another build, whose profile may differ, greets with another digest
// and is sent the rules, as before.

// seccompProfile is a seccomp profile and the digest a spawner is told it
// by.
type seccompProfile struct {
	rules  *configs.Seccomp
	digest string
}

// newSeccompProfile is rules with its digest: the SHA-256 of their JSON,
// the form in which they would otherwise travel.
func newSeccompProfile(rules *configs.Seccomp) (seccompProfile, error) {
	b, err := json.Marshal(rules)
	if err != nil {
		return seccompProfile{}, fmt.Errorf("seccomp profile: %w", err)
	}
	sum := sha256.Sum256(b)
	return seccompProfile{rules: rules, digest: hex.EncodeToString(sum[:])}, nil
}

// defaultSeccompProfile is oci.DefaultSeccomp with its digest.
func defaultSeccompProfile() (seccompProfile, error) {
	rules, err := oci.DefaultSeccomp()
	if err != nil {
		return seccompProfile{}, fmt.Errorf("seccomp profile: %w", err)
	}
	return newSeccompProfile(rules)
}

package netns

import (
	"errors"
	"fmt"
)

// ErrCapacity is matched (errors.Is) by every error saying that a network has
// no room for another endpoint: a limit was reached, not a fault. Callers
// tell it apart so that a client learns to retry later or elsewhere, and an
// operator which setting makes room.
var ErrCapacity = errors.New("netns: network at capacity")

// CapacityError says which limit of a network an Attach ran into. It matches
// ErrCapacity, and its cause (ErrNoAddress, syscall.EXFULL...) stays in the
// chain.
type CapacityError struct {
	Network string
	// Limit names what ran out, for people: "no free address in subnet
	// 10.89.0.0/28 (13 addresses)".
	Limit string
	Err   error
}

func (e *CapacityError) Error() string {
	return fmt.Sprintf("netns: network %s is at capacity: %s", e.Network, e.Limit)
}

func (e *CapacityError) Unwrap() error { return e.Err }

func (e *CapacityError) Is(target error) bool { return target == ErrCapacity }

// noAddress is the capacity error of a subnet without a free address.
func (n *Network) noAddress(err error) error {
	return &CapacityError{Network: n.cfg.Name, Err: err,
		Limit: fmt.Sprintf("no free address in subnet %s (%d addresses for runtimes)", n.cfg.Subnet, n.addrs.size())}
}

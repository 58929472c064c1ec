package main

import (
	"errors"
	"fmt"
	"net/netip"

	"executor/netns"
)

// networkError names the variable an operator changes to fix a network that
// would not start: the subnet when the host already uses it, else the
// network name (a bridge or table of that name is someone else's).
func networkError(name string, subnet netip.Prefix, err error) error {
	var inUse *netns.SubnetInUseError
	if errors.As(err, &inUse) {
		return fmt.Errorf("OPR_EXECUTOR_SUBNET (network %q gets %s): %w", name, subnet, err)
	}
	return fmt.Errorf("OPR_EXECUTOR_NETWORK %q: %w", name, err)
}

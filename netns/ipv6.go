package netns

import (
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Runtimes get IPv4 only (their firewall, NAT and addresses are IPv4), but a
// link with IPv6 on gives itself a link-local address as it comes up: its
// duplicate address detection, MLD reports and router solicitations are
// multicasts that the bridge floods to every port and into every runtime's
// network stack. With N runtimes on a bridge each new one costs O(N) of
// that (perf at 1,000 runtimes: addrconf_dad_work and mld_sendpack into
// br_flood, ip6_route_input in every namespace). So the bridge, the host
// side of each veth and the runtime's eth0 make no IPv6 address of their
// own; the runtime's loopback keeps ::1.
//
// Through netlink (address generation mode "none"), not the disable_ipv6
// sysctl: a lookup below /proc/sys/net compares the name against every
// network namespace's entry of that name, O(N) again.

// noIPv6Addrs has link l, not yet up, make no IPv6 address of its own. A
// kernel without IPv6 has nothing to turn off.
func noIPv6Addrs(h *netlink.Handle, l netlink.Link) error {
	var err error
	if h == nil {
		err = netlink.LinkSetIP6AddrGenMode(l, addrGenModeNone)
	} else {
		err = h.LinkSetIP6AddrGenMode(l, addrGenModeNone)
	}
	if err != nil && !errors.Is(err, unix.EAFNOSUPPORT) {
		return fmt.Errorf("netns: no IPv6 address on %s: %w", l.Attrs().Name, err)
	}
	return nil
}

// addrGenModeNone is IN6_ADDR_GEN_MODE_NONE (linux/if_link.h).
const addrGenModeNone = 1

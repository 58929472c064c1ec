package netns

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// SubnetInUseError says that a network's subnet overlaps an address or a
// route the host already has. Using it anyway would capture that traffic:
// executions (secrets, bodies) sent to what the client takes for our runtime
// would reach another executor's runtime or another host, and theirs ours.
type SubnetInUseError struct {
	Subnet netip.Prefix
	// Prefix is the address (with its prefix length) or route destination
	// that overlaps Subnet.
	Prefix netip.Prefix
	// Interface holds the address or is the route's device; "" for a route
	// without one (blackhole, unreachable...).
	Interface string
	// Route is set for a route, Address for an address; Table is the route's table.
	Route, Address bool
	Table          int
	// Owner is the interface's alias when it is another executor's bridge.
	Owner string
}

func (e *SubnetInUseError) Error() string {
	var what string
	switch {
	case e.Address:
		what = fmt.Sprintf("address %s of interface %s", e.Prefix, e.Interface)
	case e.Interface != "":
		what = fmt.Sprintf("route %s dev %s (table %s)", e.Prefix, e.Interface, tableName(e.Table))
	default:
		what = fmt.Sprintf("route %s (table %s)", e.Prefix, tableName(e.Table))
	}
	if e.Owner != "" {
		what += fmt.Sprintf(", a bridge of another executor (%s)", e.Owner)
	}
	return fmt.Sprintf("netns: subnet %s overlaps the host's %s: choose a range no interface or route uses", e.Subnet, what)
}

func tableName(t int) string {
	switch t {
	case unix.RT_TABLE_MAIN:
		return "main"
	case unix.RT_TABLE_LOCAL:
		return "local"
	case unix.RT_TABLE_DEFAULT:
		return "default"
	}
	return fmt.Sprint(t)
}

// checkSubnetFree fails with a *SubnetInUseError when subnet overlaps an
// IPv4 address or route of the host, in any routing table. Those of the links
// whose indices are own (our bridges) are ours and do not count.
func checkSubnetFree(subnet netip.Prefix, own ...int) error {
	links, err := dump(netlink.LinkList)
	if err != nil {
		return fmt.Errorf("netns: list links: %w", err)
	}
	addrs, err := dump(func() ([]netlink.Addr, error) { return netlink.AddrList(nil, netlink.FAMILY_V4) })
	if err != nil {
		return fmt.Errorf("netns: list addresses: %w", err)
	}
	routes, err := dump(func() ([]netlink.Route, error) {
		return netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	})
	if err != nil {
		return fmt.Errorf("netns: list routes: %w", err)
	}
	return subnetConflict(subnet, links, addrs, routes, own...)
}

// subnetConflict is checkSubnetFree over given lists. Default routes
// (0.0.0.0/0) overlap everything by nature and do not count: a more specific
// route of our own takes precedence over them.
func subnetConflict(subnet netip.Prefix, links []netlink.Link, addrs []netlink.Addr, routes []netlink.Route, own ...int) error {
	subnet = subnet.Masked()
	ours := make(map[int]bool, len(own))
	for _, i := range own {
		if i != 0 {
			ours[i] = true
		}
	}
	byIndex := make(map[int]netlink.Link, len(links))
	for _, l := range links {
		byIndex[l.Attrs().Index] = l
	}
	inUse := func(e *SubnetInUseError, index int) error {
		e.Subnet = subnet
		if l, ok := byIndex[index]; ok {
			e.Interface = l.Attrs().Name
			if m := markOf(l.Attrs().Alias); m != "" && l.Type() == "bridge" {
				e.Owner = l.Attrs().Alias
			}
		} else if index != 0 {
			e.Interface = fmt.Sprintf("#%d", index)
		}
		return e
	}
	for _, a := range addrs {
		if ours[a.LinkIndex] {
			continue
		}
		// The local address, and the peer's of a point-to-point link.
		for _, n := range []*net.IPNet{a.IPNet, a.Peer} {
			if p, ok := prefixOf(n); ok && p.Overlaps(subnet) {
				return inUse(&SubnetInUseError{Prefix: p, Address: true}, a.LinkIndex)
			}
		}
	}
	for _, r := range routes {
		if routeOn(r, ours) {
			continue
		}
		p, ok := prefixOf(r.Dst)
		if !ok || p.Bits() == 0 || !p.Overlaps(subnet) {
			continue
		}
		index := r.LinkIndex
		if index == 0 && len(r.MultiPath) > 0 {
			index = r.MultiPath[0].LinkIndex
		}
		return inUse(&SubnetInUseError{Prefix: p, Route: true, Table: r.Table}, index)
	}
	return nil
}

// routeOn says whether every way out of r is one of the links.
func routeOn(r netlink.Route, links map[int]bool) bool {
	if len(r.MultiPath) == 0 {
		return links[r.LinkIndex]
	}
	for _, nh := range r.MultiPath {
		if !links[nh.LinkIndex] {
			return false
		}
	}
	return true
}

// prefixOf converts an IPv4 network; false for nil or another family.
func prefixOf(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	ip4 := n.IP.To4()
	if ip4 == nil {
		return netip.Prefix{}, false
	}
	ones, bits := n.Mask.Size()
	if bits != 32 && bits != 128 {
		return netip.Prefix{}, false
	}
	if bits == 128 { // a 16-byte mask over an IPv4 address
		ones -= 96
	}
	a, _ := netip.AddrFromSlice(ip4)
	return netip.PrefixFrom(a, ones), ones >= 0
}

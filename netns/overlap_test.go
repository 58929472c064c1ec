package netns

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestSubnetConflict(t *testing.T) {
	ipnet := func(s string) *net.IPNet {
		p := netip.MustParsePrefix(s)
		return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
	}
	link := func(index int, name, typ, alias string) netlink.Link {
		a := netlink.LinkAttrs{Index: index, Name: name, Alias: alias}
		switch typ {
		case "bridge":
			return &netlink.Bridge{LinkAttrs: a}
		case "veth":
			return &netlink.Veth{LinkAttrs: a}
		}
		return &netlink.Device{LinkAttrs: a}
	}
	links := []netlink.Link{
		link(1, "lo", "device", ""),
		link(2, "eth0", "device", ""),
		link(7, "oprours", "bridge", markPrefix+"ours"),
		link(8, "oprtheirs", "bridge", markPrefix+"theirs state=/srv/b/networks/oprtheirs"),
		link(9, "tun0", "device", ""),
	}
	host := []netlink.Addr{
		{LinkIndex: 1, IPNet: ipnet("127.0.0.1/8")},
		{LinkIndex: 2, IPNet: ipnet("192.168.1.10/24")},
		{LinkIndex: 2, IPNet: ipnet("fd00::1/64")},
	}
	hostRoutes := []netlink.Route{
		{LinkIndex: 2, Table: unix.RT_TABLE_MAIN}, // default, Dst nil
		{LinkIndex: 2, Table: unix.RT_TABLE_MAIN, Dst: ipnet("0.0.0.0/0")},
		{LinkIndex: 2, Table: unix.RT_TABLE_MAIN, Dst: ipnet("192.168.1.0/24")},
		{LinkIndex: 1, Table: unix.RT_TABLE_LOCAL, Dst: ipnet("127.0.0.0/8"), Type: unix.RTN_LOCAL},
	}
	withAddr := func(a ...netlink.Addr) []netlink.Addr { return append(append([]netlink.Addr{}, host...), a...) }
	withRoute := func(r ...netlink.Route) []netlink.Route {
		return append(append([]netlink.Route{}, hostRoutes...), r...)
	}
	subnet := netip.MustParsePrefix("10.89.0.0/16")

	tests := []struct {
		name   string
		addrs  []netlink.Addr
		routes []netlink.Route
		own    int
		want   *SubnetInUseError // nil: free
		says   []string          // in the message
	}{
		{name: "a host with default routes only: they overlap everything and do not count", addrs: host, routes: hostRoutes},
		{name: "adjacent ranges", addrs: withAddr(netlink.Addr{LinkIndex: 2, IPNet: ipnet("10.88.255.254/16")}),
			routes: withRoute(netlink.Route{LinkIndex: 2, Dst: ipnet("10.90.0.0/16"), Table: unix.RT_TABLE_MAIN})},
		{name: "our own bridge's address and routes", own: 7,
			addrs: withAddr(netlink.Addr{LinkIndex: 7, IPNet: ipnet("10.89.0.1/16")}),
			routes: withRoute(
				netlink.Route{LinkIndex: 7, Dst: ipnet("10.89.0.0/16"), Table: unix.RT_TABLE_MAIN},
				netlink.Route{LinkIndex: 7, Dst: ipnet("10.89.0.1/32"), Table: unix.RT_TABLE_LOCAL, Type: unix.RTN_LOCAL},
				netlink.Route{LinkIndex: 7, Dst: ipnet("10.89.255.255/32"), Table: unix.RT_TABLE_LOCAL, Type: unix.RTN_BROADCAST})},
		{name: "another executor's bridge with the same subnet",
			addrs:  withAddr(netlink.Addr{LinkIndex: 8, IPNet: ipnet("10.89.0.1/16")}),
			routes: withRoute(netlink.Route{LinkIndex: 8, Dst: ipnet("10.89.0.0/16"), Table: unix.RT_TABLE_MAIN}),
			want:   &SubnetInUseError{Address: true, Interface: "oprtheirs", Prefix: netip.MustParsePrefix("10.89.0.1/16"), Owner: markPrefix + "theirs state=/srv/b/networks/oprtheirs"},
			says:   []string{"10.89.0.0/16", "address 10.89.0.1/16 of interface oprtheirs", "another executor", "/srv/b/networks/oprtheirs"}},
		{name: "our bridge is not excluded when another link is the culprit", own: 7,
			addrs: withAddr(netlink.Addr{LinkIndex: 2, IPNet: ipnet("10.89.200.7/24")}),
			want:  &SubnetInUseError{Address: true, Interface: "eth0", Prefix: netip.MustParsePrefix("10.89.200.7/24")}},
		{name: "a wider address range holds ours",
			addrs: withAddr(netlink.Addr{LinkIndex: 2, IPNet: ipnet("10.0.0.5/8")}),
			want:  &SubnetInUseError{Address: true, Interface: "eth0", Prefix: netip.MustParsePrefix("10.0.0.5/8")}},
		{name: "a host address inside ours",
			addrs: withAddr(netlink.Addr{LinkIndex: 2, IPNet: ipnet("10.89.3.3/32")}),
			want:  &SubnetInUseError{Address: true, Interface: "eth0", Prefix: netip.MustParsePrefix("10.89.3.3/32")}},
		{name: "the peer of a point-to-point address",
			addrs: withAddr(netlink.Addr{LinkIndex: 9, IPNet: ipnet("172.16.0.1/32"), Peer: ipnet("10.89.0.9/32")}),
			want:  &SubnetInUseError{Address: true, Interface: "tun0", Prefix: netip.MustParsePrefix("10.89.0.9/32")}},
		{name: "a VPN route in another table",
			addrs:  host,
			routes: withRoute(netlink.Route{LinkIndex: 9, Dst: ipnet("10.0.0.0/8"), Table: 220}),
			want:   &SubnetInUseError{Route: true, Interface: "tun0", Prefix: netip.MustParsePrefix("10.0.0.0/8"), Table: 220},
			says:   []string{"route 10.0.0.0/8 dev tun0 (table 220)"}},
		{name: "a blackhole route, no device",
			addrs:  host,
			routes: withRoute(netlink.Route{Dst: ipnet("10.89.128.0/17"), Table: unix.RT_TABLE_MAIN, Type: unix.RTN_BLACKHOLE}),
			want:   &SubnetInUseError{Route: true, Prefix: netip.MustParsePrefix("10.89.128.0/17"), Table: unix.RT_TABLE_MAIN},
			says:   []string{"route 10.89.128.0/17 (table main)"}},
		{name: "a multipath route names its first hop's device",
			addrs: host,
			routes: withRoute(netlink.Route{Dst: ipnet("10.89.5.0/24"), Table: unix.RT_TABLE_MAIN,
				MultiPath: []*netlink.NexthopInfo{{LinkIndex: 9}, {LinkIndex: 2}}}),
			want: &SubnetInUseError{Route: true, Interface: "tun0", Prefix: netip.MustParsePrefix("10.89.5.0/24"), Table: unix.RT_TABLE_MAIN}},
		{name: "a route of a link that is gone by now",
			addrs:  host,
			routes: withRoute(netlink.Route{LinkIndex: 42, Dst: ipnet("10.89.5.0/24"), Table: unix.RT_TABLE_MAIN}),
			want:   &SubnetInUseError{Route: true, Interface: "#42", Prefix: netip.MustParsePrefix("10.89.5.0/24"), Table: unix.RT_TABLE_MAIN}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := subnetConflict(subnet, links, tc.addrs, tc.routes, tc.own)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("refused a free subnet: %v", err)
				}
				return
			}
			var got *SubnetInUseError
			if !errors.As(err, &got) {
				t.Fatalf("error %v, want a *SubnetInUseError", err)
			}
			tc.want.Subnet = subnet
			if *got != *tc.want {
				t.Errorf("got %+v\nwant %+v", *got, *tc.want)
			}
			for _, s := range tc.says {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("message %q lacks %q", err, s)
				}
			}
		})
	}
}

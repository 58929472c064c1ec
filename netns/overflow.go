package netns

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"
)

// Overflow bridges. A Linux bridge takes at most 1,023 ports (BR_MAX_PORTS),
// and a network's bridge takes DefaultBridgePorts (256) unless configured
// otherwise, so a network whose first bridge is full attaches further
// runtimes to overflow bridges, made as needed:
//
//   - An overflow bridge is named after the first plus a 2-digit hex index
//     (01-ff), carries our owner mark like the first, and holds the gateway
//     as a /32: it adds no prefix route, so the subnet's route stays on the
//     first bridge.
//   - Each endpoint on an overflow bridge gets a /32 host route via it, which
//     wins over the subnet's route. Inside the runtime nothing differs:
//     addr/prefix and a default route via the gateway, which answers ARP on
//     every bridge since it is the host's own address.
//   - Runtimes on different bridges are on different links: without proxy
//     ARP they cannot even resolve each other, so the default isolation
//     holds there before the firewall does. With AllowRuntimeToRuntime every
//     bridge answers ARP for addresses routed via another one (proxy_arp),
//     and the host routes between them; never for addresses on the asking
//     bridge itself, so isolated ports of one bridge stay apart.
//   - The firewall lists every bridge (installFirewall), rewritten in one
//     transaction whenever a bridge comes or goes.
//
// Empty overflow bridges are kept while the network runs: at the boundary
// (the 256th and 257th runtimes coming and going) removing them would make
// and delete a bridge and rewrite both tables at each step. Reset (at start)
// removes the empty ones, Close all.

// MaxBridgePorts is the kernel's limit of ports on one bridge.
const MaxBridgePorts = 1023

// DefaultBridgePorts is how many runtimes a bridge takes by default, fewer
// than the kernel allows: adding a port (and its carrier coming up) costs
// O(ports) under the kernel's RTNL lock (br_add_if, the STP port state
// selection, the adjacency lists), and every multicast is flooded to every
// port. At 1,000 runtimes on one bridge the pull and network stage of a
// creation went from 6.4 to 11.5 ms; with 256 a bridge, to 9.6.
const DefaultBridgePorts = 256

// maxOverflow is the highest overflow bridge index: two hex digits.
const maxOverflow = 0xff

// bridge is one of a network's bridges: the first (index 0, Config.Bridge,
// the gateway with the subnet's prefix) or an overflow one.
type bridge struct {
	name  string
	index int
	link  netlink.Link
	// ports are the host-side veths that are, or are about to be, its
	// ports: this process's endpoints and, until Reset, an earlier
	// process's. Guarded by Network.mu.
	ports map[string]bool
	// full: the kernel refused a port although ports is under the limit
	// (someone else's ports on it); cleared when one of ours goes.
	full bool
}

func (b *bridge) overflow() bool { return b.index > 0 }

func overflowName(first string, i int) string { return fmt.Sprintf("%s%02x", first, i) }

// overflowIndex says whether name is an overflow bridge name of first, and
// which index.
func overflowIndex(first, name string) (int, bool) {
	s, ok := strings.CutPrefix(name, first)
	if !ok || len(s) != 2 {
		return 0, false
	}
	i, err := strconv.ParseUint(s, 16, 8)
	if err != nil || i == 0 || overflowName(first, int(i)) != name {
		return 0, false
	}
	return int(i), true
}

// bridgeList returns the network's bridges, first first.
func (n *Network) bridgeList() []*bridge {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]*bridge(nil), n.bridges...)
}

func bridgeNames(bs []*bridge) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = b.name
	}
	return out
}

// BridgeNames returns the names of the network's bridges now: the first, then
// the overflow bridges made so far.
func (n *Network) BridgeNames() []string { return bridgeNames(n.bridgeList()) }

// placePort reserves a port for hostIf on the first bridge with room, making
// an overflow bridge when every one is full.
func (n *Network) placePort(hostIf string) (*bridge, error) {
	if b := n.takePort(hostIf); b != nil {
		return b, nil
	}
	n.growMu.Lock()
	defer n.growMu.Unlock()
	// Another creation may have made room meanwhile.
	if b := n.takePort(hostIf); b != nil {
		return b, nil
	}
	b, err := n.grow()
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	b.ports[hostIf] = true
	return b, nil
}

func (n *Network) takePort(hostIf string) *bridge {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, b := range n.bridges {
		if !b.full && len(b.ports) < n.cfg.BridgePorts {
			b.ports[hostIf] = true
			return b
		}
	}
	return nil
}

// releasePort gives hostIf's port on b back; full says the kernel refused it.
func (n *Network) releasePort(b *bridge, hostIf string, full bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(b.ports, hostIf)
	b.full = full
}

// grow makes the next overflow bridge and rewrites the firewall to cover it
// before any runtime can be attached to it. The caller holds growMu.
func (n *Network) grow() (*bridge, error) {
	n.mu.Lock()
	closed := n.closed
	used := make(map[int]bool, len(n.bridges))
	for _, b := range n.bridges {
		used[b.index] = true
	}
	cur := append([]*bridge(nil), n.bridges...)
	n.mu.Unlock()
	if closed {
		return nil, errClosed
	}
	full := func(why string) error {
		return &CapacityError{Network: n.cfg.Name, Err: syscall.EXFULL,
			Limit: fmt.Sprintf("all %d bridges are full (%d ports each); %s", len(cur), n.cfg.BridgePorts, why)}
	}
	if len(n.cfg.Bridge)+2 > 15 {
		return nil, full(fmt.Sprintf("the bridge name %s leaves no room for the index of an overflow bridge (interface names are at most 15 bytes)", n.cfg.Bridge))
	}
	idx := 0
	for i := 1; i <= maxOverflow; i++ {
		if !used[i] {
			idx = i
			break
		}
	}
	if idx == 0 {
		return nil, full(fmt.Sprintf("no more overflow bridges (%d at most)", maxOverflow))
	}
	name := overflowName(n.cfg.Bridge, idx)
	l, err := ensureBridge(name, netip.PrefixFrom(n.gateway, 32), nil, n.owner.alias())
	if err != nil {
		return nil, err
	}
	b := &bridge{name: name, index: idx, link: l, ports: map[string]bool{}}
	err = n.setProxyARP(b)
	if err == nil {
		err = n.installFirewall(bridgeNames(append(cur, b)))
	}
	if err != nil {
		if derr := n.removeBridge(name); derr != nil {
			err = errors.Join(err, derr)
		}
		return nil, err
	}
	n.mu.Lock()
	n.bridges = append(n.bridges, b)
	n.mu.Unlock()
	n.log.Info("network bridge full: added an overflow bridge", "network", n.cfg.Name, "bridge", name, "bridges", len(cur)+1, "portsPerBridge", n.cfg.BridgePorts)
	return b, nil
}

// setProxyARP makes b answer ARP for addresses routed via another of our
// bridges when runtimes may reach each other, and not otherwise (an adopted
// bridge may carry an earlier configuration's setting). The answer is not
// delayed: the kernel's default waits up to 0.8 s, for a real owner of the
// address to answer first, and a connection between runtimes on two bridges
// took 1-2.3 s to open (both ends ask).
func (n *Network) setProxyARP(b *bridge) error {
	proxy := "0"
	if n.cfg.AllowRuntimeToRuntime {
		proxy = "1"
		if err := setSysctl("/proc/sys/net/ipv4/neigh/"+b.name+"/proxy_delay", "0"); err != nil {
			return fmt.Errorf("netns: proxy ARP delay on bridge %s: %w", b.name, err)
		}
	}
	if err := setSysctl("/proc/sys/net/ipv4/conf/"+b.name+"/proxy_arp", proxy); err != nil {
		return fmt.Errorf("netns: proxy ARP on bridge %s: %w", b.name, err)
	}
	return nil
}

func setSysctl(path, value string) error {
	if cur, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(cur)) == value {
		return nil
	}
	return os.WriteFile(path, []byte(value+"\n"), 0o644)
}

// hostRoute is the /32 route of addr via the overflow bridge b.
func hostRoute(b *bridge, addr netip.Addr) *netlink.Route {
	return &netlink.Route{LinkIndex: b.link.Attrs().Index, Dst: prefixToIPNet(netip.PrefixFrom(addr, 32)), Scope: netlink.SCOPE_LINK}
}

// routeTo makes the host reach addr through b: a /32 via an overflow bridge;
// on the first bridge the subnet's route does, once no /32 of an earlier
// holder on an overflow bridge (an earlier process's, or one whose removal
// failed) sends the traffic elsewhere.
func (n *Network) routeTo(b *bridge, addr netip.Addr) error {
	if b.overflow() {
		// Replace: a route left for the address by an earlier holder on
		// another overflow bridge would otherwise stay in the way.
		if err := netlink.RouteReplace(hostRoute(b, addr)); err != nil {
			return fmt.Errorf("netns: route %s via bridge %s: %w", addr, b.name, err)
		}
		return nil
	}
	return n.dropHostRoutes(addr)
}

// dropHostRoutes removes the /32 routes of addr via any overflow bridge.
func (n *Network) dropHostRoutes(addr netip.Addr) error {
	var errs []error
	for _, o := range n.bridgeList() {
		if !o.overflow() {
			continue
		}
		if err := netlink.RouteDel(hostRoute(o, addr)); err != nil && !isNoRoute(err) {
			errs = append(errs, fmt.Errorf("netns: remove the route of %s via bridge %s: %w", addr, o.name, err))
		}
	}
	return errors.Join(errs...)
}

func isNoRoute(err error) bool {
	return errors.Is(err, syscall.ESRCH) || errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENODEV)
}

// forgetNeighbour drops the host's neighbour entries of addr on every bridge.
// The address may have had a holder moments ago (a full subnet hands a freed
// one out at once), on this bridge or another: an entry naming the old MAC
// would send the new runtime's traffic nowhere until it ages out, longer than
// a start timeout, now or when the address comes back to that bridge.
func (n *Network) forgetNeighbour(addr netip.Addr) error {
	var errs []error
	for _, b := range n.bridgeList() {
		err := netlink.NeighDel(&netlink.Neigh{LinkIndex: b.link.Attrs().Index, IP: net.IP(addr.AsSlice())})
		if err != nil && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("netns: forget the old neighbour entry of %s on %s: %w", addr, b.name, err))
		}
	}
	return errors.Join(errs...)
}

// dropEmptyOverflow removes the overflow bridges without ports, and rewrites
// the firewall without them. The caller excludes creations (Reset's lock).
func (n *Network) dropEmptyOverflow() error {
	n.growMu.Lock()
	defer n.growMu.Unlock()
	n.mu.Lock()
	var keep, drop []*bridge
	for _, b := range n.bridges {
		if b.overflow() && len(b.ports) == 0 {
			drop = append(drop, b)
		} else {
			keep = append(keep, b)
		}
	}
	n.mu.Unlock()
	if len(drop) == 0 {
		return nil
	}
	// The rules go first: a rule naming a bridge that is gone would match
	// an interface someone else makes under that name.
	if err := n.installFirewall(bridgeNames(keep)); err != nil {
		return err
	}
	n.mu.Lock()
	n.bridges = keep
	n.mu.Unlock()
	var errs []error
	for _, b := range drop {
		errs = append(errs, n.removeBridge(b.name))
	}
	return errors.Join(errs...)
}

package netns

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Live restore. A daemon that exits leaving its runtimes running calls
// Release instead of Close; the next one calls New (which keeps our bridges
// and the leased addresses whose veth still exists, and rewrites the
// firewall), then Adopt for each endpoint its records name, then Reset,
// which removes every endpoint no record named. The order matters: Reset
// removes whatever is not adopted by then.
//
// The firewall has no per-endpoint state: every rule matches a bridge name
// (iifname/oifname) or the veth tag all our host-side veths share (the bridge
// table), so an adopted endpoint is filtered as soon as New has rewritten the
// tables, and was filtered before: Release leaves them in place, and New
// replaces them in one transaction (never a moment without them). Conntrack
// entries are not part of the tables: connections open across the restart,
// and their masquerading, carry on.

// ErrNotAdoptable is matched (errors.Is) by every error of Adopt that refuses
// a record: it does not describe an endpoint of this network that is still
// in place and not yet attached or adopted. Nothing was changed then.
var ErrNotAdoptable = errors.New("netns: endpoint cannot be adopted")

// Release ends this process's use of the network for a live restore: the
// network takes no more Attach (they fail; the caller stops them first, as
// one in flight may still build and remove an endpoint after Release
// returns), the pool's ready endpoints are torn down (no runtime has them),
// and Release waits for the background teardowns of Detach (AsyncDetach)
// until ctx ends.
//
// Everything else stays for the next process to adopt: the bridges (the first
// and overflow ones) with their address and owner mark, the nftables tables,
// IPv4 forwarding, the /32 host routes of endpoints on overflow bridges, and
// each endpoint handed out and not detached: its veth pair, its pinned
// namespace file under StateDir/ns and its lease under StateDir/leases. The
// owner record stays too, as after Close.
//
// Detach still tears an endpoint down after Release, and Close still removes
// everything (the pool is not stopped twice).
func (n *Network) Release(ctx context.Context) error {
	n.mu.Lock()
	n.closed = true
	n.mu.Unlock()
	var errs []error
	if err := n.stopPool(); err != nil {
		errs = append(errs, fmt.Errorf("netns: release %s: pool: %w", n.cfg.Name, err))
	}
	done := make(chan struct{})
	go func() {
		n.bg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		// tearingDown drops before bg does: at 0 the work is done. What
		// those still running leave behind (a lease whose veth is gone)
		// the next start drops, as after a crash.
		if left := n.tearingDown.Load(); left > 0 {
			errs = append(errs, fmt.Errorf("netns: release %s: %d background teardowns still running: %w", n.cfg.Name, left, ctx.Err()))
		}
	}
	return errors.Join(errs...)
}

// Adopt takes over an endpoint an earlier process of this network handed out
// (Attach) and left in place (Release, or a crash), described by the record
// that process kept: rec's exported fields as Attach returned them. It checks
// that the record describes an endpoint of ours that is still whole, and
// refuses (an error matching ErrNotAdoptable, nothing changed) when:
//
//   - rec's network name, subnet or gateway are not this network's;
//   - its address is not a runtime address of the subnet (outside it, the
//     gateway, the network or broadcast address);
//   - its id or namespace path are not what Attach makes: a file directly in
//     StateDir/ns, named after the id or a pool name;
//   - no lease holds the address, or the lease names another veth or
//     namespace file;
//   - the host-side veth does not exist, is not a veth with our tag, or is
//     not a port of rec.Bridge, which must be one of this network's bridges;
//   - the namespace file is not a mounted network namespace, or its eth0 is
//     not the peer of that veth carrying the address;
//   - the endpoint (its veth, namespace or address) is already attached or
//     adopted by this process.
//
// On success the endpoint is registered exactly as if Attach had made it: it
// counts as a port of its bridge, its address stays in use (New reserved it
// from the lease), Reset keeps it, and Detach tears it down (veth, namespace,
// host route, lease, address) like any other. Adopt re-asserts what the
// network's configuration wants of it: the port's isolation, the veth up, and
// the host's route to the address (a /32 via an overflow bridge; none via an
// overflow bridge for one on the first bridge). Call it after New and before
// Reset.
func (n *Network) Adopt(rec Endpoint) (*Endpoint, error) {
	// Reset is kept out while the endpoint is checked and registered: it
	// would otherwise take it for a leftover.
	n.creating.RLock()
	defer n.creating.RUnlock()
	ep := rec
	ep.br = nil
	b, veth, err := n.checkAdoptable(&ep)
	if err != nil {
		return nil, err
	}
	if err := netlink.LinkSetIsolated(veth, !n.cfg.AllowRuntimeToRuntime); err != nil {
		return nil, fmt.Errorf("netns: adopt %s: isolation of port %s: %w", ep.ID, ep.HostIf, err)
	}
	if err := netlink.LinkSetUp(veth); err != nil {
		return nil, fmt.Errorf("netns: adopt %s: bring up %s: %w", ep.ID, ep.HostIf, err)
	}
	if err := n.routeTo(b, ep.Addr); err != nil {
		return nil, fmt.Errorf("netns: adopt %s: %w", ep.ID, err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	// Checked again under the lock: a concurrent Adopt of the same record
	// passed the checks too.
	if n.closed {
		return nil, errClosed
	}
	if why := n.heldLocked(&ep); why != "" {
		return nil, n.refuse(&ep, nil, "%s", why)
	}
	ep.br, ep.Bridge = b, b.name
	b.ports[ep.HostIf] = true
	n.owned[ep.HostIf] = &ep
	n.endpoints[ep.NSPath] = &ep
	// New reserved it from the lease already; reserving again is harmless
	// and keeps the address ours should the lease have been read later.
	n.addrs.reserve(ep.Addr)
	return &ep, nil
}

// refuse is Adopt's error for a record it will not take.
func (n *Network) refuse(ep *Endpoint, cause error, format string, args ...any) error {
	why := fmt.Sprintf(format, args...)
	what := fmt.Sprintf("network %s, endpoint %q (veth %s, address %s, namespace %s)", n.cfg.Name, ep.ID, ep.HostIf, ep.Addr, ep.NSPath)
	if cause != nil {
		return fmt.Errorf("%w: %s: %s: %w", ErrNotAdoptable, what, why, cause)
	}
	return fmt.Errorf("%w: %s: %s", ErrNotAdoptable, what, why)
}

// heldLocked says why ep's veth, namespace or address is already held by an
// endpoint of this process (attached, adopted or pooled), or "". n.mu is
// held.
func (n *Network) heldLocked(ep *Endpoint) string {
	if n.owned[ep.HostIf] != nil {
		return "its veth is already attached or adopted"
	}
	if n.endpoints[ep.NSPath] != nil {
		return "its namespace is already attached or adopted"
	}
	for _, o := range n.owned {
		if o.Addr == ep.Addr {
			return fmt.Sprintf("its address is already held by endpoint %q (veth %s)", o.ID, o.HostIf)
		}
		if o.NSPath == ep.NSPath {
			return fmt.Sprintf("its namespace is already held by endpoint %q (veth %s)", o.ID, o.HostIf)
		}
	}
	return ""
}

// checkAdoptable checks rec against this network and the host without
// changing anything, and returns its bridge and host-side veth.
func (n *Network) checkAdoptable(ep *Endpoint) (*bridge, netlink.Link, error) {
	n.mu.Lock()
	closed := n.closed
	held := n.heldLocked(ep)
	n.mu.Unlock()
	if closed {
		return nil, nil, errClosed
	}
	if ep.Network != n.cfg.Name {
		return nil, nil, n.refuse(ep, nil, "the record is of network %q", ep.Network)
	}
	if ep.Subnet != n.cfg.Subnet || ep.Gateway != n.gateway {
		return nil, nil, n.refuse(ep, nil, "the record's subnet %s and gateway %s are not the network's %s and %s", ep.Subnet, ep.Gateway, n.cfg.Subnet, n.gateway)
	}
	// The allocator's range: the subnet less its network address, the
	// gateway and the broadcast address.
	if !ep.Addr.Is4() || ep.Addr.Less(n.addrs.first) || n.addrs.last.Less(ep.Addr) {
		return nil, nil, n.refuse(ep, nil, "%s is not a runtime address of %s", ep.Addr, n.cfg.Subnet)
	}
	base := filepath.Base(ep.NSPath)
	if ep.ID == "" || filepath.Base(ep.ID) != ep.ID || strings.HasPrefix(ep.ID, poolPrefix) {
		return nil, nil, n.refuse(ep, nil, "invalid endpoint id")
	}
	if ep.NSPath != filepath.Join(n.nsDir, base) || (base != ep.ID && !strings.HasPrefix(base, poolPrefix)) {
		return nil, nil, n.refuse(ep, nil, "the namespace file is not %s/<id> or a pool one there", n.nsDir)
	}
	if !strings.HasPrefix(ep.HostIf, n.vethTag) || len(ep.HostIf) > 15 {
		return nil, nil, n.refuse(ep, nil, "the veth name lacks the network's tag %s", n.vethTag)
	}
	if held != "" {
		return nil, nil, n.refuse(ep, nil, "%s", held)
	}
	var b *bridge
	for _, c := range n.bridgeList() {
		if c.name == ep.Bridge {
			b = c
		}
	}
	if b == nil {
		return nil, nil, n.refuse(ep, nil, "bridge %q is not one of the network's %v", ep.Bridge, n.BridgeNames())
	}
	l, err := n.leases.read(ep.Addr)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, n.refuse(ep, nil, "no lease holds the address")
	}
	if err != nil {
		return nil, nil, n.refuse(ep, err, "its lease cannot be read")
	}
	if l.HostIf != ep.HostIf || l.NSPath != ep.NSPath {
		return nil, nil, n.refuse(ep, nil, "the address's lease names veth %s and namespace %s", l.HostIf, l.NSPath)
	}
	veth, err := netlink.LinkByName(ep.HostIf)
	if err != nil {
		return nil, nil, n.refuse(ep, err, "its veth is not there")
	}
	if veth.Type() != "veth" {
		return nil, nil, n.refuse(ep, nil, "%s is a %s, not a veth", ep.HostIf, veth.Type())
	}
	if veth.Attrs().MasterIndex != b.link.Attrs().Index {
		return nil, nil, n.refuse(ep, nil, "%s is not a port of bridge %s", ep.HostIf, b.name)
	}
	if err := n.checkNamespace(ep, veth); err != nil {
		return nil, nil, err
	}
	return b, veth, nil
}

// checkNamespace checks that ep.NSPath is a pinned network namespace (an nsfs
// bind mount, as createNamespace makes) whose eth0 is the peer of veth and
// carries ep's address.
func (n *Network) checkNamespace(ep *Endpoint, veth netlink.Link) error {
	fi, err := os.Lstat(ep.NSPath)
	if err != nil {
		return n.refuse(ep, err, "its namespace file is not there")
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return n.refuse(ep, nil, "its namespace file is a symbolic link")
	}
	// An unmounted file (the namespace gone, or never pinned) reports the
	// state dir's file system.
	var st unix.Statfs_t
	if err := unix.Statfs(ep.NSPath, &st); err != nil {
		return n.refuse(ep, err, "statfs of its namespace file")
	}
	if st.Type != unix.NSFS_MAGIC {
		return n.refuse(ep, nil, "its namespace file is not a mounted namespace (file system type %#x)", st.Type)
	}
	ns, err := vnetns.GetFromPath(ep.NSPath)
	if err != nil {
		return n.refuse(ep, err, "open its namespace")
	}
	defer ns.Close()
	typ, err := unix.IoctlRetInt(int(ns), unix.NS_GET_NSTYPE)
	if err != nil {
		return n.refuse(ep, err, "type of its namespace")
	}
	if typ != unix.CLONE_NEWNET {
		return n.refuse(ep, nil, "its namespace file is not a network namespace (type %#x)", typ)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return n.refuse(ep, err, "netlink in its namespace")
	}
	defer h.Close()
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		return n.refuse(ep, err, "no eth0 in its namespace")
	}
	// Each end of a veth pair names the other's interface index
	// (IFLA_LINK): both must match, or eth0 is another pair's end.
	if eth0.Type() != "veth" || eth0.Attrs().ParentIndex != veth.Attrs().Index || veth.Attrs().ParentIndex != eth0.Attrs().Index {
		return n.refuse(ep, nil, "eth0 in its namespace is not the peer of %s", ep.HostIf)
	}
	addrs, err := h.AddrList(eth0, netlink.FAMILY_V4)
	if err != nil {
		return n.refuse(ep, err, "addresses of eth0 in its namespace")
	}
	want := netip.PrefixFrom(ep.Addr, n.cfg.Subnet.Bits())
	for _, a := range addrs {
		if p, ok := prefixOf(a.IPNet); ok && p == want {
			return nil
		}
	}
	return n.refuse(ep, nil, "eth0 in its namespace lacks %s", want)
}

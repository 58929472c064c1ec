package netns

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
)

// Endpoint is one runtime's place on a network.
type Endpoint struct {
	ID      string       // caller's identifier; the namespace file name unless the endpoint came from the pool
	NSPath  string       // pinned network namespace to hand to the container
	Addr    netip.Addr   // the runtime's address
	Subnet  netip.Prefix // the network's subnet
	Gateway netip.Addr   // the bridge address, the runtime's default route
	HostIf  string       // host side of the veth pair
	Bridge  string       // the bridge HostIf is a port of: the first, or an overflow one
	Network string       // network name
	Pooled  bool         // Attach took it ready from the pool

	br *bridge
}

// Attach gives id a namespace with eth0 on the bridge, lo up, an address and
// a default route via the bridge: one from the pool when there is a ready
// one, else a new one. id must be a valid file name.
func (n *Network) Attach(ctx context.Context, id string) (*Endpoint, error) {
	if id == "" || filepath.Base(id) != id || strings.HasPrefix(id, poolPrefix) {
		return nil, fmt.Errorf("netns: invalid endpoint id %q", id)
	}
	n.startPool()
	n.mu.Lock()
	pool := n.pool
	n.mu.Unlock()
	if pool != nil {
		select {
		case ep := <-pool:
			ep.ID, ep.Pooled = id, true
			n.mu.Lock()
			closed := n.closed
			if !closed {
				n.endpoints[ep.NSPath] = ep
			}
			n.mu.Unlock()
			if closed {
				_ = n.teardown(ep)
				return nil, errClosed
			}
			return ep, nil
		default:
		}
	}
	ep, err := n.create(ctx, id, id)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	closed := n.closed
	if !closed {
		n.endpoints[ep.NSPath] = ep
	}
	n.mu.Unlock()
	if closed {
		_ = n.teardown(ep)
		return nil, errClosed
	}
	return ep, nil
}

var errClosed = errors.New("netns: network is closed")

// create builds an endpoint whose namespace file is nsDir/file. The lease is
// written before anything exists in the kernel, so that every veth of ours
// has one.
func (n *Network) create(ctx context.Context, id, file string) (_ *Endpoint, err error) {
	n.creating.RLock()
	defer n.creating.RUnlock()
	if n.seq.Load() == 0 {
		n.seq.CompareAndSwap(0, uint64(rand.Uint32()|1))
	}
	ep := &Endpoint{
		ID:      id,
		NSPath:  filepath.Join(n.nsDir, file),
		Subnet:  n.cfg.Subnet,
		Gateway: n.gateway,
		HostIf:  fmt.Sprintf("%s%x", n.vethTag, uint32(n.seq.Add(1))),
		Network: n.cfg.Name,
	}
	for attempt := 0; ; attempt++ {
		addr, err := n.addrs.getOrWait(ctx, func() bool { return n.tearingDown.Load() > 0 })
		if err != nil {
			if errors.Is(err, ErrNoAddress) {
				return nil, n.noAddress(err)
			}
			return nil, err
		}
		err = n.leases.create(lease{Addr: addr, ID: id, HostIf: ep.HostIf, NSPath: ep.NSPath})
		if err == nil {
			ep.Addr = addr
			break
		}
		if !errors.Is(err, fs.ErrExist) {
			n.addrs.put(addr)
			return nil, err
		}
		// Leased by someone else (a lease file we did not load): leave the
		// address reserved and take another.
		if attempt > 64 {
			return nil, n.noAddress(ErrNoAddress)
		}
	}
	n.mu.Lock()
	n.owned[ep.HostIf] = ep
	n.mu.Unlock()
	defer func() {
		if err != nil {
			_ = n.teardown(ep)
		}
	}()
	if err := createNamespace(ep.NSPath); err != nil {
		if errors.Is(err, fs.ErrExist) {
			// Another endpoint's (one adopted from an earlier process):
			// the teardown below must leave it alone.
			ep.NSPath = ""
		}
		return nil, err
	}
	ns, err := vnetns.GetFromPath(ep.NSPath)
	if err != nil {
		return nil, fmt.Errorf("netns: open %s: %w", ep.NSPath, err)
	}
	defer ns.Close()
	veth, err := n.addVeth(ep, ns)
	if err != nil {
		return nil, err
	}
	if !n.cfg.AllowRuntimeToRuntime {
		if err := netlink.LinkSetIsolated(veth, true); err != nil {
			return nil, fmt.Errorf("netns: isolate port %s: %w", ep.HostIf, err)
		}
	}
	if err := noIPv6Addrs(nil, veth); err != nil {
		return nil, err
	}
	if err := netlink.LinkSetUp(veth); err != nil {
		return nil, fmt.Errorf("netns: bring up %s: %w", ep.HostIf, err)
	}
	if err := configureInside(ns, ep); err != nil {
		return nil, err
	}
	if err := n.routeTo(ep.br, ep.Addr); err != nil {
		return nil, err
	}
	// The new holder is up: forget the old one's MAC.
	if err := n.forgetNeighbour(ep.Addr); err != nil {
		return nil, err
	}
	return ep, nil
}

// addVeth makes ep's veth pair, the host side a port of the first bridge
// with room (an overflow bridge made now when none has), the peer eth0 in ns.
func (n *Network) addVeth(ep *Endpoint, ns vnetns.NsHandle) (*netlink.Veth, error) {
	for attempt := 0; ; attempt++ {
		b, err := n.placePort(ep.HostIf)
		if err != nil {
			return nil, err
		}
		veth := &netlink.Veth{
			LinkAttrs:     netlink.LinkAttrs{Name: ep.HostIf, MasterIndex: b.link.Attrs().Index},
			PeerName:      "eth0",
			PeerNamespace: netlink.NsFd(int(ns)),
		}
		err = netlink.LinkAdd(veth)
		if err == nil {
			ep.br, ep.Bridge = b, b.name
			return veth, nil
		}
		full := errors.Is(err, syscall.EXFULL)
		n.releasePort(b, ep.HostIf, full)
		if !full {
			return nil, fmt.Errorf("netns: create veth %s: %w", ep.HostIf, err)
		}
		// The kernel's limit of ports on one bridge (BR_MAX_PORTS),
		// reached before ours: other ports on it. Marked full, the next
		// bridge or a new one takes the port.
		if attempt >= 3 {
			return nil, &CapacityError{Network: n.cfg.Name, Err: err,
				Limit: fmt.Sprintf("bridge %s has no free port (the kernel allows 1,023 per bridge)", b.name)}
		}
	}
}

func configureInside(ns vnetns.NsHandle, ep *Endpoint) error {
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return fmt.Errorf("netns: handle in %s: %w", ep.NSPath, err)
	}
	defer h.Close()
	eth0, err := h.LinkByName("eth0")
	if err != nil {
		return fmt.Errorf("netns: eth0 in %s: %w", ep.NSPath, err)
	}
	if err := h.AddrAdd(eth0, &netlink.Addr{IPNet: prefixToIPNet(netip.PrefixFrom(ep.Addr, ep.Subnet.Bits()))}); err != nil {
		return fmt.Errorf("netns: address %s: %w", ep.Addr, err)
	}
	if err := noIPv6Addrs(h, eth0); err != nil {
		return err
	}
	if err := h.LinkSetUp(eth0); err != nil {
		return fmt.Errorf("netns: bring up eth0: %w", err)
	}
	lo, err := h.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("netns: lo: %w", err)
	}
	if err := h.LinkSetUp(lo); err != nil {
		return fmt.Errorf("netns: bring up lo: %w", err)
	}
	gw := net.IP(ep.Gateway.AsSlice())
	if err := h.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: gw}); err != nil {
		return fmt.Errorf("netns: default route: %w", err)
	}
	return nil
}

// Detach removes the endpoint's veth pair and namespace and frees its address.
// The address is freed only once the veth is gone, so it is never handed out
// while the old link could still answer for it. With AsyncDetach the work is
// done in the background and errors are logged.
func (n *Network) Detach(ctx context.Context, ep *Endpoint) error {
	if ep == nil {
		return nil
	}
	n.mu.Lock()
	delete(n.endpoints, ep.NSPath)
	async := n.cfg.AsyncDetach && !n.closed
	if async {
		n.bg.Add(1)
		n.tearingDown.Add(1)
	}
	n.mu.Unlock()
	if !async {
		return n.teardown(ep)
	}
	go func() {
		defer n.bg.Done()
		defer n.tearingDown.Add(-1)
		if err := n.teardown(ep); err != nil {
			n.log.Warn("endpoint teardown", "network", n.cfg.Name, "id", ep.ID, "err", err)
		}
	}()
	return nil
}

func (n *Network) teardown(ep *Endpoint) error {
	defer func() {
		n.mu.Lock()
		delete(n.owned, ep.HostIf)
		n.mu.Unlock()
	}()
	var errs []error
	gone := false
	if l, err := netlink.LinkByName(ep.HostIf); err == nil {
		if err := netlink.LinkDel(l); err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("netns: delete veth %s: %w", ep.HostIf, err))
		} else {
			gone = !linkExists(ep.HostIf)
		}
	} else if isNotFound(err) {
		gone = true
	} else {
		errs = append(errs, fmt.Errorf("netns: look up veth %s: %w", ep.HostIf, err))
	}
	if ep.NSPath != "" {
		if err := removeNamespace(ep.NSPath); err != nil {
			errs = append(errs, err)
		}
	}
	if gone && ep.br != nil {
		if ep.br.overflow() && ep.Addr.IsValid() {
			// Removed before the address goes back: a later holder on the
			// first bridge must not find it. A failure is reported; the next
			// holder of the address replaces or removes it anyway.
			if err := netlink.RouteDel(hostRoute(ep.br, ep.Addr)); err != nil && !isNoRoute(err) {
				errs = append(errs, fmt.Errorf("netns: remove the route of %s via %s: %w", ep.Addr, ep.br.name, err))
			}
		}
		n.releasePort(ep.br, ep.HostIf, false)
	}
	if !gone || !ep.Addr.IsValid() {
		if len(errs) == 0 && ep.Addr.IsValid() {
			errs = append(errs, fmt.Errorf("netns: veth %s still exists after deletion", ep.HostIf))
		}
		return errors.Join(errs...)
	}
	if err := n.leases.remove(ep.Addr); err != nil {
		return errors.Join(append(errs, err)...)
	}
	n.addrs.put(ep.Addr)
	return errors.Join(errs...)
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

package netns

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"path/filepath"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
)

// Endpoint is one runtime's place on a network.
type Endpoint struct {
	ID      string       // caller's identifier, used for the namespace file name
	NSPath  string       // pinned network namespace to hand to the container
	Addr    netip.Addr   // the runtime's address
	Subnet  netip.Prefix // the network's subnet
	Gateway netip.Addr   // the bridge address, the runtime's default route
	HostIf  string       // host side of the veth pair
	Network string       // network name
}

// Attach creates a namespace for id with eth0 on the bridge, lo up, an address
// and a default route via the bridge. id must be a valid file name.
func (n *Network) Attach(ctx context.Context, id string) (_ *Endpoint, err error) {
	if id == "" || filepath.Base(id) != id {
		return nil, fmt.Errorf("netns: invalid endpoint id %q", id)
	}
	if n.seq.Load() == 0 {
		n.seq.CompareAndSwap(0, uint64(rand.Uint32()|1))
	}
	addr, err := n.addrs.get()
	if err != nil {
		return nil, err
	}
	ep := &Endpoint{
		ID:      id,
		NSPath:  filepath.Join(n.nsDir, id),
		Addr:    addr,
		Subnet:  n.cfg.Subnet,
		Gateway: n.gateway,
		HostIf:  fmt.Sprintf("%s%x", n.vethTag, uint32(n.seq.Add(1))),
		Network: n.cfg.Name,
	}
	defer func() {
		if err != nil {
			_ = n.teardown(ep)
		}
	}()
	if err := createNamespace(ep.NSPath); err != nil {
		return nil, err
	}
	ns, err := vnetns.GetFromPath(ep.NSPath)
	if err != nil {
		return nil, fmt.Errorf("netns: open %s: %w", ep.NSPath, err)
	}
	defer ns.Close()
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: ep.HostIf, MasterIndex: n.bridge.Attrs().Index},
		PeerName:      "eth0",
		PeerNamespace: netlink.NsFd(int(ns)),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("netns: create veth %s: %w", ep.HostIf, err)
	}
	if err := netlink.LinkSetUp(veth); err != nil {
		return nil, fmt.Errorf("netns: bring up %s: %w", ep.HostIf, err)
	}
	if err := configureInside(ns, ep); err != nil {
		return nil, err
	}
	n.mu.Lock()
	n.endpoints[ep.NSPath] = ep
	n.mu.Unlock()
	return ep, nil
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
// while the old link could still answer for it.
func (n *Network) Detach(ctx context.Context, ep *Endpoint) error {
	if ep == nil {
		return nil
	}
	n.mu.Lock()
	delete(n.endpoints, ep.NSPath)
	n.mu.Unlock()
	return n.teardown(ep)
}

func (n *Network) teardown(ep *Endpoint) error {
	var errs []error
	if l, err := netlink.LinkByName(ep.HostIf); err == nil {
		if err := netlink.LinkDel(l); err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("netns: delete veth %s: %w", ep.HostIf, err))
		}
	} else if !isNotFound(err) {
		errs = append(errs, fmt.Errorf("netns: look up veth %s: %w", ep.HostIf, err))
	}
	if err := removeNamespace(ep.NSPath); err != nil {
		errs = append(errs, err)
	}
	if len(errs) == 0 {
		n.addrs.put(ep.Addr)
	}
	return errors.Join(errs...)
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

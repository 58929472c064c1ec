package netns

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Check reports whether the network can still take runtimes: its bridge is the
// one New made (not deleted, nor re-created under the same name, which would
// leave Attach wiring veths to an interface index that is gone), is up and
// carries the gateway address, and the network's nftables tables are in place
// (without them runtimes would reach each other, the host and metadata
// services). Nothing is repaired: the error names what is broken so that the
// operator, told by the health endpoint, can restart the executor.
//
// It costs a few netlink requests and no change on the host: callers may poll
// it.
func (n *Network) Check() error {
	for _, b := range n.bridgeList() {
		if err := n.checkBridge(b); err != nil {
			return err
		}
	}
	return n.checkFirewall()
}

// checkBridge checks one bridge: the first carries the gateway with the
// subnet's prefix, an overflow bridge as a /32.
func (n *Network) checkBridge(b *bridge) error {
	name := b.name
	l, err := netlink.LinkByName(name)
	if err != nil {
		if isNotFound(err) {
			return fmt.Errorf("bridge %s is missing", name)
		}
		return fmt.Errorf("look up bridge %s: %w", name, err)
	}
	if l.Type() != "bridge" {
		return fmt.Errorf("interface %s is a %s, not the bridge", name, l.Type())
	}
	if l.Attrs().Index != b.link.Attrs().Index {
		return fmt.Errorf("bridge %s was re-created (index %d, not %d): runtimes cannot be attached to it", name, l.Attrs().Index, b.link.Attrs().Index)
	}
	// The administrative flag, not the operational state: a bridge without
	// ports has no carrier and reports itself down while it works.
	if l.Attrs().Flags&net.FlagUp == 0 {
		return fmt.Errorf("bridge %s is down", name)
	}
	// A dump: interrupted when addresses change meanwhile (runtimes coming
	// and going), which must not read as a broken bridge.
	addrs, err := dump(func() ([]netlink.Addr, error) { return netlink.AddrList(l, netlink.FAMILY_V4) })
	if err != nil {
		return fmt.Errorf("addresses of bridge %s: %w", name, err)
	}
	want := netip.PrefixFrom(n.gateway, n.cfg.Subnet.Bits())
	if b.overflow() {
		want = netip.PrefixFrom(n.gateway, 32)
	}
	for _, a := range addrs {
		if a.IPNet == nil {
			continue
		}
		ip, ok := netip.AddrFromSlice(a.IPNet.IP.To4())
		ones, _ := a.IPNet.Mask.Size()
		if ok && netip.PrefixFrom(ip, ones) == want {
			return nil
		}
	}
	return fmt.Errorf("bridge %s lacks its address %s", name, want)
}

// checkFirewall looks the network's tables up by name: `nft flush ruleset`
// (the first line of Debian's /etc/nftables.conf) removes them silently.
func (n *Network) checkFirewall() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	name := TableName(n.cfg.Bridge)
	families := []nftables.TableFamily{nftables.TableFamilyINet}
	if !n.cfg.AllowRuntimeToRuntime {
		families = append(families, nftables.TableFamilyBridge)
	}
	for _, f := range families {
		if _, err := c.ListTableOfFamily(name, f); err != nil {
			if errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("nftables table %s %s is missing", familyName(f), name)
			}
			return fmt.Errorf("look up nftables table %s %s: %w", familyName(f), name, err)
		}
	}
	return nil
}

// familyName spells a table family as nft(8) does.
func familyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyINet:
		return "inet"
	case nftables.TableFamilyBridge:
		return "bridge"
	}
	return fmt.Sprint(f)
}

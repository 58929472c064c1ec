package netns

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/vishvananda/netlink"
)

// ensureBridge makes sure the bridge carries alias (our owner mark), the
// pinned MAC and addr, and is up. existing is the bridge New checked as ours;
// nil makes it. A bridge made here is removed again if a later step fails.
func ensureBridge(name string, addr netip.Prefix, existing netlink.Link, alias string) (_ netlink.Link, err error) {
	l := existing
	if l == nil {
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}
		if err := netlink.LinkAdd(br); err != nil {
			if errors.Is(err, syscall.EEXIST) {
				// Made by someone else since New looked: theirs.
				return nil, &ForeignError{What: "bridge", Name: name, Detail: "another program or executor created it while this one was starting"}
			}
			return nil, fmt.Errorf("netns: create bridge %s: %w", name, err)
		}
		if l, err = netlink.LinkByName(name); err != nil {
			return nil, fmt.Errorf("netns: look up bridge %s: %w", name, err)
		}
		defer func() {
			if err != nil {
				_ = netlink.LinkDel(l)
			}
		}()
	}
	// The kernel ignores an alias given with RTM_NEWLINK: set it now. A
	// crash in between leaves an unmarked bridge, which the next start
	// adopts since the owner record was written first.
	if l.Attrs().Alias != alias {
		if err := netlink.LinkSetAlias(l, alias); err != nil {
			return nil, fmt.Errorf("netns: mark bridge %s: %w", name, err)
		}
	}
	// A bridge without an address of its own takes the lowest MAC of its
	// ports, so it changes as runtimes come and go; runtimes that cached
	// the old one would send their replies nowhere until their ARP entry
	// ages out (tens of seconds of stalled executions). Pin it.
	mac := bridgeMAC(name)
	if !bytes.Equal(l.Attrs().HardwareAddr, mac) {
		if err := netlink.LinkSetHardwareAddr(l, mac); err != nil {
			return nil, fmt.Errorf("netns: set the address of bridge %s: %w", name, err)
		}
	}
	if err := noIPv6Addrs(nil, l); err != nil {
		return nil, err
	}
	nl := &netlink.Addr{IPNet: prefixToIPNet(addr)}
	if err := netlink.AddrReplace(l, nl); err != nil {
		return nil, fmt.Errorf("netns: address %s on bridge %s: %w", addr, name, err)
	}
	if err := netlink.LinkSetUp(l); err != nil {
		return nil, fmt.Errorf("netns: bring up bridge %s: %w", name, err)
	}
	return l, nil
}

// bridgeMAC is a stable, locally administered unicast MAC for a bridge name.
func bridgeMAC(name string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("executor-bridge:" + name))
	mac := net.HardwareAddr(sum[:6])
	mac[0] = mac[0]&0xfe | 0x02 // unicast, locally administered
	return mac
}

func isNotFound(err error) bool {
	var lnf netlink.LinkNotFoundError
	return errors.As(err, &lnf) || errors.Is(err, syscall.ENODEV) || errors.Is(err, syscall.ENOENT)
}

package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
)

// TestAddressExhaustionIsCapacity fills a /29 (5 runtime addresses): the next
// Attach fails with an error matching ErrCapacity that names the subnet, and
// leaves nothing of its own behind; once one endpoint goes, Attach works again.
func TestAddressExhaustionIsCapacity(t *testing.T) {
	n := testNetwork(t, 29, nil)
	ctx := context.Background()
	var eps []*Endpoint
	for i := range 5 {
		ep, err := n.Attach(ctx, fmt.Sprintf("cap%d", i))
		if err != nil {
			t.Fatalf("attach %d of 5: %v", i, err)
		}
		eps = append(eps, ep)
	}
	before := ourVeths(t, n)
	_, err := n.Attach(ctx, "cap-over")
	if !errors.Is(err, ErrCapacity) || !errors.Is(err, ErrNoAddress) {
		t.Fatalf("attach on a full subnet: %v, want an error matching ErrCapacity and ErrNoAddress", err)
	}
	var ce *CapacityError
	if !errors.As(err, &ce) || ce.Network != n.Name() || !strings.Contains(ce.Limit, n.Subnet().String()) {
		t.Errorf("capacity error %#v does not name network %s and subnet %s", ce, n.Name(), n.Subnet())
	}
	if after := ourVeths(t, n); after != before {
		t.Errorf("veths %d before the failed attach, %d after", before, after)
	}
	if _, err := os.Stat(n.nsDir + "/cap-over"); !os.IsNotExist(err) {
		t.Errorf("namespace file of the failed attach: %v", err)
	}
	if ents, _ := os.ReadDir(n.leases.dir); len(ents) != 5 {
		t.Errorf("%d leases, want 5", len(ents))
	}
	if err := n.Detach(ctx, eps[2]); err != nil {
		t.Fatal(err)
	}
	ep, err := n.Attach(ctx, "cap-again")
	if err != nil {
		t.Fatalf("attach after a detach: %v", err)
	}
	if ep.Addr != eps[2].Addr {
		t.Errorf("got %s, want the freed %s", ep.Addr, eps[2].Addr)
	}
}

// ourVeths counts the host-side veths of n.
func ourVeths(t *testing.T, n *Network) int {
	t.Helper()
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	c := 0
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, n.vethTag) {
			c++
		}
	}
	return c
}

// TestReusedAddressIsReachableAtOnce: on a full subnet a freed address is
// handed out again at once, to a namespace with another MAC. The host must
// not keep sending to the old holder's MAC (its neighbour entry) until the
// entry ages out, which took longer than a runtime's start timeout; on an
// overflow bridge as on the first.
func TestReusedAddressIsReachableAtOnce(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		old  int // which of the 5 endpoints goes
	}{
		{"first bridge", nil, 1},
		// 2 ports a bridge: endpoints 2 and 3 are on the first overflow
		// bridge, which is also where the freed port is.
		{"overflow bridge", func(c *Config) { c.BridgePorts = 2 }, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := testNetwork(t, 29, tc.mod)
			ctx := context.Background()
			var eps []*Endpoint
			for i := range 5 {
				ep, err := n.Attach(ctx, fmt.Sprintf("reuse%d", i))
				if err != nil {
					t.Fatal(err)
				}
				eps = append(eps, ep)
			}
			old := eps[tc.old]
			addr := net.JoinHostPort(old.Addr.String(), "3000")
			listen(t, old.NSPath, addr, "old")
			if body, err := hostGet(addr); err != nil || body != "old" {
				t.Fatalf("host -> old holder: %q %v", body, err)
			}
			if err := n.Detach(ctx, old); err != nil {
				t.Fatal(err)
			}
			ep, err := n.Attach(ctx, "reuse-new")
			if err != nil {
				t.Fatal(err)
			}
			if ep.Addr != old.Addr || ep.Bridge != old.Bridge {
				t.Fatalf("got %s on %s, want the freed %s on %s", ep.Addr, ep.Bridge, old.Addr, old.Bridge)
			}
			listen(t, ep.NSPath, addr, "new")
			if body, err := hostGet(addr); err != nil || body != "new" {
				t.Fatalf("host -> new holder of %s: %q %v", ep.Addr, body, err)
			}
		})
	}
}

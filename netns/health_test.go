package netns

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
)

// TestCheck breaks a real network the ways an operator or another program
// can, and checks that Check names what broke; an intact one passes.
func TestCheck(t *testing.T) {
	link := func(t *testing.T, n *Network) netlink.Link {
		t.Helper()
		l, err := netlink.LinkByName(n.BridgeName())
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	dropTable := func(f nftables.TableFamily) func(*testing.T, *Network) {
		return func(t *testing.T, n *Network) {
			c, err := nftables.New()
			if err != nil {
				t.Fatal(err)
			}
			c.DelTable(&nftables.Table{Name: TableName(n.BridgeName()), Family: f})
			if err := c.Flush(); err != nil {
				t.Fatal(err)
			}
		}
	}
	tests := []struct {
		name   string
		mod    func(*Config)
		damage func(*testing.T, *Network)
		want   string // "" = healthy
	}{
		{name: "intact"},
		{name: "intact, runtime to runtime allowed (no bridge table)", mod: func(c *Config) { c.AllowRuntimeToRuntime = true }},
		{name: "bridge deleted", want: "bridge %s is missing", damage: func(t *testing.T, n *Network) {
			if err := netlink.LinkDel(link(t, n)); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "bridge re-created", want: "bridge %s was re-created", damage: func(t *testing.T, n *Network) {
			if err := netlink.LinkDel(link(t, n)); err != nil {
				t.Fatal(err)
			}
			impostor := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: n.BridgeName()}}
			if err := netlink.LinkAdd(impostor); err != nil {
				t.Fatal(err)
			}
			// Runs before Close, which leaves alone a bridge it did not make.
			t.Cleanup(func() { _ = netlink.LinkDel(impostor) })
		}},
		{name: "bridge down", want: "bridge %s is down", damage: func(t *testing.T, n *Network) {
			if err := netlink.LinkSetDown(link(t, n)); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "gateway address removed", want: "bridge %s lacks its address", damage: func(t *testing.T, n *Network) {
			gw := netip.PrefixFrom(n.Gateway(), n.Subnet().Bits())
			if err := netlink.AddrDel(link(t, n), &netlink.Addr{IPNet: prefixToIPNet(gw)}); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "inet table deleted", want: "nftables table inet executor_%s is missing", damage: dropTable(nftables.TableFamilyINet)},
		{name: "bridge table deleted", want: "nftables table bridge executor_%s is missing", damage: dropTable(nftables.TableFamilyBridge)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := testNetwork(t, 28, tt.mod)
			if err := n.Check(); err != nil {
				t.Fatalf("a network New just made: %v", err)
			}
			if tt.damage == nil {
				return
			}
			tt.damage(t, n)
			err := n.Check()
			want := strings.ReplaceAll(tt.want, "%s", n.BridgeName())
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("Check after %s: %v, want an error containing %q", tt.name, err, want)
			}
		})
	}
}

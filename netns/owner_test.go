package netns

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"

	"executor/netns/nettest"
)

// uniqueConfig is a network configuration no other test or run shares.
func uniqueConfig(t *testing.T) Config {
	t.Helper()
	requireRoot(t)
	netSeq.mu.Lock()
	netSeq.n++
	seq := netSeq.n
	netSeq.mu.Unlock()
	subnet, err := nettest.FreeSubnet(24)
	if err != nil {
		t.Fatal(err)
	}
	return Config{
		Name:       fmt.Sprintf("owntest-%d-%d-%d", os.Getpid(), seq, time.Now().UnixNano()),
		Subnet:     subnet,
		StateDir:   filepath.Join(t.TempDir(), "state"),
		DNSServers: []netip.Addr{},
	}
}

// addBridge makes a bridge as another program or executor would, with alias
// and address when given; cleanup removes it.
func addBridge(t *testing.T, name, alias string, addr netip.Prefix) netlink.Link {
	t.Helper()
	if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil {
		t.Fatalf("add bridge %s: %v", name, err)
	}
	l, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = netlink.LinkDel(l) })
	if alias != "" {
		if err := netlink.LinkSetAlias(l, alias); err != nil {
			t.Fatal(err)
		}
	}
	if addr.IsValid() {
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: prefixToIPNet(addr)}); err != nil {
			t.Fatal(err)
		}
	}
	l, err = netlink.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// addTable makes an nftables table with one rule commented comment ("" for
// none), as another executor of the same network name (or an older version
// of this one) would; cleanup removes it.
func addTable(t *testing.T, name string, family nftables.TableFamily, comment string) {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	tb := c.AddTable(&nftables.Table{Name: name, Family: family})
	accept := nftables.ChainPolicyAccept
	ch := c.AddChain(&nftables.Chain{Name: "forward", Table: tb, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	r := &nftables.Rule{Table: tb, Chain: ch, Exprs: []expr.Any{&expr.Counter{}}}
	if comment != "" {
		r.UserData = ruleComment(comment)
	}
	c.AddRule(r)
	if err := c.Flush(); err != nil {
		t.Fatalf("add table %s: %v", name, err)
	}
	t.Cleanup(func() {
		c, err := nftables.New()
		if err != nil {
			return
		}
		deleteTable(c, &nftables.Table{Name: name, Family: family})
		_ = c.Flush()
	})
}

// tableState describes the tables named name, their rules and comments, to
// compare before and after.
func tableState(t *testing.T, name string) string {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	chains, err := c.ListChains()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, ch := range chains {
		if ch.Table.Name != name {
			continue
		}
		rules, err := c.GetRules(ch.Table, ch)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rules {
			out = append(out, fmt.Sprintf("%d/%s/%d:%q", ch.Table.Family, ch.Name, r.Handle, commentOf(r.UserData)))
		}
	}
	return strings.Join(out, "\n")
}

func mustNew(t *testing.T, cfg Config) *Network {
	t.Helper()
	n, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Close(context.Background()); err != nil {
			t.Errorf("close: %v", err)
		}
		assertGone(t, n)
	})
	return n
}

// TestOwnership starts a network over what another executor, an older
// version or another program left under its names, and checks that New
// refuses what is not ours without touching it or leaving anything behind,
// and adopts what is.
func TestOwnership(t *testing.T) {
	const otherMark = markPrefix + "0123456789abcdef0123456789abcdef"
	tests := []struct {
		name string
		// before makes what exists when New runs.
		before func(t *testing.T, cfg Config)
		// want is "" for an adoption, else what the *ForeignError names.
		want string
	}{
		{"nothing there", func(*testing.T, Config) {}, ""},
		{"another executor's bridge", func(t *testing.T, cfg Config) {
			addBridge(t, BridgeName(cfg.Name), otherMark+" state=/var/lib/other/networks/x", netip.Prefix{})
		}, "bridge %s is not this executor's: it belongs to another executor (alias \"" + otherMark},
		{"an unmarked bridge this state dir does not record", func(t *testing.T, cfg Config) {
			addBridge(t, BridgeName(cfg.Name), "", netip.Prefix{})
		}, "bridge %s is not this executor's: it has no owner mark"},
		{"an interface of our name that is no bridge", func(t *testing.T, cfg Config) {
			peer := fmt.Sprintf("vp%d", time.Now().UnixNano()%1e9)
			veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: BridgeName(cfg.Name)}, PeerName: peer}
			if err := netlink.LinkAdd(veth); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = netlink.LinkDel(veth) })
		}, "interface %s is not this executor's: it is a veth, not a bridge"},
		{"another executor's inet table, no bridge", func(t *testing.T, cfg Config) {
			addTable(t, TableName(BridgeName(cfg.Name)), nftables.TableFamilyINet, otherMark)
		}, "nftables table inet executor_%s is not this executor's: its rules belong to another executor"},
		{"another executor's bridge table", func(t *testing.T, cfg Config) {
			addTable(t, TableName(BridgeName(cfg.Name)), nftables.TableFamilyBridge, otherMark)
		}, "nftables table bridge executor_%s is not this executor's"},
		{"an unmarked table this state dir does not record", func(t *testing.T, cfg Config) {
			addTable(t, TableName(BridgeName(cfg.Name)), nftables.TableFamilyINet, "")
		}, "nftables table inet executor_%s is not this executor's: it has no owner mark"},
		{"an older version's bridge and tables, recorded by its leases dir", func(t *testing.T, cfg Config) {
			addBridge(t, BridgeName(cfg.Name), "", netip.Prefix{})
			addTable(t, TableName(BridgeName(cfg.Name)), nftables.TableFamilyINet, "")
			if err := os.MkdirAll(filepath.Join(cfg.StateDir, "leases"), 0o700); err != nil {
				t.Fatal(err)
			}
		}, ""},
		{"our bridge, made before a crash took us before it was marked", func(t *testing.T, cfg Config) {
			o, err := readOwner(cfg.StateDir, BridgeName(cfg.Name))
			if err != nil {
				t.Fatal(err)
			}
			if err := o.save(); err != nil {
				t.Fatal(err)
			}
			addBridge(t, BridgeName(cfg.Name), "", netip.Prefix{})
		}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := uniqueConfig(t)
			br := BridgeName(cfg.Name)
			tc.before(t, cfg)
			before, _ := netlink.LinkByName(br)
			tables := tableState(t, TableName(br))
			_, ownerErr := os.Stat(filepath.Join(cfg.StateDir, ownerFile))

			n, err := New(context.Background(), cfg)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				t.Cleanup(func() {
					if err := n.Close(context.Background()); err != nil {
						t.Errorf("close: %v", err)
					}
					assertGone(t, n)
				})
				l, err := netlink.LinkByName(br)
				if err != nil {
					t.Fatal(err)
				}
				if markOf(l.Attrs().Alias) != n.owner.mark() {
					t.Errorf("bridge alias %q, want our mark %q", l.Attrs().Alias, n.owner.mark())
				}
				if before != nil && l.Attrs().Index != before.Attrs().Index {
					t.Errorf("the bridge was re-created rather than adopted")
				}
				for _, r := range strings.Split(tableState(t, TableName(br)), "\n") {
					if !strings.Contains(r, n.owner.mark()) {
						t.Errorf("rule %s does not bear our mark", r)
					}
				}
				return
			}
			if err == nil {
				n.Close(context.Background())
				t.Fatal("New took what is not ours")
			}
			var fe *ForeignError
			if !errors.As(err, &fe) {
				t.Errorf("error %v is not a *ForeignError", err)
			}
			if want := strings.ReplaceAll(tc.want, "%s", br); !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
			// Untouched: the same link, alias, address, tables and rules.
			after, _ := netlink.LinkByName(br)
			switch {
			case (before == nil) != (after == nil):
				t.Errorf("interface %s: %v before, %v after", br, before != nil, after != nil)
			case before != nil && (after.Attrs().Index != before.Attrs().Index || after.Attrs().Alias != before.Attrs().Alias ||
				after.Attrs().HardwareAddr.String() != before.Attrs().HardwareAddr.String()):
				t.Errorf("interface %s changed: %+v -> %+v", br, before.Attrs(), after.Attrs())
			}
			if got := tableState(t, TableName(br)); got != tables {
				t.Errorf("tables changed: %q -> %q", tables, got)
			}
			// Nothing of ours left behind either.
			if _, err := os.Stat(filepath.Join(cfg.StateDir, ownerFile)); ownerErr != nil && err == nil {
				t.Error("a refused start left an owner record")
			}
			for _, d := range []string{"ns", "leases"} {
				if _, err := os.Stat(filepath.Join(cfg.StateDir, d)); err == nil {
					t.Errorf("a refused start made %s", d)
				}
			}
		})
	}
}

// Two executors given the same network name: the second is refused and the
// first's bridge, tables and runtimes carry on; the first's mark survives
// the refused start and its Close still removes everything.
func TestSecondNetworkOfTheSameNameIsRefused(t *testing.T) {
	cfg := uniqueConfig(t)
	first := mustNew(t, cfg)
	ctx := context.Background()
	ep, err := first.Attach(ctx, "rt")
	if err != nil {
		t.Fatal(err)
	}
	listen(t, ep.NSPath, hostPort(ep.Addr, 3000), "first")
	br, _ := netlink.LinkByName(first.BridgeName())
	tables := tableState(t, TableName(first.BridgeName()))

	for _, subnet := range []netip.Prefix{cfg.Subnet, netip.MustParsePrefix("10.255.254.0/24")} {
		second := cfg
		second.StateDir = filepath.Join(t.TempDir(), "other-state")
		second.Subnet = subnet
		n, err := New(ctx, second)
		if err == nil {
			n.Close(ctx)
			t.Fatalf("second network of the same name on %s started", subnet)
		}
		var fe *ForeignError
		if !errors.As(err, &fe) || !strings.Contains(err.Error(), "belongs to another executor") || !strings.Contains(err.Error(), cfg.StateDir) {
			t.Errorf("second network's error %v: want a *ForeignError naming the first's state dir", err)
		}
	}
	after, err := netlink.LinkByName(first.BridgeName())
	if err != nil || after.Attrs().Index != br.Attrs().Index || after.Attrs().Alias != br.Attrs().Alias {
		t.Fatalf("first bridge changed: %v %+v", err, after)
	}
	if got := tableState(t, TableName(first.BridgeName())); got != tables {
		t.Errorf("first's tables changed: %q -> %q", tables, got)
	}
	if body, err := hostGet(hostPort(ep.Addr, 3000)); err != nil || body != "first" {
		t.Errorf("first's runtime after the refused start: %q %v", body, err)
	}
	if err := first.Detach(ctx, ep); err != nil {
		t.Fatal(err)
	}
}

// Close and Reset never remove what no longer bears our mark, nor veths
// that only share our tag.
func TestCloseAndResetLeaveOthersAlone(t *testing.T) {
	ctx := context.Background()
	t.Run("bridge re-marked by another", func(t *testing.T) {
		n, err := New(ctx, uniqueConfig(t))
		if err != nil {
			t.Fatal(err)
		}
		l, _ := netlink.LinkByName(n.BridgeName())
		t.Cleanup(func() { _ = netlink.LinkDel(l) })
		if err := netlink.LinkSetAlias(l, markPrefix+"someoneelse"); err != nil {
			t.Fatal(err)
		}
		err = n.Close(ctx)
		if err == nil || !strings.Contains(err.Error(), "no longer bears this executor's mark") {
			t.Errorf("Close: %v, want it to say the bridge is no longer ours", err)
		}
		if _, err := netlink.LinkByName(n.BridgeName()); err != nil {
			t.Errorf("Close removed a bridge that is not ours: %v", err)
		}
		if tabs := ourTables(t, n); len(tabs) > 0 {
			t.Errorf("our own tables left: %v", tabs)
		}
	})
	t.Run("table replaced by another's", func(t *testing.T) {
		n, err := New(ctx, uniqueConfig(t))
		if err != nil {
			t.Fatal(err)
		}
		name := TableName(n.BridgeName())
		c, _ := nftables.New()
		deleteTable(c, &nftables.Table{Name: name, Family: nftables.TableFamilyINet})
		if err := c.Flush(); err != nil {
			t.Fatal(err)
		}
		addTable(t, name, nftables.TableFamilyINet, markPrefix+"someoneelse")
		err = n.Close(ctx)
		if err == nil || !strings.Contains(err.Error(), "nftables table inet "+name+" no longer bears") {
			t.Errorf("Close: %v, want it to name the foreign table", err)
		}
		if got := tableState(t, name); !strings.Contains(got, "someoneelse") {
			t.Errorf("Close removed another's table: %q", got)
		}
		if _, err := netlink.LinkByName(n.BridgeName()); err == nil {
			t.Errorf("our bridge left behind")
		}
	})
	t.Run("veth with our tag, neither leased nor our port", func(t *testing.T) {
		n := mustNew(t, uniqueConfig(t))
		name := n.vethTag + "zz"
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: n.vethTag + "zy"}
		if err := netlink.LinkAdd(veth); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = netlink.LinkDel(veth) })
		ep, err := n.Attach(ctx, "ours")
		if err != nil {
			t.Fatal(err)
		}
		// A restart: our endpoint is an earlier process's now.
		n2, err := New(ctx, n.cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := n2.Reset(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := netlink.LinkByName(ep.HostIf); err == nil {
			t.Errorf("Reset kept our earlier process's veth %s", ep.HostIf)
		}
		if _, err := netlink.LinkByName(name); err != nil {
			t.Errorf("Reset removed veth %s that only shares our tag: %v", name, err)
		}
		n.mu.Lock()
		n.endpoints, n.owned = map[string]*Endpoint{}, map[string]*Endpoint{}
		n.mu.Unlock()
	})
}

// TestSubnetInUse starts networks whose subnet the host already uses.
func TestSubnetInUse(t *testing.T) {
	ctx := context.Background()
	t.Run("another interface's address", func(t *testing.T) {
		cfg := uniqueConfig(t)
		other := BridgeName(cfg.Name + "-other")
		gw := netip.PrefixFrom(cfg.Subnet.Addr().Next().Next(), 26)
		addBridge(t, other, markPrefix+"feedface state=/srv/other", gw)
		n, err := New(ctx, cfg)
		if err == nil {
			n.Close(ctx)
			t.Fatal("New took a subnet another interface uses")
		}
		var ue *SubnetInUseError
		if !errors.As(err, &ue) || ue.Interface != other || !ue.Address {
			t.Fatalf("error %v (%+v), want a *SubnetInUseError naming %s's address", err, ue, other)
		}
		for _, want := range []string{cfg.Subnet.String(), gw.String(), other, "another executor", "/srv/other"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q lacks %q", err, want)
			}
		}
		if _, err := netlink.LinkByName(BridgeName(cfg.Name)); err == nil {
			t.Error("a refused start made its bridge")
		}
		if got := tableState(t, TableName(BridgeName(cfg.Name))); got != "" {
			t.Errorf("a refused start made tables: %s", got)
		}
		if _, err := os.Stat(cfg.StateDir); err == nil {
			t.Error("a refused start made its state dir")
		}
	})
	t.Run("our own bridge after a crash", func(t *testing.T) {
		n := mustNew(t, uniqueConfig(t))
		n2, err := New(ctx, n.cfg)
		if err != nil {
			t.Fatalf("restart over our own bridge: %v", err)
		}
		_ = n2 // n's cleanup removes what both share
	})
}

// The owner record is what tells our bridge from another's: it must not land
// wherever the daemon's working directory happens to be.
func TestNewNeedsAnAbsoluteStateDir(t *testing.T) {
	cfg := uniqueConfig(t)
	cfg.StateDir = "relative/state"
	n, err := New(context.Background(), cfg)
	if err == nil {
		n.Close(context.Background())
		t.Fatal("New took a relative state dir")
	}
	if !strings.Contains(err.Error(), "absolute") {
		t.Errorf("error %q does not say the state dir must be absolute", err)
	}
	if _, err := netlink.LinkByName(BridgeName(cfg.Name)); err == nil {
		t.Error("a refused start made its bridge")
	}
	if _, err := os.Stat("relative"); err == nil {
		t.Error("a refused start made the relative state dir")
	}
}

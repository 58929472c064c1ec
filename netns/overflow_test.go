package netns

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"executor/netns/nettest"
)

// overflowNetwork is a network of 2 ports a bridge with n endpoints attached:
// 0 and 1 on the first bridge, 2 and 3 on overflow bridge 01, 4 on 02...
// Each serves its id on :3000.
func overflowNetwork(t *testing.T, count int, mod func(*Config)) (*Network, []*Endpoint) {
	t.Helper()
	n := testNetwork(t, 24, func(c *Config) {
		c.BridgePorts = 2
		if mod != nil {
			mod(c)
		}
	})
	ctx := context.Background()
	var eps []*Endpoint
	for i := range count {
		ep, err := n.Attach(ctx, fmt.Sprintf("ov%d", i))
		if err != nil {
			t.Fatalf("attach %d: %v", i, err)
		}
		want := n.BridgeName()
		if i >= 2 {
			want = overflowName(n.BridgeName(), i/2)
		}
		if ep.Bridge != want {
			t.Fatalf("endpoint %d on bridge %q, want %q", i, ep.Bridge, want)
		}
		eps = append(eps, ep)
		listenEcho(t, ep)
	}
	return n, eps
}

// listenEcho serves "<id> from <client address>" on ep's :3000, so that a
// test sees whether a connection was masqueraded.
func listenEcho(t *testing.T, ep *Endpoint) {
	t.Helper()
	l, err := nettest.ListenIn(ep.NSPath, hostPort(ep.Addr, 3000))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
				_, _ = c.Read(make([]byte, 4096))
				ip, _, _ := net.SplitHostPort(c.RemoteAddr().String())
				reply := ep.ID + " from " + ip
				fmt.Fprintf(c, "HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(reply), reply)
			}()
		}
	}()
}

// hostRoutes lists the /32 routes into n's subnet, as "addr dev".
func hostRoutes(t *testing.T, n *Network) []string {
	t.Helper()
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range routes {
		p, ok := prefixOf(r.Dst)
		if !ok || p.Bits() != 32 || !n.Subnet().Contains(p.Addr()) {
			continue
		}
		l, err := netlink.LinkByIndex(r.LinkIndex)
		name := fmt.Sprint(r.LinkIndex)
		if err == nil {
			name = l.Attrs().Name
		}
		out = append(out, p.Addr().String()+" "+name)
	}
	return out
}

func TestOverflowBridgesIsolatedByDefault(t *testing.T) {
	n, eps := overflowNetwork(t, 5, nil)
	internet := testHost(t, internetAddr, internetPeer, n.Subnet(), 8080, "internet")
	gw, err := net.Listen("tcp", hostPort(n.Gateway(), 0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Close() })
	go serveReply(gw, "host")

	first := n.BridgeName()
	if got, want := n.BridgeNames(), []string{first, first + "01", first + "02"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("bridges %v, want %v", got, want)
	}
	for _, name := range n.BridgeNames()[1:] {
		l, err := netlink.LinkByName(name)
		if err != nil {
			t.Fatal(err)
		}
		if markOf(l.Attrs().Alias) != n.owner.mark() {
			t.Errorf("overflow bridge %s: alias %q, want our mark", name, l.Attrs().Alias)
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
		if err != nil || len(addrs) != 1 || addrs[0].IPNet.String() != n.Gateway().String()+"/32" {
			t.Errorf("overflow bridge %s addresses %v %v, want only the gateway as a /32", name, addrs, err)
		}
	}
	want := []string{eps[2].Addr.String() + " " + first + "01", eps[3].Addr.String() + " " + first + "01", eps[4].Addr.String() + " " + first + "02"}
	if got := hostRoutes(t, n); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("host routes %v, want %v", got, want)
	}
	if err := n.Check(); err != nil {
		t.Errorf("Check with overflow bridges: %v", err)
	}

	// The host reaches every runtime, on every bridge.
	for _, ep := range eps {
		if body, err := hostGet(hostPort(ep.Addr, 3000)); err != nil || !strings.HasPrefix(body, ep.ID+" from ") {
			t.Errorf("host -> %s on %s: %q %v", ep.ID, ep.Bridge, body, err)
		}
	}
	// Egress from an overflow bridge is masqueraded like the first's.
	reach(t, eps[2], hostPort(internetAddr, 8080), "internet")
	seen := internet.Seen()
	if ip, _, _ := net.SplitHostPort(seen[len(seen)-1]); ip != internetPeer.String() {
		t.Errorf("internet host saw %s, want the masqueraded %s", ip, internetPeer)
	}
	blocked(t, eps[2], hostPort(eps[3].Addr, 3000)) // same overflow bridge
	blocked(t, eps[3], hostPort(eps[2].Addr, 3000))
	blocked(t, eps[2], hostPort(eps[0].Addr, 3000)) // overflow -> first
	blocked(t, eps[0], hostPort(eps[2].Addr, 3000)) // first -> overflow
	blocked(t, eps[4], hostPort(eps[2].Addr, 3000)) // overflow -> overflow
	blocked(t, eps[2], gw.Addr().String())          // the host
	blocked(t, eps[2], hostPort(metadataAddr, 80))

	// Defence in depth as on the first bridge: with the ports' isolated
	// flag cleared, the bridge table keeps runtimes of one overflow bridge
	// apart. A fresh endpoint, on 02 beside eps[4].
	c, err := n.Attach(context.Background(), "ov-c")
	if err != nil {
		t.Fatal(err)
	}
	if c.Bridge != first+"02" {
		t.Fatalf("ov-c on %s, want %s02", c.Bridge, first)
	}
	for _, ep := range []*Endpoint{c, eps[4]} {
		l, err := netlink.LinkByName(ep.HostIf)
		if err != nil {
			t.Fatal(err)
		}
		if err := netlink.LinkSetIsolated(l, false); err != nil {
			t.Fatal(err)
		}
	}
	blocked(t, c, hostPort(eps[4].Addr, 3000))

	// Detach takes the host route; the empty overflow bridge stays.
	if err := n.Detach(context.Background(), eps[4]); err != nil {
		t.Fatal(err)
	}
	if err := n.Detach(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	if got := hostRoutes(t, n); fmt.Sprint(got) != fmt.Sprint(want[:2]) {
		t.Errorf("host routes after detaching 02's endpoints: %v, want %v", got, want[:2])
	}
	if len(n.BridgeNames()) != 3 {
		t.Errorf("bridges after detach %v: the empty one is kept until Reset", n.BridgeNames())
	}
	// The freed port is taken before any bridge is made.
	ep, err := n.Attach(context.Background(), "ov-again")
	if err != nil || ep.Bridge != first+"02" {
		t.Fatalf("attach after detach: %v on %v, want %s02", err, ep, first)
	}
}

func TestOverflowRuntimeToRuntime(t *testing.T) {
	n, eps := overflowNetwork(t, 5, func(c *Config) {
		c.AllowRuntimeToRuntime = true
		c.AllowHostAccess = true
		// Allow-list-only egress: runtimes reach each other anyway, on one
		// bridge (bridged) as across bridges (routed).
		c.DenyCIDRs = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}
	})
	gw, err := net.Listen("tcp", hostPort(n.Gateway(), 0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Close() })
	go serveReply(gw, "host")
	for _, name := range n.BridgeNames() {
		b, err := os.ReadFile("/proc/sys/net/ipv4/conf/" + name + "/proxy_arp")
		if err != nil || strings.TrimSpace(string(b)) != "1" {
			t.Errorf("proxy_arp of %s: %q %v, want 1", name, b, err)
		}
		// Not delayed: the first connection between two bridges waited
		// for it (1-2.3 s), close to reach's timeout.
		b, err = os.ReadFile("/proc/sys/net/ipv4/neigh/" + name + "/proxy_delay")
		if err != nil || strings.TrimSpace(string(b)) != "0" {
			t.Errorf("proxy_delay of %s: %q %v, want 0", name, b, err)
		}
	}
	for _, p := range [][2]int{{0, 2}, {2, 0}, {2, 3}, {3, 4}, {4, 1}, {0, 1}} {
		from, to := eps[p[0]], eps[p[1]]
		// Not masqueraded: the runtime sees its peer's own address.
		reach(t, from, hostPort(to.Addr, 3000), to.ID+" from "+from.Addr.String())
	}
	reach(t, eps[2], gw.Addr().String(), "host")
	blocked(t, eps[2], hostPort(metadataAddr, 80))
}

// Without AllowRuntimeToRuntime no bridge answers ARP for another's
// runtimes, even one an earlier configuration of the network set up so.
func TestOverflowProxyARPOff(t *testing.T) {
	n, _ := overflowNetwork(t, 3, nil)
	for _, name := range n.BridgeNames() {
		b, err := os.ReadFile("/proc/sys/net/ipv4/conf/" + name + "/proxy_arp")
		if err != nil || strings.TrimSpace(string(b)) != "0" {
			t.Errorf("proxy_arp of %s: %q %v, want 0", name, b, err)
		}
	}
}

func TestOverflowPoolAndAsyncDetach(t *testing.T) {
	n := testNetwork(t, 24, func(c *Config) { c.BridgePorts = 2; c.PoolSize = 3; c.AsyncDetach = true })
	ctx := context.Background()
	if err := n.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	for round := range 2 {
		var eps []*Endpoint
		for i := range 6 {
			ep, err := n.Attach(ctx, fmt.Sprintf("pool%d-%d", round, i))
			if err != nil {
				t.Fatal(err)
			}
			eps = append(eps, ep)
			listenEcho(t, ep)
		}
		for _, ep := range eps {
			if body, err := hostGet(hostPort(ep.Addr, 3000)); err != nil || !strings.HasPrefix(body, ep.ID+" ") {
				t.Errorf("round %d: host -> %s on %s: %q %v", round, ep.ID, ep.Bridge, body, err)
			}
		}
		for _, ep := range eps {
			if err := n.Detach(ctx, ep); err != nil {
				t.Fatal(err)
			}
		}
		n.bg.Wait()
		n.Refill() // the second round takes from a full pool again
	}
	// 6 endpoints and a pool of 3 take 9 ports, 5 bridges: the second round
	// reused the ports of the first.
	if got := len(n.BridgeNames()); got > 5 {
		t.Errorf("%d bridges after two rounds of 6 endpoints and a pool of 3, want at most 5", got)
	}
	// Close (cleanup) drains the pool, waits for the teardowns and removes
	// every bridge: assertGone checks.
}

// A /32 route of an address via an overflow bridge, left there (by a
// crashed process, or a teardown that could not remove it), must not keep a
// new holder of the address on the first bridge out of reach.
func TestOverflowStaleRouteOfAFirstBridgeAddress(t *testing.T) {
	n, eps := overflowNetwork(t, 3, nil)
	ctx := context.Background()
	if err := n.Detach(ctx, eps[0]); err != nil {
		t.Fatal(err)
	}
	next := eps[2].Addr.Next() // the allocator's next candidate
	b := n.bridgeList()[1]
	if err := netlink.RouteReplace(hostRoute(b, next)); err != nil {
		t.Fatal(err)
	}
	ep, err := n.Attach(ctx, "ov-next")
	if err != nil {
		t.Fatal(err)
	}
	if ep.Addr != next || ep.Bridge != n.BridgeName() {
		t.Fatalf("got %s on %s, want %s on the first bridge", ep.Addr, ep.Bridge, next)
	}
	listenEcho(t, ep)
	if body, err := hostGet(hostPort(ep.Addr, 3000)); err != nil || !strings.HasPrefix(body, "ov-next ") {
		t.Errorf("host -> %s: %q %v", ep.Addr, body, err)
	}
}

// A crashed process's overflow bridges, runtimes and routes: the next start
// adopts the bridges (they are ours: no foreign or subnet-in-use error),
// and Reset removes the runtimes, their routes and the emptied bridges.
func TestOverflowLeftoversOfACrash(t *testing.T) {
	n, eps := overflowNetwork(t, 5, nil)
	ctx := context.Background()
	// A crash between making a bridge and marking it leaves it unmarked.
	l, err := netlink.LinkByName(overflowName(n.BridgeName(), 2))
	if err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetAlias(l, ""); err != nil {
		t.Fatal(err)
	}
	n2, err := New(ctx, n.cfg)
	if err != nil {
		t.Fatalf("restart over our own overflow bridges: %v", err)
	}
	if got := n2.BridgeNames(); len(got) != 3 {
		t.Fatalf("bridges after restart %v, want the 3 adopted", got)
	}
	if l, _ := netlink.LinkByName(overflowName(n.BridgeName(), 2)); l == nil || markOf(l.Attrs().Alias) != n2.owner.mark() {
		t.Errorf("the unmarked overflow bridge was not marked again: %v", l)
	}
	// The earlier process's runtimes are still there until Reset.
	if body, err := hostGet(hostPort(eps[3].Addr, 3000)); err != nil || !strings.HasPrefix(body, eps[3].ID) {
		t.Errorf("host -> earlier runtime %s before Reset: %q %v", eps[3].ID, body, err)
	}
	if err := n2.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	for _, ep := range eps {
		if _, err := netlink.LinkByName(ep.HostIf); err == nil {
			t.Errorf("veth %s of the crashed process survived Reset", ep.HostIf)
		}
	}
	for i := 1; i <= 2; i++ {
		if _, err := netlink.LinkByName(overflowName(n.BridgeName(), i)); err == nil {
			t.Errorf("emptied overflow bridge %s survived Reset", overflowName(n.BridgeName(), i))
		}
	}
	if got := n2.BridgeNames(); len(got) != 1 {
		t.Errorf("bridges after Reset %v", got)
	}
	if got := hostRoutes(t, n2); len(got) > 0 {
		t.Errorf("host routes after Reset: %v", got)
	}
	if got := ruleCount(t, n2); got["1/input"] != 2 {
		t.Errorf("rules after Reset %v: the firewall still names the removed bridges", got)
	}
	// And the network works: overflow again, reachable.
	var again []*Endpoint
	for i := range 3 {
		ep, err := n2.Attach(ctx, fmt.Sprintf("again%d", i))
		if err != nil {
			t.Fatal(err)
		}
		listenEcho(t, ep)
		again = append(again, ep)
	}
	if again[2].Bridge != overflowName(n.BridgeName(), 1) {
		t.Errorf("third endpoint on %s", again[2].Bridge)
	}
	if body, err := hostGet(hostPort(again[2].Addr, 3000)); err != nil || !strings.HasPrefix(body, "again2 ") {
		t.Errorf("host -> %s: %q %v", again[2].Addr, body, err)
	}
	// n crashed: forget its endpoints, so that its cleanup does not tear
	// down what n2 owns now. n2's Close removes everything.
	n.mu.Lock()
	n.endpoints, n.owned = map[string]*Endpoint{}, map[string]*Endpoint{}
	n.mu.Unlock()
	if err := n2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	assertGone(t, n2)
}

// Bridges named like our overflow bridges that are not ours stop New, as one
// named like the first does, untouched.
func TestOverflowForeignBridgeRefused(t *testing.T) {
	for _, tc := range []struct {
		name, alias, want string
	}{
		{"another executor's", markPrefix + "0123456789abcdef0123456789abcdef state=/x", "belongs to another executor"},
		{"unmarked, not recorded", "", "it has no owner mark"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := uniqueConfig(t)
			name := overflowName(BridgeName(cfg.Name), 1)
			before := addBridge(t, name, tc.alias, netip.Prefix{})
			n, err := New(context.Background(), cfg)
			if err == nil {
				n.Close(context.Background())
				t.Fatal("New took a foreign overflow bridge")
			}
			var fe *ForeignError
			if !errors.As(err, &fe) || fe.Name != name || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want a *ForeignError naming %s: %s", err, name, tc.want)
			}
			after, err := netlink.LinkByName(name)
			if err != nil || after.Attrs().Index != before.Attrs().Index || after.Attrs().Alias != before.Attrs().Alias {
				t.Errorf("foreign bridge changed: %v %+v", err, after)
			}
			if _, err := netlink.LinkByName(BridgeName(cfg.Name)); err == nil {
				t.Error("a refused start made its bridge")
			}
		})
	}
}

// A bridge name that leaves no room for the index: the first bridge's ports
// are the network's capacity, reported as such.
func TestOverflowImpossibleIsCapacity(t *testing.T) {
	sum := sha256.Sum256([]byte(t.Name() + fmt.Sprint(os.Getpid(), time.Now().UnixNano())))
	n := testNetwork(t, 24, func(c *Config) { c.Bridge = "opr" + hex.EncodeToString(sum[:])[:12]; c.BridgePorts = 1 })
	ctx := context.Background()
	if _, err := n.Attach(ctx, "one"); err != nil {
		t.Fatal(err)
	}
	before := ourVeths(t, n)
	_, err := n.Attach(ctx, "two")
	var ce *CapacityError
	if !errors.As(err, &ce) || !errors.Is(err, ErrCapacity) || !errors.Is(err, syscall.EXFULL) || !strings.Contains(ce.Limit, "no room for the index") {
		t.Fatalf("attach beyond the only bridge: %v, want a capacity error saying why no overflow bridge", err)
	}
	if after := ourVeths(t, n); after != before {
		t.Errorf("veths %d before the failed attach, %d after", before, after)
	}
}

func TestOverflowIndex(t *testing.T) {
	const first = "opr0123456789"
	for _, tc := range []struct {
		name string
		idx  int
		ok   bool
	}{
		{first + "01", 1, true},
		{first + "ff", 255, true},
		{first + "00", 0, false},
		{first + "FF", 0, false},
		{first + "1", 0, false},
		{first + "001", 0, false},
		{first, 0, false},
		{"opr9999999999" + "01", 0, false},
	} {
		idx, ok := overflowIndex(first, tc.name)
		if idx != tc.idx || ok != tc.ok {
			t.Errorf("overflowIndex(%q) = %d, %v; want %d, %v", tc.name, idx, ok, tc.idx, tc.ok)
		}
		if ok && overflowName(first, idx) != tc.name {
			t.Errorf("overflowName(%d) = %q, want %q", idx, overflowName(first, idx), tc.name)
		}
	}
}

// A network's bridge takes DefaultBridgePorts runtimes unless told
// otherwise, far below the kernel's limit (adding a port costs O(ports)
// under RTNL); more than the kernel allows is refused.
func TestBridgePortsDefault(t *testing.T) {
	n := testNetwork(t, 24, nil)
	if n.cfg.BridgePorts != DefaultBridgePorts {
		t.Errorf("a network without BridgePorts takes %d a bridge, want %d", n.cfg.BridgePorts, DefaultBridgePorts)
	}
	subnet, err := nettest.FreeSubnet(24)
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(context.Background(), Config{Name: "nstest-ports", Subnet: subnet, StateDir: t.TempDir(), BridgePorts: MaxBridgePorts + 1})
	if err == nil || !strings.Contains(err.Error(), "1 to 1023") {
		t.Fatalf("New with %d ports a bridge: %v, want refused", MaxBridgePorts+1, err)
	}
}

package netns

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"

	"executor/netns/nettest"
)

// blockTimeout is how long a connection attempt gets before it counts as
// dropped. Allowed ones answer in well under a millisecond here.
const blockTimeout = 700 * time.Millisecond

var (
	internetAddr = netip.MustParseAddr("198.18.0.1")
	internetPeer = netip.MustParseAddr("198.18.0.2")
	metadataAddr = netip.MustParseAddr("169.254.169.254")
	metadataPeer = netip.MustParseAddr("169.254.169.253")
)

// rig is a network with two runtimes (a and b, each serving on :3000), a
// test "internet" host, a test metadata host, and a listener on the host's
// gateway address.
type rig struct {
	n        *Network
	a, b     *Endpoint
	internet *nettest.Host
	metadata *nettest.Host
	hostPort string // gateway:port of a listener in the host's namespace
}

func newRig(t *testing.T, mod func(*Config)) *rig {
	t.Helper()
	r := &rig{n: testNetwork(t, 24, mod)}
	ctx := context.Background()
	r.internet = testHost(t, internetAddr, internetPeer, r.n.Subnet(), 8080, "internet")
	r.metadata = testHost(t, metadataAddr, metadataPeer, r.n.Subnet(), 80, "metadata")
	l, err := net.Listen("tcp", net.JoinHostPort(r.n.Gateway().String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go serveReply(l, "host")
	r.hostPort = l.Addr().String()
	for _, p := range []struct {
		ep   **Endpoint
		name string
	}{{&r.a, "rt-a"}, {&r.b, "rt-b"}} {
		ep, err := r.n.Attach(ctx, p.name)
		if err != nil {
			t.Fatal(err)
		}
		*p.ep = ep
		listen(t, ep.NSPath, net.JoinHostPort(ep.Addr.String(), "3000"), p.name)
	}
	return r
}

func testHost(t *testing.T, addr, peer netip.Addr, from netip.Prefix, port int, body string) *nettest.Host {
	t.Helper()
	h, err := nettest.NewHost(nettest.HostConfig{Addr: addr, Peer: peer, From: []netip.Prefix{from}, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := h.Close(); err != nil {
			t.Errorf("test host %s: %v", addr, err)
		}
	})
	if err := h.ServeHTTP(port, body); err != nil {
		t.Fatal(err)
	}
	return h
}

// reach asserts that a GET from ep to addr answers want.
func reach(t *testing.T, ep *Endpoint, addr, want string) {
	t.Helper()
	body, err := nettest.Get(ep.NSPath, addr, 3*time.Second)
	if err != nil || body != want {
		t.Errorf("%s -> %s: got %q, %v; want %q", ep.ID, addr, body, err, want)
	}
}

// blocked asserts that a connection from ep to addr gets nowhere.
func blocked(t *testing.T, ep *Endpoint, addr string) {
	t.Helper()
	body, err := nettest.Get(ep.NSPath, addr, blockTimeout)
	if err == nil {
		t.Errorf("%s -> %s: reached (%q), want blocked", ep.ID, addr, body)
	} else if !nettest.Blocked(err) {
		t.Errorf("%s -> %s: %v, want a timeout", ep.ID, addr, err)
	}
}

func hostPort(a netip.Addr, port int) string { return net.JoinHostPort(a.String(), fmt.Sprint(port)) }

func TestIsolationDefaults(t *testing.T) {
	r := newRig(t, nil)
	// Egress through NAT: the server sees the host side, not the runtime.
	before := len(r.internet.Seen())
	reach(t, r.a, hostPort(internetAddr, 8080), "internet")
	seen := r.internet.Seen()
	if len(seen) != before+1 {
		t.Fatalf("internet host saw %v", seen)
	}
	if ip, _, _ := net.SplitHostPort(seen[len(seen)-1]); ip != internetPeer.String() {
		t.Errorf("internet host saw the request from %s, want the masqueraded %s (runtime is %s)", ip, internetPeer, r.a.Addr)
	}
	// The host opens connections to runtimes (the executor at addr:3000).
	for _, ep := range []*Endpoint{r.a, r.b} {
		if body, err := hostGet(hostPort(ep.Addr, 3000)); err != nil || body != ep.ID {
			t.Errorf("host -> %s:3000: %q %v", ep.ID, body, err)
		}
	}
	blocked(t, r.a, hostPort(r.b.Addr, 3000)) // another runtime
	blocked(t, r.b, hostPort(r.a.Addr, 3000))
	blocked(t, r.a, r.hostPort)                             // the host (gateway address)
	blocked(t, r.a, hostPort(metadataAddr, 80))             // cloud metadata
	reach(t, r.b, hostPort(internetAddr, 8080), "internet") // still fine after the drops
	drops := dropCounts(t, r.n)
	if drops["1/input"] == 0 || drops["1/forward"] == 0 {
		t.Errorf("drop counters %v: the blocks did not come from our rules", drops)
	}

	// Defence in depth: with the ports' isolated flag cleared, the bridge
	// table still keeps runtimes apart. A fresh endpoint: a's neighbour
	// entry for b has failed and would not probe again at once.
	c, err := r.n.Attach(context.Background(), "rt-c")
	if err != nil {
		t.Fatal(err)
	}
	for _, ep := range []*Endpoint{c, r.b} {
		l, err := netlink.LinkByName(ep.HostIf)
		if err != nil {
			t.Fatal(err)
		}
		if err := netlink.LinkSetIsolated(l, false); err != nil {
			t.Fatal(err)
		}
	}
	blocked(t, c, hostPort(r.b.Addr, 3000))
	if d := dropCounts(t, r.n); d["7/forward"] == 0 {
		t.Errorf("bridge table dropped nothing: %v", d)
	}
}

// dropCounts sums the packets counted by n's rules per "family/chain".
func dropCounts(t *testing.T, n *Network) map[string]uint64 {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	chains, err := c.ListChains()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]uint64{}
	for _, ch := range chains {
		if ch.Table.Name != TableName(n.BridgeName()) {
			continue
		}
		rules, err := c.GetRules(ch.Table, ch)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rules {
			for _, e := range r.Exprs {
				if cn, ok := e.(*expr.Counter); ok {
					out[fmt.Sprintf("%d/%s", ch.Table.Family, ch.Name)] += cn.Packets
				}
			}
		}
	}
	return out
}

// TestIsolationControls proves the blocks above come from the rules: with
// every Allow on, the same rig reaches everything.
func TestIsolationControls(t *testing.T) {
	r := newRig(t, func(c *Config) {
		c.AllowRuntimeToRuntime = true
		c.AllowHostAccess = true
		c.AllowLinkLocal = true
	})
	// The forward chain only accepts what goes into the bridge.
	if got := ruleCount(t, r.n); got["1/input"] != 0 || got["7/forward"] != 0 || got["1/forward"] != 1 {
		t.Errorf("rules with everything allowed: %v", got)
	}
	reach(t, r.a, hostPort(r.b.Addr, 3000), "rt-b")
	reach(t, r.a, r.hostPort, "host")
	reach(t, r.a, hostPort(metadataAddr, 80), "metadata")
	reach(t, r.a, hostPort(internetAddr, 8080), "internet")
}

func TestEgressLists(t *testing.T) {
	t.Run("deny", func(t *testing.T) {
		r := newRig(t, func(c *Config) { c.DenyCIDRs = []netip.Prefix{netip.MustParsePrefix("198.18.0.0/15")} })
		blocked(t, r.a, hostPort(internetAddr, 8080))
	})
	t.Run("allow only", func(t *testing.T) {
		r := newRig(t, func(c *Config) {
			c.DenyCIDRs = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}
			c.AllowCIDRs = []netip.Prefix{netip.MustParsePrefix("198.18.0.1/32")}
		})
		reach(t, r.a, hostPort(internetAddr, 8080), "internet")
		blocked(t, r.a, hostPort(metadataAddr, 80))
	})
	t.Run("deny all leaves runtimes that may reach each other", func(t *testing.T) {
		// With br_netfilter loaded, bridged traffic passes the inet
		// forward chain too: the deny list must not part them there.
		r := newRig(t, func(c *Config) {
			c.AllowRuntimeToRuntime = true
			c.DenyCIDRs = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}
		})
		reach(t, r.a, hostPort(r.b.Addr, 3000), "rt-b")
		blocked(t, r.a, hostPort(internetAddr, 8080))
	})
	t.Run("allow wins over link-local", func(t *testing.T) {
		r := newRig(t, func(c *Config) { c.AllowCIDRs = []netip.Prefix{netip.MustParsePrefix("169.254.169.254/32")} })
		reach(t, r.a, hostPort(metadataAddr, 80), "metadata")
	})
}

func TestHostDNSAllowed(t *testing.T) {
	// The gateway plays the host resolver: port 53 there is open to
	// runtimes, every other port of the host is not.
	var gw netip.Addr
	n := testNetwork(t, 24, func(c *Config) {
		gw = c.Subnet.Addr().Next()
		c.DNSServers = []netip.Addr{gw}
	})
	dns, err := net.Listen("tcp", hostPort(gw, 53))
	if err != nil {
		t.Fatalf("cannot listen on %s:53 (the gateway address is the test's own): %v", gw, err)
	}
	t.Cleanup(func() { dns.Close() })
	go serveReply(dns, "dns")
	other, err := net.Listen("tcp", hostPort(gw, 0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	go serveReply(other, "other")
	ep, err := n.Attach(context.Background(), "dns-client")
	if err != nil {
		t.Fatal(err)
	}
	reach(t, ep, hostPort(gw, 53), "dns")
	blocked(t, ep, other.Addr().String())
}

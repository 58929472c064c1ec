package netns

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

	"executor/netns/nettest"
)

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("netns tests need root (CI runs as root)")
	}
}

var netSeq struct {
	mu sync.Mutex
	n  int
}

// testNetwork makes a network with a name, bridge and subnet unique to this
// test run; cleanup closes it and checks it left nothing behind.
func testNetwork(t testing.TB, bits int, mod func(*Config)) *Network {
	t.Helper()
	requireRoot(t)
	netSeq.mu.Lock()
	netSeq.n++
	seq := netSeq.n
	netSeq.mu.Unlock()
	subnet, err := nettest.FreeSubnet(bits)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Name:       fmt.Sprintf("nstest-%d-%d-%d", os.Getpid(), seq, time.Now().UnixNano()),
		Subnet:     subnet,
		StateDir:   t.TempDir(),
		DNSServers: []netip.Addr{},
	}
	if mod != nil {
		mod(&cfg)
	}
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

// assertGone checks that nothing of n is left: bridges, veths, tables, leases.
func assertGone(t testing.TB, n *Network) {
	t.Helper()
	if _, err := netlink.LinkByName(n.BridgeName()); err == nil {
		t.Errorf("bridge %s left behind", n.BridgeName())
	}
	links, _ := netlink.LinkList()
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, n.vethTag) {
			t.Errorf("veth %s left behind", l.Attrs().Name)
		}
		if _, ok := overflowIndex(n.BridgeName(), l.Attrs().Name); ok {
			t.Errorf("overflow bridge %s left behind", l.Attrs().Name)
		}
	}
	if tabs := ourTables(t, n); len(tabs) > 0 {
		t.Errorf("nftables tables left behind: %v", tabs)
	}
	if ents, _ := os.ReadDir(n.leases.dir); len(ents) > 0 {
		t.Errorf("%d leases left behind", len(ents))
	}
}

// ourTables lists the nftables tables named for n, as family/name.
func ourTables(t testing.TB, n *Network) []string {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	tabs, err := c.ListTables()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, tb := range tabs {
		if tb.Name == TableName(n.BridgeName()) {
			out = append(out, fmt.Sprintf("%d/%s", tb.Family, tb.Name))
		}
	}
	return out
}

// ruleCount counts the rules of n's tables per chain, as "family/chain".
func ruleCount(t testing.TB, n *Network) map[string]int {
	t.Helper()
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	chains, err := c.ListChains()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, ch := range chains {
		if ch.Table.Name != TableName(n.BridgeName()) {
			continue
		}
		rules, err := c.GetRules(ch.Table, ch)
		if err != nil {
			t.Fatal(err)
		}
		out[fmt.Sprintf("%d/%s", ch.Table.Family, ch.Name)] += len(rules)
	}
	return out
}

// listen opens a listener inside ep's namespace that answers every
// connection with reply; closed at cleanup.
func listen(t testing.TB, nsPath, addr, reply string) {
	t.Helper()
	l, err := nettest.ListenIn(nsPath, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go serveReply(l, reply)
}

func serveReply(l net.Listener, reply string) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			buf := make([]byte, 4096)
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
			_, _ = c.Read(buf) // the request, if any
			fmt.Fprintf(c, "HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(reply), reply)
			c.Close()
		}()
	}
}

func TestAttachReachableAndDetachCleans(t *testing.T) {
	n := testNetwork(t, 24, nil)
	ctx := context.Background()
	ep, err := n.Attach(ctx, "rt1")
	if err != nil {
		t.Fatal(err)
	}
	if !n.Subnet().Contains(ep.Addr) || ep.Addr == n.Gateway() {
		t.Fatalf("address %s not a runtime address of %s", ep.Addr, n.Subnet())
	}
	if _, err := os.Stat(n.leases.path(ep.Addr)); err != nil {
		t.Errorf("no lease for %s: %v", ep.Addr, err)
	}
	l, _ := netlink.LinkByName(ep.HostIf)
	if pi, err := netlink.LinkGetProtinfo(l); err != nil || !pi.Isolated {
		t.Errorf("port %s not isolated: %+v %v", ep.HostIf, pi, err)
	}
	checkIPv6Off(t, n, ep)
	listen(t, ep.NSPath, net.JoinHostPort(ep.Addr.String(), "3000"), "hi")
	// The host opens connections to runtimes; the replies must pass the
	// input chain.
	if body, err := hostGet(net.JoinHostPort(ep.Addr.String(), "3000")); err != nil || body != "hi" {
		t.Fatalf("host -> runtime:3000: %q %v", body, err)
	}
	if err := n.Detach(ctx, ep); err != nil {
		t.Fatal(err)
	}
	if _, err := netlink.LinkByName(ep.HostIf); err == nil {
		t.Errorf("veth %s still exists after detach", ep.HostIf)
	}
	if _, err := os.Stat(ep.NSPath); !os.IsNotExist(err) {
		t.Errorf("namespace file %s still exists: %v", ep.NSPath, err)
	}
	if _, err := os.Stat(n.leases.path(ep.Addr)); !os.IsNotExist(err) {
		t.Errorf("lease of %s still exists: %v", ep.Addr, err)
	}
	if got := n.addrs.inUse(); got != 0 {
		t.Errorf("%d addresses still allocated", got)
	}
}

// checkIPv6Off checks that the bridge, ep's host side and its eth0 have no
// IPv6 (no link-local address, so no DAD or MLD the bridge would flood to
// every runtime), while the runtime's loopback keeps ::1.
func checkIPv6Off(t *testing.T, n *Network, ep *Endpoint) {
	t.Helper()
	v6 := func(h *netlink.Handle, name string) []netlink.Addr {
		t.Helper()
		l, err := h.LinkByName(name)
		if err != nil {
			t.Fatalf("link %s: %v", name, err)
		}
		addrs, err := h.AddrList(l, netlink.FAMILY_V6)
		if err != nil {
			t.Fatalf("addresses of %s: %v", name, err)
		}
		return addrs
	}
	host, err := netlink.NewHandle()
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	for _, name := range []string{n.BridgeName(), ep.HostIf} {
		if a := v6(host, name); len(a) != 0 {
			t.Errorf("%s has IPv6 addresses: %v", name, a)
		}
	}
	ns, err := vnetns.GetFromPath(ep.NSPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	in, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if a := v6(in, "eth0"); len(a) != 0 {
		t.Errorf("the runtime's eth0 has IPv6 addresses: %v", a)
	}
	lo := v6(in, "lo")
	if len(lo) != 1 || !lo[0].IP.Equal(net.IPv6loopback) {
		t.Errorf("the runtime's loopback has IPv6 %v, want ::1", lo)
	}
}

func hostGet(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	fmt.Fprintf(c, "GET / HTTP/1.0\r\n\r\n")
	b := make([]byte, 4096)
	var got []byte
	for {
		k, err := c.Read(b)
		got = append(got, b[:k]...)
		if err != nil {
			break
		}
	}
	s := string(got)
	if i := strings.Index(s, "\r\n\r\n"); i >= 0 {
		return s[i+4:], nil
	}
	return s, nil
}

// TestConcurrentAttachDetachNoDuplicate runs 200 concurrent Attach/Detach
// cycles and checks that no address is ever held twice, and that an address
// comes back only once the veth of its previous holder is gone.
func TestConcurrentAttachDetachNoDuplicate(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Config)
	}{
		{"sync", nil},
		{"async", func(c *Config) { c.AsyncDetach = true }},
		{"pool+async", func(c *Config) { c.AsyncDetach = true; c.PoolSize = 8 }},
		// Bridges fill and overflow bridges are made while endpoints
		// come and go on all of them.
		{"pool+async, 16 ports a bridge", func(c *Config) { c.AsyncDetach = true; c.PoolSize = 8; c.BridgePorts = 16 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A /24 (253 addresses) for 200 concurrent endpoints plus the
			// pool and the background teardowns: addresses get reused.
			n := testNetwork(t, 24, tc.mod)
			ctx := context.Background()
			if err := n.Reset(ctx); err != nil {
				t.Fatal(err)
			}
			const workers, cycles = 200, 2
			var mu sync.Mutex
			holder := map[netip.Addr]string{} // address -> id holding it now
			prevIf := map[netip.Addr]string{} // address -> host veth of its last holder
			reused := 0
			var wg sync.WaitGroup
			errs := make(chan error, workers*cycles)
			for w := 0; w < workers; w++ {
				wg.Add(1)
				go func(w int) {
					defer wg.Done()
					for c := 0; c < cycles; c++ {
						id := fmt.Sprintf("c%d-%d", w, c)
						ep, err := n.Attach(ctx, id)
						if err != nil {
							errs <- err
							return
						}
						// Refills race the attaches and the teardowns.
						n.Refill()
						mu.Lock()
						if other, dup := holder[ep.Addr]; dup {
							errs <- fmt.Errorf("address %s given to %s while %s holds it", ep.Addr, id, other)
						}
						holder[ep.Addr] = id
						prev, seen := prevIf[ep.Addr]
						if seen {
							reused++
						}
						mu.Unlock()
						if seen {
							if _, err := netlink.LinkByName(prev); err == nil {
								errs <- fmt.Errorf("address %s handed out while the veth %s of its last holder exists", ep.Addr, prev)
							}
						}
						mu.Lock()
						delete(holder, ep.Addr)
						prevIf[ep.Addr] = ep.HostIf
						mu.Unlock()
						if err := n.Detach(ctx, ep); err != nil {
							errs <- err
						}
					}
				}(w)
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			t.Logf("%d endpoints, %d distinct addresses, %d reuses", workers*cycles, len(prevIf), reused)
			if reused == 0 {
				t.Error("no address was reused: the check is blind")
			}
		})
	}
}

func TestLeasesSurviveRestart(t *testing.T) {
	n := testNetwork(t, 28, nil) // gateway .1, runtimes .2-.14
	ctx := context.Background()
	old, err := n.Attach(ctx, "old")
	if err != nil {
		t.Fatal(err)
	}
	// A lease whose veth never came to be (crash between the lease and the
	// veth): dropped by New.
	stale := old.Addr.Next()
	if err := n.leases.create(lease{Addr: stale, ID: "stale", HostIf: n.vethTag + "dead", NSPath: filepath.Join(n.nsDir, "stale")}); err != nil {
		t.Fatal(err)
	}

	// A new process (the old one crashed: no Close).
	n2, err := New(ctx, n.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !n2.addrs.isUsed(old.Addr) {
		t.Fatalf("address %s of a live veth is not reserved after restart", old.Addr)
	}
	if n2.addrs.isUsed(stale) {
		t.Errorf("address %s of a lease without veth is still reserved", stale)
	}
	if _, err := os.Stat(n2.leases.path(stale)); !os.IsNotExist(err) {
		t.Errorf("stale lease kept: %v", err)
	}
	// Before Reset, every new endpoint avoids the old address.
	var eps []*Endpoint
	for i := 0; ; i++ {
		ep, err := n2.Attach(ctx, fmt.Sprintf("new%d", i))
		if errors.Is(err, ErrNoAddress) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if ep.Addr == old.Addr {
			t.Fatalf("address %s handed out while its old veth %s exists", ep.Addr, old.HostIf)
		}
		eps = append(eps, ep)
	}
	if len(eps) != 12 {
		t.Errorf("got %d endpoints, want 12 (13 addresses less the old one)", len(eps))
	}
	// Reset removes the old endpoint and releases its address.
	if err := n2.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := netlink.LinkByName(old.HostIf); err == nil {
		t.Errorf("old veth %s survived reset", old.HostIf)
	}
	if _, err := os.Stat(old.NSPath); !os.IsNotExist(err) {
		t.Errorf("old namespace %s survived reset", old.NSPath)
	}
	for _, ep := range eps {
		if _, err := netlink.LinkByName(ep.HostIf); err != nil {
			t.Errorf("reset removed live endpoint %s: %v", ep.HostIf, err)
		}
	}
	ep, err := n2.Attach(ctx, "after")
	if err != nil || ep.Addr != old.Addr {
		t.Fatalf("after reset got %v %v, want %s", ep, err, old.Addr)
	}
	// The first process is gone; forget its endpoint so its cleanup does not
	// tear down what n2 now owns.
	n.mu.Lock()
	n.endpoints = map[string]*Endpoint{}
	n.owned = map[string]*Endpoint{}
	n.mu.Unlock()
	if err := n2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	assertGone(t, n2)
}

func TestFirewallReplacedAfterCrashAndRemovedByClose(t *testing.T) {
	n := testNetwork(t, 24, func(c *Config) {
		c.DenyCIDRs = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
		c.AllowCIDRs = []netip.Prefix{netip.MustParsePrefix("192.0.2.1/32")}
		c.DNSServers = []netip.Addr{netip.MustParseAddr("10.0.0.53")}
	})
	if tabs := ourTables(t, n); len(tabs) != 2 {
		t.Fatalf("tables %v, want inet and bridge", tabs)
	}
	want := map[string]int{
		"1/input":       4, // established, dns udp, dns tcp, drop
		"1/forward":     5, // established, new-into-bridge drop, allow, link-local, deny
		"1/postrouting": 1,
		"7/forward":     1,
	}
	got := ruleCount(t, n)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("rules %v, want %v", got, want)
	}
	// A crash: New again without Close replaces the tables, no duplicates.
	n2, err := New(context.Background(), n.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := ruleCount(t, n2); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after restart rules %v, want %v", got, want)
	}
	if err := n2.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	assertGone(t, n2)
	// And a later start rebuilds everything.
	n3, err := New(context.Background(), n.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := ruleCount(t, n3); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after rebuild rules %v, want %v", got, want)
	}
	if _, err := netlink.LinkByName(n3.BridgeName()); err != nil {
		t.Fatalf("bridge not rebuilt: %v", err)
	}
	// n's cleanup closes the rebuilt network.
}

func TestPoolHandsOutReadyEndpoints(t *testing.T) {
	const grace = 50 * time.Millisecond
	n := testNetwork(t, 24, func(c *Config) { c.PoolSize = 3; c.AsyncDetach = true; c.PoolGrace = grace })
	ctx := context.Background()
	if err := n.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	waitPoolFull(t, n)
	start := time.Now()
	ep, err := n.Attach(ctx, "pooled")
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("attach from a full pool took %v", took)
	if ep.ID != "pooled" || !ep.Pooled || !strings.HasPrefix(filepath.Base(ep.NSPath), poolPrefix) {
		t.Errorf("endpoint %+v", ep)
	}
	listen(t, ep.NSPath, net.JoinHostPort(ep.Addr.String(), "3000"), "pooled-ok")
	if body, err := hostGet(net.JoinHostPort(ep.Addr.String(), "3000")); err != nil || body != "pooled-ok" {
		t.Fatalf("host -> pooled runtime: %q %v", body, err)
	}
	if _, err := n.Attach(ctx, poolPrefix+"x"); err == nil {
		t.Error("an id with the pool prefix was accepted")
	}
	// Taken, it is made again only once Refill asks, and not before the
	// grace has passed.
	time.Sleep(4 * grace)
	if got := len(n.pool); got != cap(n.pool)-1 {
		t.Fatalf("%d pooled endpoints before Refill, want %d", got, cap(n.pool)-1)
	}
	asked := time.Now()
	n.Refill()
	waitPoolFull(t, n)
	if took := time.Since(asked); took < grace {
		t.Errorf("refilled %v after Refill, before the grace of %v", took, grace)
	}
	if err := n.Detach(ctx, ep); err != nil {
		t.Fatal(err)
	}
	// Close (cleanup) must drain the pool and wait for the background
	// teardown; assertGone checks.
}

// The bridge's MAC must not follow its ports: runtimes cache it, and a change
// would send their replies nowhere until their ARP entries age out.
func TestBridgeMACIsStable(t *testing.T) {
	n := testNetwork(t, 24, nil)
	ctx := context.Background()
	br, err := netlink.LinkByName(n.BridgeName())
	if err != nil {
		t.Fatal(err)
	}
	want := br.Attrs().HardwareAddr.String()
	if want != bridgeMAC(n.BridgeName()).String() {
		t.Fatalf("bridge MAC %s, want the pinned %s", want, bridgeMAC(n.BridgeName()))
	}
	var eps []*Endpoint
	for i := 0; i < 6; i++ {
		ep, err := n.Attach(ctx, fmt.Sprintf("mac-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		eps = append(eps, ep)
	}
	for _, ep := range eps {
		if err := n.Detach(ctx, ep); err != nil {
			t.Fatal(err)
		}
		br, _ = netlink.LinkByName(n.BridgeName())
		if got := br.Attrs().HardwareAddr.String(); got != want {
			t.Fatalf("bridge MAC changed from %s to %s as ports came and went", want, got)
		}
	}
}

// A namespace file already there belongs to another endpoint (a pooled one
// adopted after a restart keeps its name, which the new process's pool may
// pick): an Attach that finds it fails and leaves that endpoint whole.
func TestAttachLeavesAnotherEndpointsNamespace(t *testing.T) {
	n := testNetwork(t, 24, nil)
	ctx := context.Background()
	if err := n.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	ep, err := n.Attach(ctx, "taken")
	if err != nil {
		t.Fatal(err)
	}
	if ep.Pooled {
		t.Errorf("endpoint %+v says it came from a pool, without one", ep)
	}
	listenEcho(t, ep)
	if again, err := n.Attach(ctx, "taken"); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("attach over an endpoint's namespace file: %+v, %v; want it refused", again, err)
	}
	if got, want := dirNames(t, n.nsDir), []string{"taken"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("namespace files %v, want %v", got, want)
	}
	if got := nsMounts(t, n); len(got) != 1 {
		t.Errorf("namespace mounts %v, want the first endpoint's", got)
	}
	if got, want := vethNames(t, n), []string{ep.HostIf}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("veths %v, want %v", got, want)
	}
	if got, want := dirNames(t, n.leases.dir), []string{ep.Addr.String()}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("leases %v, want %v", got, want)
	}
	assertReachable(t, ep)
	if err := n.Detach(ctx, ep); err != nil {
		t.Fatal(err)
	}
}

// A refill that fails (here at capacity) is tried again on its own, without
// another Refill: the address a detached endpoint frees goes to the pool.
func TestPoolRetriesAFailedRefill(t *testing.T) {
	n := testNetwork(t, 29, func(c *Config) { c.PoolSize = 2 })
	ctx := context.Background()
	if err := n.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	waitPoolFull(t, n)
	var eps []*Endpoint
	defer func() {
		for _, ep := range eps {
			if err := n.Detach(ctx, ep); err != nil {
				t.Error(err)
			}
		}
	}()
	for i := 0; ; i++ {
		ep, err := n.Attach(ctx, fmt.Sprintf("full-%d", i))
		if err != nil {
			if !errors.Is(err, ErrCapacity) {
				t.Fatalf("attach on a full subnet: %v, want a capacity error", err)
			}
			break
		}
		eps = append(eps, ep)
	}
	if len(eps) < 3 || !eps[0].Pooled || !eps[1].Pooled || eps[2].Pooled {
		t.Fatalf("%d endpoints, the first two not from the pool or the third from it: %+v", len(eps), eps)
	}
	n.Refill() // fails: no address is free
	time.Sleep(100 * time.Millisecond)
	if got := len(n.pool); got != 0 {
		t.Fatalf("%d pooled endpoints on a full subnet", got)
	}
	if err := n.Detach(ctx, eps[len(eps)-1]); err != nil {
		t.Fatal(err)
	}
	eps = eps[:len(eps)-1]
	for deadline := time.Now().Add(5 * time.Second); len(n.pool) == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the pool did not take the freed address without a Refill")
		}
	}
	ep, err := n.Attach(ctx, "after")
	if err != nil {
		t.Fatal(err)
	}
	eps = append(eps, ep)
	if !ep.Pooled {
		t.Errorf("endpoint %+v not from the pool", ep)
	}
}

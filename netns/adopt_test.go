package netns

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// restartNetwork is the next process of n after a live restore: New with n's
// configuration (changed by mod). n's process is gone from then on: its
// endpoints are forgotten, so that its cleanup does not tear down what the
// new one adopts. Cleanup closes the new network and checks that nothing is
// left, namespace mounts included.
func restartNetwork(t *testing.T, n *Network, mod func(*Config)) *Network {
	t.Helper()
	cfg := n.cfg
	if mod != nil {
		mod(&cfg)
	}
	n2, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	n.mu.Lock()
	n.endpoints, n.owned = map[string]*Endpoint{}, map[string]*Endpoint{}
	n.mu.Unlock()
	t.Cleanup(func() {
		if err := n2.Close(context.Background()); err != nil {
			t.Errorf("close after restart: %v", err)
		}
		assertGone(t, n2)
		if m := nsMounts(t, n2); len(m) > 0 {
			t.Errorf("namespace mounts left behind: %v", m)
		}
	})
	return n2
}

// recordOf is ep as the daemon's record keeps it: its JSON.
func recordOf(t *testing.T, ep *Endpoint) Endpoint {
	t.Helper()
	b, err := json.Marshal(ep)
	if err != nil {
		t.Fatal(err)
	}
	var rec Endpoint
	if err := json.Unmarshal(b, &rec); err != nil {
		t.Fatal(err)
	}
	return rec
}

// nsMounts lists the mount points under n's namespace dir.
func nsMounts(t *testing.T, n *Network) []string {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	s := bufio.NewScanner(f)
	s.Buffer(nil, 1<<20)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) > 4 && strings.HasPrefix(fields[4], n.nsDir+"/") {
			out = append(out, fields[4])
		}
	}
	slices.Sort(out)
	return out
}

// dirNames lists dir's entries, sorted; none when it is missing.
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// vethNames lists the host's links with n's veth tag, sorted.
func vethNames(t *testing.T, n *Network) []string {
	t.Helper()
	links, err := dump(netlink.LinkList)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, n.vethTag) {
			out = append(out, l.Attrs().Name)
		}
	}
	slices.Sort(out)
	return out
}

func sorted(s ...string) []string {
	slices.Sort(s)
	return s
}

// waitPoolFull waits until n's pool holds every ready endpoint it can.
func waitPoolFull(t *testing.T, n *Network) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; {
		n.mu.Lock()
		p := n.pool
		n.mu.Unlock()
		if p != nil && len(p) == cap(p) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the pool did not fill")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// assertEndpointThere checks that ep's veth, mounted namespace and lease exist.
func assertEndpointThere(t *testing.T, n *Network, ep *Endpoint) {
	t.Helper()
	if _, err := netlink.LinkByName(ep.HostIf); err != nil {
		t.Errorf("veth %s of %s is gone: %v", ep.HostIf, ep.ID, err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(ep.NSPath, &st); err != nil || st.Type != unix.NSFS_MAGIC {
		t.Errorf("namespace %s of %s is not mounted: %v (type %#x)", ep.NSPath, ep.ID, err, st.Type)
	}
	if l, err := n.leases.read(ep.Addr); err != nil || l.HostIf != ep.HostIf || l.NSPath != ep.NSPath {
		t.Errorf("lease of %s (%s): %+v %v", ep.ID, ep.Addr, l, err)
	}
}

// assertEndpointGone checks that ep's veth, namespace file and lease are gone
// and its address is free in n.
func assertEndpointGone(t *testing.T, n *Network, ep *Endpoint) {
	t.Helper()
	if _, err := netlink.LinkByName(ep.HostIf); err == nil {
		t.Errorf("veth %s of %s still exists", ep.HostIf, ep.ID)
	}
	if _, err := os.Lstat(ep.NSPath); !os.IsNotExist(err) {
		t.Errorf("namespace file %s of %s still exists: %v", ep.NSPath, ep.ID, err)
	}
	if _, err := os.Stat(n.leases.path(ep.Addr)); !os.IsNotExist(err) {
		t.Errorf("lease of %s (%s) still exists: %v", ep.ID, ep.Addr, err)
	}
	if n.addrs.isUsed(ep.Addr) {
		t.Errorf("address %s of %s is still in use", ep.Addr, ep.ID)
	}
}

func assertReachable(t *testing.T, ep *Endpoint) {
	t.Helper()
	if body, err := hostGet(hostPort(ep.Addr, 3000)); err != nil || !strings.HasPrefix(body, ep.ID+" from ") {
		t.Errorf("host -> %s (%s): %q %v", ep.ID, ep.Addr, body, err)
	}
}

// A live restore end to end: Release leaves the endpoints handed out (and
// nothing of the pool), the next process adopts the one its records name,
// Reset removes the other, new endpoints never get the adopted address, and
// the adopted one is detached like any other.
func TestReleaseThenAdoptAfterRestart(t *testing.T) {
	n := testNetwork(t, 28, func(c *Config) { c.PoolSize = 2; c.AsyncDetach = true }) // runtimes .2-.14
	ctx := context.Background()
	if err := n.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	waitPoolFull(t, n)
	keep, err := n.Attach(ctx, "keep")
	if err != nil {
		t.Fatal(err)
	}
	drop, err := n.Attach(ctx, "drop")
	if err != nil {
		t.Fatal(err)
	}
	gone, err := n.Attach(ctx, "gone")
	if err != nil {
		t.Fatal(err)
	}
	// From the pool: its namespace file is not named after its id, which
	// Adopt must accept.
	if !strings.HasPrefix(filepath.Base(keep.NSPath), poolPrefix) {
		t.Fatalf("endpoint %s not from the pool: %s", keep.ID, keep.NSPath)
	}
	listenEcho(t, keep)
	n.Refill()
	waitPoolFull(t, n) // so that Release has ready endpoints to remove
	if len(vethNames(t, n)) <= 3 {
		t.Fatalf("no pooled endpoint to remove: veths %v", vethNames(t, n))
	}
	rules := ruleCount(t, n)
	// In the background (AsyncDetach): Release waits for it.
	if err := n.Detach(ctx, gone); err != nil {
		t.Fatal(err)
	}
	if err := n.Release(ctx); err != nil {
		t.Fatalf("release: %v", err)
	}

	// What stays: the endpoints handed out, the bridge, the tables.
	if _, err := netlink.LinkByName(n.BridgeName()); err != nil {
		t.Errorf("bridge gone after Release: %v", err)
	}
	if got := ruleCount(t, n); fmt.Sprint(got) != fmt.Sprint(rules) {
		t.Errorf("rules after Release %v, want %v", got, rules)
	}
	for _, ep := range []*Endpoint{keep, drop} {
		assertEndpointThere(t, n, ep)
	}
	// What goes: the pool's endpoints and the one detached in the background.
	if got, want := vethNames(t, n), sorted(keep.HostIf, drop.HostIf); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("veths after Release %v, want %v", got, want)
	}
	if got, want := dirNames(t, n.nsDir), sorted(filepath.Base(keep.NSPath), filepath.Base(drop.NSPath)); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("namespace files after Release %v, want %v", got, want)
	}
	if got := nsMounts(t, n); len(got) != 2 {
		t.Errorf("namespace mounts after Release %v, want those of %s and %s", got, keep.ID, drop.ID)
	}
	if got, want := dirNames(t, n.leases.dir), sorted(keep.Addr.String(), drop.Addr.String()); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("leases after Release %v, want %v", got, want)
	}
	assertReachable(t, keep)
	if ep, err := n.Attach(ctx, "late"); !errors.Is(err, errClosed) {
		t.Errorf("attach after Release: %v, %v; want refused", ep, err)
	}

	// The next process, without a pool, so that addresses can be counted.
	n2 := restartNetwork(t, n, func(c *Config) { c.PoolSize = 0; c.AsyncDetach = false })
	if got := ruleCount(t, n2); fmt.Sprint(got) != fmt.Sprint(rules) {
		t.Errorf("rules after restart %v, want %v", got, rules)
	}
	ep, err := n2.Adopt(recordOf(t, keep))
	if err != nil {
		t.Fatalf("adopt: %v", err)
	}
	if want := *keep; ep.ID != want.ID || ep.NSPath != want.NSPath || ep.Addr != want.Addr || ep.HostIf != want.HostIf ||
		ep.Bridge != want.Bridge || ep.Subnet != want.Subnet || ep.Gateway != want.Gateway || ep.Network != want.Network {
		t.Errorf("adopted %+v, want %+v", ep, want)
	}
	if ep.br == nil || ep.br.name != keep.Bridge {
		t.Errorf("adopted endpoint's bridge %+v, want %s", ep.br, keep.Bridge)
	}
	if err := n2.Reset(ctx); err != nil {
		t.Fatalf("reset: %v", err)
	}
	assertEndpointThere(t, n2, ep)
	assertReachable(t, ep)
	assertEndpointGone(t, n2, drop)
	if got := nsMounts(t, n2); len(got) != 1 || got[0] != keep.NSPath {
		t.Errorf("namespace mounts after Reset %v, want only %s", got, keep.NSPath)
	}

	// New endpoints take every other address, the freed one too, never
	// the adopted one.
	var eps []*Endpoint
	for i := 0; ; i++ {
		e, err := n2.Attach(ctx, fmt.Sprintf("new%d", i))
		if errors.Is(err, ErrNoAddress) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if e.Addr == keep.Addr {
			t.Fatalf("address %s of the adopted endpoint handed out to %s", e.Addr, e.ID)
		}
		eps = append(eps, e)
	}
	if len(eps) != 12 || !slices.ContainsFunc(eps, func(e *Endpoint) bool { return e.Addr == drop.Addr }) {
		t.Errorf("got %d new endpoints, want 12 (13 addresses less the adopted one), among them %s", len(eps), drop.Addr)
	}
	for _, e := range eps {
		if err := n2.Detach(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	assertReachable(t, ep)

	// Detached like any endpoint of Attach: its port and address go back.
	if err := n2.Detach(ctx, ep); err != nil {
		t.Fatalf("detach adopted: %v", err)
	}
	assertEndpointGone(t, n2, keep)
	n2.mu.Lock()
	ports, owned, handed := len(n2.bridges[0].ports), len(n2.owned), len(n2.endpoints)
	n2.mu.Unlock()
	if ports != 0 || owned != 0 || handed != 0 {
		t.Errorf("after detaching everything: %d ports, %d owned, %d endpoints", ports, owned, handed)
	}
	if err := n2.Close(ctx); err != nil {
		t.Fatal(err)
	}
	assertGone(t, n2)
	if m := nsMounts(t, n2); len(m) > 0 {
		t.Errorf("namespace mounts left after Close: %v", m)
	}
}

// Close after Release still removes everything (the daemon gives up on a
// live restore), and does not stop the pool twice.
func TestReleaseThenClose(t *testing.T) {
	n := testNetwork(t, 28, func(c *Config) { c.PoolSize = 2 })
	ctx := context.Background()
	if err := n.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Attach(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if err := n.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := n.Release(ctx); err != nil {
		t.Errorf("second Release: %v", err)
	}
	if err := n.Close(ctx); err != nil {
		t.Fatal(err)
	}
	assertGone(t, n)
	if m := nsMounts(t, n); len(m) > 0 {
		t.Errorf("namespace mounts left: %v", m)
	}
}

// Release returns only once the teardowns Detach left to the background
// (AsyncDetach) are done: the next process must not find a lease whose veth
// is half gone.
func TestReleaseWaitsForBackgroundTeardowns(t *testing.T) {
	n := testNetwork(t, 28, func(c *Config) { c.AsyncDetach = true })
	ctx := context.Background()
	var eps []*Endpoint
	for i := range 4 {
		ep, err := n.Attach(ctx, fmt.Sprintf("bg%d", i))
		if err != nil {
			t.Fatal(err)
		}
		eps = append(eps, ep)
	}
	for _, ep := range eps {
		if err := n.Detach(ctx, ep); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if got := n.tearingDown.Load(); got != 0 {
		t.Errorf("%d teardowns still running after Release", got)
	}
	for _, ep := range eps {
		assertEndpointGone(t, n, ep)
	}
}

// plantEndpoint builds an endpoint by hand as create does, with a lease, but
// at nsPath and, when port is false, with its veth on no bridge. It is not
// registered with n. Cleanup removes whatever is left of it.
func plantEndpoint(t *testing.T, n *Network, id, nsPath string, addr netip.Addr, port bool) Endpoint {
	t.Helper()
	ep := Endpoint{ID: id, NSPath: nsPath, Addr: addr, Subnet: n.cfg.Subnet, Gateway: n.gateway,
		HostIf: n.vethTag + id, Bridge: n.BridgeName(), Network: n.cfg.Name}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(ep.HostIf); err == nil {
			_ = netlink.LinkDel(l)
		}
		_ = removeNamespace(ep.NSPath)
		_ = n.leases.remove(ep.Addr)
	})
	if err := n.leases.create(lease{Addr: addr, ID: id, HostIf: ep.HostIf, NSPath: nsPath}); err != nil {
		t.Fatal(err)
	}
	if err := createNamespace(nsPath); err != nil {
		t.Fatal(err)
	}
	ns, err := vnetns.GetFromPath(nsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	attrs := netlink.LinkAttrs{Name: ep.HostIf}
	if port {
		attrs.MasterIndex = n.bridges[0].link.Attrs().Index
	}
	veth := &netlink.Veth{LinkAttrs: attrs, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(ns))}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	if err := netlink.LinkSetUp(veth); err != nil {
		t.Fatal(err)
	}
	if err := configureInside(ns, &ep); err != nil {
		t.Fatal(err)
	}
	return ep
}

// plantPort makes a veth pair of ours on the first bridge with both ends in
// the host's namespace (no runtime behind it), leased for addr as if its
// namespace were nsPath.
func plantPort(t *testing.T, n *Network, suffix, nsPath string, addr netip.Addr) string {
	t.Helper()
	name := n.vethTag + suffix
	peer := "p" + n.vethTag[1:] + suffix
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(name); err == nil {
			_ = netlink.LinkDel(l)
		}
		_ = n.leases.remove(addr)
	})
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, MasterIndex: n.bridges[0].link.Attrs().Index}, PeerName: peer}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	if err := n.leases.create(lease{Addr: addr, ID: filepath.Base(nsPath), HostIf: name, NSPath: nsPath}); err != nil {
		t.Fatal(err)
	}
	return name
}

// nth is the subnet's address at offset i.
func nth(p netip.Prefix, i int) netip.Addr {
	a := p.Addr()
	for range i {
		a = a.Next()
	}
	return a
}

// Every kind of bad record is refused with ErrNotAdoptable and changes
// nothing: the real endpoint is adopted and works afterwards.
func TestAdoptRefusesBadRecords(t *testing.T) {
	n := testNetwork(t, 24, nil)
	ctx := context.Background()
	a, err := n.Attach(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := n.Attach(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	listenEcho(t, a)
	if err := n.Release(ctx); err != nil {
		t.Fatal(err)
	}
	n2 := restartNetwork(t, n, nil)
	sub := n2.Subnet()

	// A plain file where a namespace should be mounted, for a real port.
	plain := filepath.Join(n2.nsDir, "plain")
	if err := os.WriteFile(plain, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(plain) })
	plainAddr := nth(sub, 100)
	plainIf := plantPort(t, n2, "pl", plain, plainAddr)
	// A real port leased with b's namespace, whose eth0 is b's veth's peer.
	otherAddr := nth(sub, 101)
	otherIf := plantPort(t, n2, "ot", b.NSPath, otherAddr)
	// A lease whose veth does not exist.
	missingAddr := nth(sub, 102)
	if err := n2.leases.create(lease{Addr: missingAddr, ID: "missing", HostIf: n2.vethTag + "ms", NSPath: filepath.Join(n2.nsDir, "missing")}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n2.leases.remove(missingAddr) })
	// Whole endpoints, but with their namespace outside StateDir/ns, or
	// their veth on no bridge.
	outside := plantEndpoint(t, n2, "out", filepath.Join(t.TempDir(), "out"), nth(sub, 103), true)
	loose := plantEndpoint(t, n2, "loose", filepath.Join(n2.nsDir, "loose"), nth(sub, 104), false)
	// And one just like them that is whole: the control that the planted
	// ones differ from a good record only where the case says.
	good := plantEndpoint(t, n2, "good", filepath.Join(n2.nsDir, "good"), nth(sub, 105), true)

	rec := recordOf(t, a)
	with := func(f func(*Endpoint)) Endpoint {
		r := rec
		f(&r)
		return r
	}
	cases := []struct {
		name string
		rec  Endpoint
		why  string // in the error: refused for this reason, not a later one
	}{
		{"other network", with(func(r *Endpoint) { r.Network += "x" }), "is of network"},
		{"other subnet", with(func(r *Endpoint) { r.Subnet = netip.PrefixFrom(sub.Addr(), sub.Bits()+1) }), "the record's subnet"},
		{"other gateway", with(func(r *Endpoint) { r.Gateway = r.Gateway.Next() }), "the record's subnet"},
		{"address outside the subnet", with(func(r *Endpoint) { r.Addr = nth(sub, 256) }), "not a runtime address"},
		{"address is the gateway", with(func(r *Endpoint) { r.Addr = n2.Gateway() }), "not a runtime address"},
		{"address is the broadcast", with(func(r *Endpoint) { r.Addr = nth(sub, 255) }), "not a runtime address"},
		{"no address", with(func(r *Endpoint) { r.Addr = netip.Addr{} }), "not a runtime address"},
		{"address without lease", with(func(r *Endpoint) { r.Addr = nth(sub, 150) }), "no lease"},
		{"lease names another veth", with(func(r *Endpoint) { r.Addr = b.Addr }), "lease names veth"},
		{"lease names another veth (record's veth is b's)", with(func(r *Endpoint) { r.HostIf = b.HostIf }), "lease names veth"},
		{"lease names another namespace", with(func(r *Endpoint) { r.ID, r.NSPath = b.ID, b.NSPath }), "lease names veth"},
		{"empty id", with(func(r *Endpoint) { r.ID = "" }), "invalid endpoint id"},
		{"id is not the namespace's", with(func(r *Endpoint) { r.ID = "z" }), "namespace file is not"},
		{"veth without our tag", with(func(r *Endpoint) { r.HostIf = "eth0" }), "lacks the network's tag"},
		{"veth missing", with(func(r *Endpoint) {
			r.ID, r.Addr, r.HostIf, r.NSPath = "missing", missingAddr, n2.vethTag+"ms", filepath.Join(n2.nsDir, "missing")
		}), "veth is not there"},
		{"bridge not ours", with(func(r *Endpoint) { r.Bridge = "lo" }), "is not one of the network"},
		{"overflow bridge that is not there", with(func(r *Endpoint) { r.Bridge = overflowName(n2.BridgeName(), 1) }), "is not one of the network"},
		{"veth on no bridge", loose, "is not a port of bridge"},
		{"namespace outside StateDir/ns", outside, "namespace file is not"},
		{"namespace not mounted", with(func(r *Endpoint) {
			r.ID, r.Addr, r.HostIf, r.NSPath = "plain", plainAddr, plainIf, plain
		}), "not a mounted namespace"},
		{"namespace is not the veth's peer's", with(func(r *Endpoint) {
			r.ID, r.Addr, r.HostIf, r.NSPath = b.ID, otherAddr, otherIf, b.NSPath
		}), "is not the peer of"},
	}
	leaseOf := func() string {
		data, err := os.ReadFile(n2.leases.path(a.Addr))
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	type state struct {
		owned, endpoints, ports, inUse int
		lease                          string
	}
	snapshot := func() state {
		n2.mu.Lock()
		defer n2.mu.Unlock()
		return state{len(n2.owned), len(n2.endpoints), len(n2.bridges[0].ports), n2.addrs.inUse(), leaseOf()}
	}
	before := snapshot()
	for _, tc := range cases {
		ep, err := n2.Adopt(tc.rec)
		if !errors.Is(err, ErrNotAdoptable) || !strings.Contains(err.Error(), tc.why) {
			t.Errorf("%s: Adopt gave %+v, %v; want ErrNotAdoptable for %q", tc.name, ep, err, tc.why)
			continue
		}
		t.Logf("%s: %v", tc.name, err)
		if got := snapshot(); got != before {
			t.Errorf("%s: refused, but changed %+v to %+v", tc.name, before, got)
		}
	}
	for _, name := range []string{plainIf, otherIf, loose.HostIf, outside.HostIf} {
		if _, err := netlink.LinkByName(name); err != nil {
			t.Errorf("veth %s of a refused record: %v", name, err)
		}
	}
	assertReachable(t, a)

	// The control, and then the real one.
	g, err := n2.Adopt(good)
	if err != nil {
		t.Fatalf("adopt the whole planted endpoint: %v", err)
	}
	ep, err := n2.Adopt(rec)
	if err != nil {
		t.Fatalf("adopt after the refusals: %v", err)
	}
	// Already adopted: refused, whichever of its parts the record shares.
	for _, r := range []Endpoint{rec, with(func(r *Endpoint) { r.HostIf = good.HostIf })} {
		if again, err := n2.Adopt(r); !errors.Is(err, ErrNotAdoptable) || !strings.Contains(err.Error(), "already") {
			t.Errorf("adopt again: %+v, %v; want ErrNotAdoptable, already adopted", again, err)
		}
	}
	// Attached by this process: refused.
	c, err := n2.Attach(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	if again, err := n2.Adopt(recordOf(t, c)); !errors.Is(err, ErrNotAdoptable) || !strings.Contains(err.Error(), "already") {
		t.Errorf("adopt an attached endpoint: %+v, %v; want ErrNotAdoptable, already attached", again, err)
	}
	if err := n2.Reset(ctx); err != nil {
		t.Fatalf("reset: %v", err)
	}
	assertEndpointThere(t, n2, ep)
	assertEndpointThere(t, n2, g)
	assertEndpointThere(t, n2, c)
	assertReachable(t, ep)
	for _, name := range []string{plainIf, otherIf, loose.HostIf, outside.HostIf, b.HostIf} {
		if _, err := netlink.LinkByName(name); err == nil {
			t.Errorf("veth %s of a refused record survived Reset", name)
		}
	}
	for _, e := range []*Endpoint{g, ep, c} {
		if err := n2.Detach(ctx, e); err != nil {
			t.Errorf("detach %s: %v", e.ID, err)
		}
	}
}

// An adopted endpoint on an overflow bridge keeps its bridge and its /32 host
// route across Reset, which removes the others' routes and the bridge left
// empty; the adopted endpoint's route is put back if it went missing.
func TestAdoptOnOverflowBridge(t *testing.T) {
	// 0 and 1 on the first bridge, 2 and 3 on 01, 4 on 02.
	n, eps := overflowNetwork(t, 5, nil)
	ctx := context.Background()
	first := n.BridgeName()
	rules := ruleCount(t, n)
	if err := n.Release(ctx); err != nil {
		t.Fatal(err)
	}
	n2 := restartNetwork(t, n, nil)
	if got := n2.BridgeNames(); len(got) != 3 {
		t.Fatalf("bridges after restart %v", got)
	}
	// A route that went missing is put back by Adopt.
	if err := netlink.RouteDel(hostRoute(n2.bridges[1], eps[3].Addr)); err != nil {
		t.Fatal(err)
	}
	var adopted []*Endpoint
	for _, i := range []int{0, 3} {
		ep, err := n2.Adopt(recordOf(t, eps[i]))
		if err != nil {
			t.Fatalf("adopt %s: %v", eps[i].ID, err)
		}
		adopted = append(adopted, ep)
	}
	if err := n2.Reset(ctx); err != nil {
		t.Fatalf("reset: %v", err)
	}
	if got, want := n2.BridgeNames(), []string{first, first + "01"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("bridges after Reset %v, want %v", got, want)
	}
	if got, want := hostRoutes(t, n2), []string{eps[3].Addr.String() + " " + first + "01"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("host routes after Reset %v, want %v", got, want)
	}
	if got := ruleCount(t, n2); got["1/input"] != 2*rules["1/input"]/3 {
		t.Errorf("rules after Reset %v: want those of 2 bridges (3 before: %v)", got, rules)
	}
	for _, ep := range adopted {
		assertEndpointThere(t, n2, ep)
		assertReachable(t, ep)
		l, _ := netlink.LinkByName(ep.HostIf)
		if pi, err := netlink.LinkGetProtinfo(l); err != nil || !pi.Isolated {
			t.Errorf("adopted port %s not isolated: %+v %v", ep.HostIf, pi, err)
		}
	}
	for _, i := range []int{1, 2, 4} {
		assertEndpointGone(t, n2, eps[i])
	}
	if err := n2.Check(); err != nil {
		t.Errorf("Check after adoption: %v", err)
	}
	// The adopted ones hold their ports: the next endpoints take the one
	// left on each bridge, then a new overflow bridge.
	var next []*Endpoint
	for i, want := range []string{first, first + "01", first + "02"} {
		ep, err := n2.Attach(ctx, fmt.Sprintf("next%d", i))
		if err != nil {
			t.Fatal(err)
		}
		next = append(next, ep)
		if ep.Bridge != want || ep.Addr == eps[0].Addr || ep.Addr == eps[3].Addr {
			t.Errorf("next endpoint %s on %s with %s; want bridge %s and an address not adopted", ep.ID, ep.Bridge, ep.Addr, want)
		}
		listenEcho(t, ep)
		assertReachable(t, ep)
	}
	for _, ep := range next {
		if err := n2.Detach(ctx, ep); err != nil {
			t.Fatal(err)
		}
	}
	// Detached, the adopted endpoint on 01 takes its route along.
	if err := n2.Detach(ctx, adopted[1]); err != nil {
		t.Fatal(err)
	}
	if got := hostRoutes(t, n2); len(got) > 0 {
		t.Errorf("host routes after detaching the adopted endpoint: %v", got)
	}
	assertEndpointGone(t, n2, eps[3])
}

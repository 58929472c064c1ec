package e2e

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"executor/netns/nettest"
)

// TestRootlessNetworkIsolation: the firewall keeps its meaning for a
// rootless daemon, whose runtimes leave through slirp4netns, which connects
// from the host itself. "The host" is then every address the host had at
// start, its gateways and slirp4netns's network: a runtime reaches a
// machine beyond the host (and is masqueraded as the host there), but not a
// service on the host's own address, nor the host's loopback through
// slirp4netns's alias for it (10.0.2.2, open to the daemon for the registry
// port), nor the daemon's side of its bridge.
func TestRootlessNetworkIsolation(t *testing.T) {
	// A machine beyond the host: traffic to it from anywhere on the host
	// (slirp4netns's sockets) goes into its link. Its address is this
	// test's alone: the rule takes every source, and other packages' tests
	// run at the same time with their own test hosts (198.18.0.0/24).
	beyond, err := nettest.NewHost(nettest.HostConfig{
		Addr: netip.MustParseAddr("198.19.77.1"), Peer: netip.MustParseAddr("198.19.77.2"),
		From: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}, Dir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := beyond.Close(); err != nil {
			t.Errorf("test host: %v", err)
		}
	})
	if err := beyond.ServeHTTP(8080, "beyond-reached"); err != nil {
		t.Fatal(err)
	}
	// A service on every address of the host.
	hostLn, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	hostSrv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, "host-address-reached")
	})}
	go func() { _ = hostSrv.Serve(hostLn) }()
	t.Cleanup(func() { hostSrv.Close() })
	hostPort := hostLn.Addr().(*net.TCPAddr).Port
	hostAddr := primaryAddr(t)

	u := rootlessUser(t, false)
	x := startRootless(t, u)
	_, port, _ := net.SplitHostPort(shared.registry.Addr())
	regPort, _ := strconv.Atoi(port)

	probeReach(t, x.executor, []reachTarget{
		{"beyond", "198.19.77.1", 8080, "/", true},
		{"host-address", hostAddr.String(), hostPort, "/", false},
		{"host-loopback-via-slirp", "10.0.2.2", regPort, "/", false},
		{"slirp-dns", "10.0.2.3", 53, "/", false},
		{"bridge-gateway-api", x.bridgeGateway(t), hostPort, "/", false},
	})
	// Masqueraded twice (the bridge's NAT, then slirp4netns's sockets):
	// the machine beyond saw the host, never a runtime's address.
	seen := beyond.Seen()
	if len(seen) == 0 {
		t.Fatal("the machine beyond the host saw no request")
	}
	for _, s := range seen {
		if ip, _, _ := net.SplitHostPort(s); ip != "198.19.77.2" {
			t.Errorf("the machine beyond saw a request from %s, want the host's 198.19.77.2", ip)
		}
	}
}

// primaryAddr is the host's IPv4 address on its default route's interface.
func primaryAddr(t *testing.T) netip.Addr {
	t.Helper()
	c, err := net.Dial("udp", "192.0.2.123:9") // no packet is sent: only the route is looked up
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	a, ok := netip.AddrFromSlice(c.LocalAddr().(*net.UDPAddr).IP.To4())
	if !ok || a.IsLoopback() {
		t.Fatalf("no primary IPv4 address: %v", c.LocalAddr())
	}
	return a
}

// bridgeGateway is the daemon's address on its runtimes' bridge (the first
// of the subnet).
func (x *rootlessDaemon) bridgeGateway(t *testing.T) string {
	t.Helper()
	for _, kv := range x.env {
		if v, ok := strings.CutPrefix(kv, "OPR_EXECUTOR_SUBNET="); ok {
			return netip.MustParsePrefix(v).Masked().Addr().Next().String()
		}
	}
	t.Fatal("no OPR_EXECUTOR_SUBNET")
	return ""
}

package e2e

import (
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"executor/netns"
	"executor/netns/nettest"
)

// TestNetworkSettings: each of OPR_EXECUTOR_ALLOW_RUNTIME_TO_RUNTIME,
// _ALLOW_HOST_ACCESS, _ALLOW_LINK_LOCAL, _EGRESS_DENY and _EGRESS_ALLOW
// changes what a runtime reaches, and only that, seen from inside one. The
// defaults are the first case (TestNetworkIsolation covers them too, NAT
// included).
func TestNetworkSettings(t *testing.T) {
	// What a runtime reaches by default; each case changes only what its
	// setting is about, so a setting that opened more than its own part
	// (or nothing) fails.
	defaults := map[string]bool{"internet": true, "internet-2": true, "api-on-gateway": false, "peer-runtime": false, "metadata": false}
	with := func(changes map[string]bool) map[string]bool {
		m := map[string]bool{}
		for k, v := range defaults {
			m[k] = v
		}
		for k, v := range changes {
			m[k] = v
		}
		return m
	}
	for _, tc := range []struct {
		name  string
		env   []string
		reach map[string]bool
	}{
		{"defaults", nil, defaults},
		{"ALLOW_RUNTIME_TO_RUNTIME", []string{"OPR_EXECUTOR_ALLOW_RUNTIME_TO_RUNTIME=true"}, with(map[string]bool{"peer-runtime": true})},
		{"ALLOW_HOST_ACCESS", []string{"OPR_EXECUTOR_ALLOW_HOST_ACCESS=true"}, with(map[string]bool{"api-on-gateway": true})},
		{"ALLOW_LINK_LOCAL", []string{"OPR_EXECUTOR_ALLOW_LINK_LOCAL=true"}, with(map[string]bool{"metadata": true})},
		{"EGRESS_DENY", []string{"OPR_EXECUTOR_EGRESS_DENY=198.19.0.0/16"}, with(map[string]bool{"internet-2": false})},
		// Deny both test internet hosts and allow one back; allow the
		// metadata address inside the link-local range.
		{"EGRESS_ALLOW", []string{"OPR_EXECUTOR_EGRESS_DENY=198.18.0.0/15", "OPR_EXECUTOR_EGRESS_ALLOW=198.18.0.1/32,169.254.169.254/32"},
			with(map[string]bool{"internet-2": false, "metadata": true})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := startExecutor(t, append([]string{listenAllAddrs}, tc.env...)...)
			_, port, _ := net.SplitHostPort(strings.TrimPrefix(x.url, "http://"))
			apiPort, _ := strconv.Atoi(port)
			t.Cleanup(func() {
				x.stop() // cleanups run last-registered first: stop before looking
				if tabs, err := nettest.NFTTables(netns.TableName(netns.BridgeName(x.network))); err != nil || len(tabs) > 0 {
					t.Errorf("nftables tables left behind: %v %v", tabs, err)
				}
			})
			subnet := x.subnet(t)
			gateway := subnet.Addr().Next()
			for _, h := range []struct{ name, addr, peer string }{
				{"internet", "198.18.0.1", "198.18.0.2"},
				{"internet-2", "198.19.0.1", "198.19.0.2"},
				{"metadata", "169.254.169.254", "169.254.169.253"},
			} {
				th, err := nettest.NewHost(nettest.HostConfig{
					Addr: netip.MustParseAddr(h.addr), Peer: netip.MustParseAddr(h.peer),
					From: []netip.Prefix{subnet}, Dir: t.TempDir(),
				})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() {
					if err := th.Close(); err != nil {
						t.Errorf("test host %s: %v", h.name, err)
					}
				})
				if err := th.ServeHTTP(8080, h.name+"-reached"); err != nil {
					t.Fatal(err)
				}
			}
			src := source(t, map[string]string{"index.js": "x"})
			if r := x.request(t, "POST", "/v1/runtimes/peer/executions", execBody(src, nil), jsonAccept); r.status != 200 {
				t.Fatalf("peer runtime: %d %s", r.status, r.body)
			}
			leased := x.leasedAddrs(t)
			if len(leased) != 1 {
				t.Fatalf("leases %v, want the peer's only", leased)
			}
			got := probeFrom(t, x, []probeTarget{
				{"internet", "198.18.0.1", 8080, "/", "internet-reached"},
				{"internet-2", "198.19.0.1", 8080, "/", "internet-2-reached"},
				{"metadata", "169.254.169.254", 8080, "/", "metadata-reached"},
				{"api-on-gateway", gateway.String(), apiPort, "/v1/health", `"status":"pass"`},
				// The peer's server answers any request (401 without
				// its secret): an HTTP status line is a reach.
				{"peer-runtime", leased[0].String(), 3000, "/", "HTTP/1."},
			})
			for name, want := range tc.reach {
				if got[name] != want {
					t.Errorf("%s reached: %v, want %v", name, got[name], want)
				}
			}
			if r := x.request(t, "DELETE", "/v1/runtimes/peer", nil, nil); r.status != 200 {
				t.Fatalf("delete peer: %d %s", r.status, r.body)
			}
			x.waitClean(t)
		})
	}
}

// probeTarget is a destination a runtime connects to; want is what the
// reply carries when it got through.
type probeTarget struct {
	name, host string
	port       int
	path, want string
}

// probeFrom has a runtime of x send an HTTP request to each target and
// says which got through. A target neither reached nor clearly dropped (a
// timeout, no route, refused) fails the test: the probe itself went wrong.
func probeFrom(t *testing.T, x *executor, targets []probeTarget) map[string]bool {
	t.Helper()
	reqs := make([]probeRequest, len(targets))
	for i, tg := range targets {
		reqs[i] = probeRequest{tg.name, tg.host, tg.port, tg.path}
	}
	lines := probeLines(t, x, reqs)
	reached := map[string]bool{}
	for _, tg := range targets {
		got, ok := lines[tg.name]
		if !ok {
			t.Fatalf("%s: no result line", tg.name)
		}
		switch {
		case strings.Contains(got, tg.want):
			reached[tg.name] = true
		case strings.Contains(got, "timed out") || strings.Contains(got, "No route to host") || strings.Contains(got, "refused"):
			reached[tg.name] = false
		default:
			t.Fatalf("%s (%s:%d): %q is neither a reply nor a refusal", tg.name, tg.host, tg.port, got)
		}
	}
	return reached
}

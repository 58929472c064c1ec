package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"executor/netns"
	"executor/netns/nettest"
)

// startExecutorAllAddrs is startExecutor with the API listening on every
// address, as in production, so that the bridge gateway address serves the API
// port too and the test can prove runtimes cannot reach it. The test itself
// talks to it over loopback.
func startExecutorAllAddrs(t *testing.T) (*executor, int) {
	t.Helper()
	x := startExecutor(t, listenAllAddrs)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(x.url, "http://"))
	p, _ := strconv.Atoi(port)
	t.Cleanup(func() {
		x.stop() // cleanups run last-registered first: stop before looking
		if tabs, err := nettest.NFTTables(netns.TableName(netns.BridgeName(x.network))); err != nil || len(tabs) > 0 {
			t.Errorf("nftables tables left behind: %v %v", tabs, err)
		}
	})
	return x, p
}

func (x *executor) subnet(t *testing.T) netip.Prefix {
	t.Helper()
	for _, kv := range x.env {
		if v, ok := strings.CutPrefix(kv, "OPR_EXECUTOR_SUBNET="); ok {
			return netip.MustParsePrefix(v)
		}
	}
	t.Fatal("no OPR_EXECUTOR_SUBNET")
	return netip.Prefix{}
}

// leasedAddrs lists the runtime addresses the executor's network has leased.
func (x *executor) leasedAddrs(t *testing.T) []netip.Addr {
	t.Helper()
	dir := filepath.Join(x.dataDir, "networks", netns.BridgeName(x.network), "leases")
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []netip.Addr
	for _, e := range ents {
		if a, err := netip.ParseAddr(e.Name()); err == nil {
			out = append(out, a)
		}
	}
	return out
}

// TestNetworkIsolation proves through the real executor that a runtime
// reaches a test "internet" host through NAT, but neither the executor's API
// port on the bridge gateway, nor another runtime, nor the metadata address.
func TestNetworkIsolation(t *testing.T) {
	x, apiPort := startExecutorAllAddrs(t)
	subnet := x.subnet(t)
	gateway := subnet.Addr().Next()

	// The test hosts get traffic from the executor's subnet only (policy
	// routing); nothing leaves the machine even if a block failed.
	hosts := map[string]*nettest.Host{}
	for _, h := range []struct {
		name       string
		addr, peer string
		port       int
	}{
		{"internet", "198.18.0.1", "198.18.0.2", 8080},
		{"metadata", "169.254.169.254", "169.254.169.253", 80},
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
		if err := th.ServeHTTP(h.port, h.name+"-reached"); err != nil {
			t.Fatal(err)
		}
		hosts[h.name] = th
	}

	// Another runtime, serving on :3000.
	src := source(t, map[string]string{"index.js": "x"})
	if r := x.request(t, "POST", "/v1/runtimes/peer/executions", execBody(src, nil), jsonAccept); r.status != 200 {
		t.Fatalf("peer runtime: %d %s", r.status, r.body)
	}
	leased := x.leasedAddrs(t)
	if len(leased) != 1 {
		t.Fatalf("leases %v, want the peer's only", leased)
	}
	peer := leased[0]
	// The host reaches it (the check below would be blind otherwise).
	if c, err := net.DialTimeout("tcp", net.JoinHostPort(peer.String(), "3000"), 2*time.Second); err != nil {
		t.Fatalf("host -> peer %s:3000: %v", peer, err)
	} else {
		c.Close()
	}

	probeReach(t, x, []reachTarget{
		{"internet", "198.18.0.1", 8080, "/", true},
		{"api-on-gateway", gateway.String(), apiPort, "/v1/health", false},
		{"peer-runtime", peer.String(), 3000, "/", false},
		{"metadata", "169.254.169.254", 80, "/latest/meta-data/", false},
	})
	// NAT: the internet host saw the host side of its link, not a runtime.
	seen := hosts["internet"].Seen()
	if len(seen) == 0 {
		t.Fatal("the internet host saw no request")
	}
	for _, s := range seen {
		if ip, _, _ := net.SplitHostPort(s); ip != "198.18.0.2" {
			t.Errorf("internet host saw a request from %s, want the masqueraded 198.18.0.2", ip)
		}
	}
	if len(hosts["metadata"].Seen()) != 0 {
		t.Errorf("metadata host was reached: %v", hosts["metadata"].Seen())
	}
	if r := x.request(t, "DELETE", "/v1/runtimes/peer", nil, nil); r.status != 200 {
		t.Fatalf("delete peer: %d %s", r.status, r.body)
	}
	x.waitClean(t)
}

// reachTarget is a destination a runtime probes: reach says whether the
// firewall lets it through. A reachable one answers with "<name>-reached".
type reachTarget struct {
	name, host string
	port       int
	path       string
	reach      bool
}

// probeRequest is one HTTP request probeLines sends from a runtime.
type probeRequest struct {
	name, host string
	port       int
	path       string
}

// probeLines has a build of x send each request (HTTP/1.0 through busybox
// nc) and returns what each got, by name: the start of the reply, or nc's
// "timed out" / "can't connect ..." on a drop or refusal.
func probeLines(t *testing.T, x *executor, reqs []probeRequest) map[string]string {
	t.Helper()
	// busybox nc with a hand-written request: Debian's busybox 1.35 wget
	// crashes with -T, and without it would wait minutes on a dropped SYN.
	var script strings.Builder
	for _, rq := range reqs {
		fmt.Fprintf(&script, `echo "%s: $(printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' | nc -w 2 %s %d 2>&1 | head -c 300 | tr '\r\n' '  ')"; `,
			rq.name, rq.path, rq.host, rq.host, rq.port)
	}
	r := x.request(t, "POST", "/v1/runtimes", map[string]any{
		"runtimeId": "net-probe", "image": "openruntimes/test:v5-1", "remove": true, "timeout": 60,
		"command": script.String(),
	}, nil)
	if r.status != 201 {
		t.Fatalf("probe build: %d %s", r.status, r.body)
	}
	var out strings.Builder
	entries, _ := r.json(t)["output"].([]any)
	for _, e := range entries {
		if m, ok := e.(map[string]any); ok {
			c, _ := m["content"].(string)
			out.WriteString(c)
		}
	}
	t.Logf("probe output:\n%s", out.String())
	lines := map[string]string{}
	for _, l := range logLines(out.String()) {
		if k, v, ok := strings.Cut(l, ": "); ok {
			lines[k] = v
		}
	}
	return lines
}

// probeReach has a runtime of x open an HTTP connection to each target and
// checks which got through: a drop shows as a connect timeout (or, for a
// runtime's isolated bridge port, no route to host).
func probeReach(t *testing.T, x *executor, targets []reachTarget) {
	t.Helper()
	reqs := make([]probeRequest, len(targets))
	for i, tg := range targets {
		reqs[i] = probeRequest{tg.name, tg.host, tg.port, tg.path}
	}
	lines := probeLines(t, x, reqs)
	for _, tg := range targets {
		got, ok := lines[tg.name]
		if !ok {
			t.Errorf("%s: no result line", tg.name)
			continue
		}
		dropped := strings.Contains(got, "timed out") || strings.Contains(got, "No route to host")
		reached := strings.Contains(got, "HTTP/1.") || strings.Contains(got, "-reached")
		switch {
		case tg.reach && !(reached && strings.Contains(got, tg.name+"-reached")):
			t.Errorf("%s (%s:%d): %q, want reached", tg.name, tg.host, tg.port, got)
		case !tg.reach && (reached || !dropped):
			t.Errorf("%s (%s:%d): %q, want blocked (dropped)", tg.name, tg.host, tg.port, got)
		}
	}
}

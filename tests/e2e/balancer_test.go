package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"executor/tests/testenv"
)

// balancerHost is one executor on a "host" of its own: a network namespace
// joined to the test's by a veth pair, with its own daemon, data dir,
// subnet and bridge. It reaches the test's registry and S3 server through
// forwarders on its link's host-side address, as a host reaches shared
// services over the network.
type balancerHost struct {
	name   string // network namespace
	hostIP netip.Addr
	nsIP   netip.Addr
	api    string // nsIP:port the API listens on
	x      *executor
}

// newBalancerHost makes the namespace and its link; the caller starts the
// daemon with start. The namespace goes at cleanup, after the daemon (the
// harness's cleanup, registered later, runs first).
func newBalancerHost(t testing.TB, i int) *balancerHost {
	t.Helper()
	h := &balancerHost{name: fmt.Sprintf("e2e-%d-host%d", os.Getpid(), i)}
	link := freeSubnet(t)
	h.hostIP = link.Addr().Next()
	h.nsIP = h.hostIP.Next()
	h.api = netip.AddrPortFrom(h.nsIP, 9900).String()
	outer, inner := fmt.Sprintf("eb%dh%d", os.Getpid()%100000, i), fmt.Sprintf("eb%dn%d", os.Getpid()%100000, i)
	t.Cleanup(func() {
		_ = exec.Command("ip", "netns", "del", h.name).Run()
		_ = exec.Command("ip", "link", "del", outer).Run()
	})
	bits := fmt.Sprint(link.Bits())
	for _, args := range [][]string{
		{"netns", "add", h.name},
		{"link", "add", outer, "type", "veth", "peer", "name", inner, "netns", h.name},
		{"addr", "add", h.hostIP.String() + "/" + bits, "dev", outer},
		{"link", "set", outer, "up"},
		{"-n", h.name, "addr", "add", h.nsIP.String() + "/" + bits, "dev", inner},
		{"-n", h.name, "link", "set", inner, "up"},
		{"-n", h.name, "link", "set", "lo", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return h
}

// start runs the host's daemon with the registry and S3 server reached at
// the host-side address.
func (h *balancerHost) start(t testing.TB, registry, s3 *forwarder, s3srv *testenv.S3Server, bucket string, extra ...string) {
	t.Helper()
	conf := filepath.Join(t.TempDir(), "registries.conf")
	if err := testenv.WriteRegistriesConf(conf, registry.addrOn(t, h.hostIP)); err != nil {
		t.Fatal(err)
	}
	dsn := url.URL{Scheme: "s3", User: url.UserPassword(s3srv.Access, s3srv.Secret), Host: "localhost", Path: "/" + bucket,
		RawQuery: url.Values{"region": {s3srv.Region}, "url": {"http://" + s3.addrOn(t, h.hostIP)}}.Encode()}
	h.x = startExecutor(t, append([]string{inNetns + h.name, "OPR_EXECUTOR_LISTEN=" + h.api, "CONTAINERS_REGISTRIES_CONF=" + conf,
		"OPR_EXECUTOR_CONNECTION_STORAGE=" + dsn.String()}, extra...)...)
	for _, kv := range extra {
		if kv == liveRestoreOn {
			endLiveRestore(t, h.x)
		}
	}
}

// runtimes lists the ids of the host's runtimes, by their name's suffix.
func (h *balancerHost) runtimes(t testing.TB, ids []string) map[string]float64 {
	t.Helper()
	r := h.x.request(t, "GET", "/v1/runtimes", nil, nil)
	if r.status != 200 {
		t.Fatalf("list %s: %d %s", h.name, r.status, r.body)
	}
	var list []map[string]any
	if err := json.Unmarshal(r.body, &list); err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{} // id -> created
	for _, rt := range list {
		name, _ := rt["name"].(string)
		for _, id := range ids {
			if strings.HasSuffix(name, "-"+id) {
				got[id], _ = rt["created"].(float64)
			}
		}
	}
	return got
}

// forwarder forwards TCP connections made to it, on any of the addresses
// it was asked for, to a service on the test's loopback.
type forwarder struct {
	target string
	mu     sync.Mutex
	lns    map[netip.Addr]net.Listener
}

func newForwarder(t testing.TB, target string) *forwarder {
	f := &forwarder{target: target, lns: map[netip.Addr]net.Listener{}}
	t.Cleanup(func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, ln := range f.lns {
			ln.Close()
		}
	})
	return f
}

// addrOn is the forwarder's address on ip, listening there from now on.
func (f *forwarder) addrOn(t testing.TB, ip netip.Addr) string {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if ln := f.lns[ip]; ln != nil {
		return ln.Addr().String()
	}
	ln, err := net.Listen("tcp", netip.AddrPortFrom(ip, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	f.lns[ip] = ln
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := net.Dial("tcp", f.target)
				if err != nil {
					return
				}
				defer up.Close()
				done := make(chan struct{})
				go func() {
					_, _ = io.Copy(up, c)
					up.(*net.TCPConn).CloseWrite()
					close(done)
				}()
				_, _ = io.Copy(c, up)
				c.(*net.TCPConn).CloseWrite()
				<-done
			}()
		}
	}()
	return ln.Addr().String()
}

// haproxy is Debian's HAProxy running contrib/haproxy/executor.cfg with the
// test's listen address and executors.
type haproxy struct {
	url    string
	socket string // admin socket
	logs   *syncBuffer
}

// balancerSetup finds a balancer's binary (Debian's package, which .ci/run
// installs) and reads its shipped configuration, and picks the port it is to
// listen on.
func balancerSetup(t testing.TB, name, config string) (bin string, contrib []byte, port int) {
	t.Helper()
	bin, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s (Debian's package, which .ci/run installs): %v", name, err)
	}
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	if contrib, err = os.ReadFile(filepath.Join(root, config)); err != nil {
		t.Fatal(err)
	}
	if port, err = testenv.FreePort(); err != nil {
		t.Fatal(err)
	}
	return bin, contrib, port
}

func startHAProxy(t testing.TB, servers []string) *haproxy {
	t.Helper()
	bin, contrib, port := balancerSetup(t, "haproxy", "contrib/haproxy/executor.cfg")
	dir := t.TempDir()
	hp := &haproxy{url: fmt.Sprintf("http://127.0.0.1:%d", port), socket: filepath.Join(dir, "admin.sock"), logs: &syncBuffer{}}
	// The shipped file with this test's bind and server lines: everything
	// else (routing, retries, health checks, timeouts) is what operators get.
	var cfg []string
	binds, servers0 := 0, 0
	for _, line := range strings.Split(string(contrib), "\n") {
		switch trimmed := strings.TrimSpace(line); {
		case trimmed == "bind :9900":
			line = fmt.Sprintf("\tbind 127.0.0.1:%d", port)
			binds++
		case strings.HasPrefix(trimmed, "server executor-"):
			servers0++
			continue
		}
		cfg = append(cfg, line)
	}
	if binds != 1 || servers0 == 0 {
		t.Fatalf("contrib/haproxy/executor.cfg: want one `bind :9900` and example server lines at the end, found %d and %d", binds, servers0)
	}
	for i, s := range servers {
		cfg = append(cfg, fmt.Sprintf("\tserver executor-%d %s", i+1, s))
	}
	global := fmt.Sprintf("global\n\tlog stdout format raw local0 info\n\tstats socket %s mode 600 level admin\n", hp.socket)
	for name, text := range map[string]string{"global.cfg": global, "executor.cfg": strings.Join(cfg, "\n") + "\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(bin, "-db", "-f", filepath.Join(dir, "global.cfg"), "-f", filepath.Join(dir, "executor.cfg"))
	cmd.Stdout, cmd.Stderr = hp.logs, hp.logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	waited, err := testenv.StartTied(cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-waited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-waited
		}
		if t.Failed() {
			t.Logf("haproxy log:\n%s", hp.logs.String())
		}
	})
	hp.waitServers(t, len(servers), 30*time.Second)
	return hp
}

// command sends one command to HAProxy's admin socket and returns the
// lines of its answer.
func (hp *haproxy) command(cmd string) ([]string, error) {
	c, err := net.DialTimeout("unix", hp.socket, 2*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, cmd+"\n"); err != nil {
		return nil, err
	}
	var lines []string
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines, sc.Err()
}

// servers is HAProxy's view of the executors: name -> up.
func (hp *haproxy) servers() (map[string]bool, error) {
	lines, err := hp.command("show servers state executors")
	// "# be_id be_name srv_id srv_name srv_addr srv_op_state ..." (op state 2: running)
	got := map[string]bool{}
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) > 5 && !strings.HasPrefix(f[0], "#") {
			got[f[3]] = f[5] == "2"
		}
	}
	return got, err
}

// waitSessions waits until HAProxy has n requests in flight to server
// (connected to it: the executor has them).
func (hp *haproxy) waitSessions(t testing.TB, server string, n int, timeout time.Duration) {
	t.Helper()
	var last []string
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		// CSV: "# pxname,svname,qcur,qmax,scur,..."
		lines, err := hp.command("show stat")
		if err != nil {
			t.Fatal(err)
		}
		last = lines
		for _, l := range lines {
			if f := strings.Split(l, ","); len(f) > 4 && f[0] == "executors" && f[1] == server && f[4] == fmt.Sprint(n) {
				return
			}
		}
	}
	t.Fatalf("haproxy: %s does not have %d requests in flight within %v:\n%s", server, n, timeout, strings.Join(last, "\n"))
}

// waitServers waits until HAProxy holds up servers up, and only those.
func (hp *haproxy) waitServers(t testing.TB, up int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last map[string]bool
	var err error
	for time.Now().Before(deadline) {
		last, err = hp.servers()
		n := 0
		for _, ok := range last {
			if ok {
				n++
			}
		}
		if err == nil && n == up {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("haproxy: want %d executors up within %v, have %v (%v)\n%s", up, timeout, last, err, hp.logs.String())
}

// startNginx runs Debian's nginx with contrib/nginx/executor.conf, with the
// test's listen address and executors; it returns its URL.
func startNginx(t testing.TB, servers []string) string {
	t.Helper()
	bin, contrib, port := balancerSetup(t, "nginx", "contrib/nginx/executor.conf")
	dir := t.TempDir()
	var conf []string
	listens, servers0 := 0, 0
	for _, line := range strings.Split(string(contrib), "\n") {
		switch trimmed := strings.TrimSpace(line); {
		case trimmed == "listen 9900;":
			line = fmt.Sprintf("\tlisten 127.0.0.1:%d;", port)
			listens++
		case strings.HasPrefix(trimmed, "server 10.0.0."):
			if servers0++; servers0 == 1 {
				for _, s := range servers {
					conf = append(conf, fmt.Sprintf("\tserver %s max_fails=1 fail_timeout=5s;", s))
				}
			}
			continue
		}
		conf = append(conf, line)
	}
	if listens != 1 || servers0 == 0 {
		t.Fatalf("contrib/nginx/executor.conf: want one `listen 9900;` and example server lines, found %d and %d", listens, servers0)
	}
	main := fmt.Sprintf(`daemon off;
pid %[1]s/nginx.pid;
error_log stderr warn;
events {}
http {
	access_log off;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	include %[1]s/executor.conf;
}
`, dir)
	for name, text := range map[string]string{"nginx.conf": main, "executor.conf": strings.Join(conf, "\n")} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	logs := &syncBuffer{}
	cmd := exec.Command(bin, "-p", dir, "-c", filepath.Join(dir, "nginx.conf"))
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	waited, err := testenv.StartTied(cmd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGQUIT)
		select {
		case <-waited:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-waited
		}
		if t.Failed() {
			t.Logf("nginx log:\n%s", logs.String())
		}
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return "http://" + addr
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx does not listen on %s: %v\n%s", addr, err, logs.String())
		}
	}
}

// describe is a reply or transport error, for a failure message.
func describe(r *response, err error) string {
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("%d %s", r.status, r.body)
}

// cluster is n executor hosts sharing an S3 bucket with a function's source.
type cluster struct {
	hosts     []*balancerHost
	servers   []string // their API addresses
	sourceKey string
}

func startCluster(t testing.TB, n int) *cluster { return startClusterWith(t, n, nil) }

// startClusterWith is startCluster with extra settings for some hosts, by
// index (live restore on one of them, say).
func startClusterWith(t testing.TB, n int, extra map[int][]string) *cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s3bin, err := testenv.FindS3Server()
	if err != nil {
		t.Fatal(err)
	}
	s3srv, err := testenv.StartS3(ctx, testenv.S3Config{Dir: t.TempDir(), Binary: s3bin})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s3srv.Stop)
	c := &cluster{sourceKey: "functions/lb/code.tar.gz"}
	const bucket = "shared"
	if err := s3srv.MakeBucket(ctx, bucket); err != nil {
		t.Fatal(err)
	}
	admin, err := s3srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	tarball := filepath.Join(t.TempDir(), "code.tar.gz")
	if err := testenv.MakeSourceTarball(tarball, map[string]string{"index.js": "balanced"}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.FPutObject(ctx, bucket, c.sourceKey, tarball, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	registry := newForwarder(t, shared.registry.Addr())
	s3 := newForwarder(t, strings.TrimPrefix(s3srv.URL(), "http://"))
	c.hosts = make([]*balancerHost, n)
	for i := range c.hosts {
		c.hosts[i] = newBalancerHost(t, i+1)
	}
	for i, h := range c.hosts {
		h.start(t, registry, s3, s3srv, bucket, extra[i]...)
		c.servers = append(c.servers, h.api)
	}
	return c
}

// run sends an execution of id through lb (a balancer, or one executor),
// naming the id in the x-opr-runtime-id header when header is set.
func (c *cluster) run(lb *executor, id, path string, header bool) (*response, error) {
	h := map[string]string{"Accept": "application/json", "x-executor-response-format": "0.11.0"}
	if header {
		h["x-opr-runtime-id"] = id
	}
	return lb.send("POST", "/v1/runtimes/"+id+"/executions", execBody("/"+c.sourceKey, map[string]any{"path": path}), h)
}

// TestBalancers runs three executor hosts behind Debian's HAProxy and nginx,
// with contrib/'s configurations, and a shared S3 bucket: runtime ids spread
// over the hosts and stay on theirs (by header, path or creation body), and
// losing a host fails only the requests it had in flight while its ids
// cold-start on the others.
func TestBalancers(t *testing.T) {
	// The first host keeps its runtimes across a restart (live restore).
	const restored = 0
	c := startClusterWith(t, 3, map[int][]string{restored: {liveRestoreOn}})
	hosts, servers := c.hosts, c.servers
	run := c.run
	hp := startHAProxy(t, servers)
	balancers := []struct {
		name string
		x    *executor
		ids  []string
	}{
		{"haproxy", &executor{t: t, url: hp.url}, make([]string, 45)},
		{"nginx", &executor{t: t, url: startNginx(t, servers)}, make([]string, 24)},
	}
	var all []string
	for _, b := range balancers {
		for i := range b.ids {
			b.ids[i] = fmt.Sprintf("%s-%02d", b.name, i)
		}
		all = append(all, b.ids...)
	}
	// where lists the runtimes among ids of every host that is up: id ->
	// host index and creation time; it fails on an id held twice.
	down := map[int]bool{}
	where := func(t *testing.T, ids []string) (map[string]int, map[string]float64) {
		t.Helper()
		at, created := map[string]int{}, map[string]float64{}
		for i, h := range hosts {
			if down[i] {
				continue
			}
			for id, c := range h.runtimes(t, ids) {
				if j, dup := at[id]; dup {
					t.Errorf("runtime %s is on host %d and host %d", id, j+1, i+1)
				}
				at[id], created[id] = i, c
			}
		}
		return at, created
	}

	for _, b := range balancers {
		t.Run(b.name+": runtime ids spread over the hosts", func(t *testing.T) {
			errs := make(chan error, len(b.ids))
			sem := make(chan struct{}, 8)
			for _, id := range b.ids {
				sem <- struct{}{}
				go func() {
					defer func() { <-sem }()
					r, err := run(b.x, id, "/", true)
					if err != nil || r.status != 200 {
						errs <- fmt.Errorf("%s: %s", id, describe(r, err))
						return
					}
					errs <- nil
				}()
			}
			for range b.ids {
				if err := <-errs; err != nil {
					t.Error(err)
				}
			}
			at, _ := where(t, b.ids)
			if len(at) != len(b.ids) {
				t.Fatalf("%d of %d runtimes found on the hosts: %v", len(at), len(b.ids), at)
			}
			per := make([]int, len(hosts))
			for _, i := range at {
				per[i]++
			}
			t.Logf("runtimes per host: %v", per)
			for i, n := range per {
				if n == 0 {
					t.Errorf("host %d holds %d of %d runtimes: not spread (%v)", i+1, n, len(b.ids), per)
				}
			}
		})
	}
	if t.Failed() {
		t.FailNow()
	}
	before, created := where(t, all)

	// Open Runtimes Proxy balances on each executor's keyed health: a 200
	// whose status is "pass", the host's CPU "usage" (it prefers hosts under
	// 80), and "runtimes" keyed by runtime id, where it looks for the id of
	// x-opr-runtime-id to send an execution to the host that holds it.
	t.Run("each host's health says what Open Runtimes Proxy reads", func(t *testing.T) {
		for i, h := range hosts {
			r := h.x.request(t, "GET", "/v1/health", nil, nil)
			var doc struct {
				Status   string   `json:"status"`
				Usage    *float64 `json:"usage"`
				Runtimes map[string]struct {
					Status string   `json:"status"`
					Usage  *float64 `json:"usage"`
				} `json:"runtimes"`
			}
			if r.status != 200 || json.Unmarshal(r.body, &doc) != nil || doc.Status != "pass" || doc.Usage == nil {
				t.Fatalf("host %d: %d %s", i+1, r.status, r.body)
			}
			held := 0
			for _, id := range all {
				rt, ok := doc.Runtimes[id]
				switch {
				case before[id] == i && (!ok || rt.Status != "pass" || rt.Usage == nil):
					t.Errorf("host %d holds %s, its health says %+v (present %v)", i+1, id, rt, ok)
				case before[id] != i && ok:
					t.Errorf("host %d does not hold %s, its health lists it", i+1, id)
				}
				if ok {
					held++
				}
			}
			if held == 0 {
				t.Errorf("host %d: no runtime in its health: %s", i+1, r.body)
			}
		}
	})

	for _, b := range balancers {
		t.Run(b.name+": an id stays warm on its host, by header or by path", func(t *testing.T) {
			for _, id := range b.ids[:10] {
				for _, header := range []bool{true, false, true} {
					if r, err := run(b.x, id, "/", header); err != nil || r.status != 200 {
						t.Fatalf("%s (header %v): %s", id, header, describe(r, err))
					}
				}
			}
			at, again := where(t, all)
			for _, id := range all {
				if at[id] != before[id] || again[id] != created[id] {
					t.Errorf("%s moved or was created again: host %d -> %d, created %v -> %v", id, before[id]+1, at[id]+1, created[id], again[id])
				}
			}
		})

		t.Run(b.name+": a creation is routed by the runtimeId in its body", func(t *testing.T) {
			for i := range 6 {
				id := fmt.Sprintf("%s-body-%d", b.name, i)
				body := execBody("/"+c.sourceKey, map[string]any{"runtimeId": id})
				delete(body, "timeout")
				if r, err := b.x.send("POST", "/v1/runtimes", body, nil); err != nil || r.status != 201 {
					t.Fatalf("create %s: %s", id, describe(r, err))
				}
				at1, c1 := where(t, []string{id})
				// The execution names it by header; it must find the
				// runtime the creation made (no second one, no cold start).
				if r, err := run(b.x, id, "/", true); err != nil || r.status != 200 {
					t.Fatalf("execute %s: %s", id, describe(r, err))
				}
				at2, c2 := where(t, []string{id})
				if len(at2) != 1 || c2[id] != c1[id] {
					t.Errorf("%s: created on host %v, after the execution on host %v (created %v, then %v)", id, at1, at2, c1, c2)
				}
				b.x.deleteRuntime(t, id)
			}
		})
	}

	t.Run("a host restarted with live restore keeps its ids warm", func(t *testing.T) {
		var kept []string
		for _, id := range all {
			if before[id] == restored {
				kept = append(kept, id)
			}
		}
		if len(kept) == 0 {
			t.Fatal("no id on the host to restart")
		}
		// Stopped (SIGTERM), then killed (SIGKILL, a crash): both keep
		// them.
		for _, how := range []string{"SIGTERM", "SIGKILL"} {
			if how == "SIGTERM" {
				hosts[restored].x.stop()
			} else {
				hosts[restored].x.kill()
			}
			hosts[restored].x.start()
			for _, b := range balancers {
				for _, id := range b.ids {
					if before[id] != restored {
						continue
					}
					if r, err := run(b.x, id, "/", true); err != nil || r.status != 200 {
						t.Errorf("%s: %s after its host restarted (%s): %s", b.name, id, how, describe(r, err))
					}
				}
			}
			// Each is where it was, as it was, and on no other host
			// (where reports an id on two hosts).
			at, again := where(t, all)
			for _, id := range all {
				if at[id] != before[id] || again[id] != created[id] {
					t.Errorf("%s: %s moved or was created again: host %d -> %d, created %v -> %v", how, id, before[id]+1, at[id]+1, created[id], again[id])
				}
			}
		}
	})

	t.Run("losing a host fails only its requests in flight", func(t *testing.T) {
		const lost = 1 // hosts[1]
		var onLost, onOthers []string
		for _, id := range balancers[0].ids {
			if before[id] == lost {
				onLost = append(onLost, id)
			} else {
				onOthers = append(onOthers, id)
			}
		}
		type result struct {
			id  string
			r   *response
			err error
		}
		inflight := make(chan result, 8)
		for _, id := range append(onLost[:3:3], onOthers[:5]...) {
			go func() {
				r, err := run(balancers[0].x, id, "/sleep?ms=4000", true)
				inflight <- result{id, r, err}
			}()
		}
		hp.waitSessions(t, fmt.Sprintf("executor-%d", lost+1), 3, 30*time.Second)
		hosts[lost].x.kill()
		down[lost] = true
		for range 8 {
			res := <-inflight
			wasLost := before[res.id] == lost
			ok := res.err == nil && res.r.status == 200
			switch {
			case wasLost && ok:
				t.Errorf("%s was in flight on the killed host and still answered 200", res.id)
			case !wasLost && !ok:
				t.Errorf("%s, on a host that stayed, failed: %s", res.id, describe(res.r, res.err))
			}
		}
		// Every id answers on the next request, the first ones before the
		// balancers take the host out: those of the lost host cold-start on
		// another (after a retry), the others stay warm where they were.
		for _, b := range balancers {
			for _, id := range b.ids {
				if r, err := run(b.x, id, "/", true); err != nil || r.status != 200 {
					t.Errorf("%s: %s after the host was lost: %s", b.name, id, describe(r, err))
				}
			}
		}
		at, again := where(t, all)
		for _, id := range all {
			switch {
			case before[id] == lost && (at[id] == lost || again[id] == 0):
				t.Errorf("%s of the lost host: not cold-started on another", id)
			case before[id] != lost && (at[id] != before[id] || again[id] != created[id]):
				t.Errorf("%s moved or was created again: host %d -> %d", id, before[id]+1, at[id]+1)
			}
		}
		hp.waitServers(t, 2, 30*time.Second)
		// The host comes back (its daemon removes what the killed one left)
		// and HAProxy sends it requests again.
		hosts[lost].x.start()
		delete(down, lost)
		hp.waitServers(t, 3, 30*time.Second)
	})
}

// BenchmarkBalancer measures warm executions through HAProxy with
// contrib/haproxy/executor.cfg in front of 1, 2 and 3 executor hosts: the
// latency of one client through the 3-host balancer beside the same request
// sent straight to an executor, then the executions per second of 40 clients
// over 30 runtime ids for each number of hosts beside the same clients sent
// straight to one executor. On one machine the hosts share its cores, so the
// figures show the balancer's cost, not what more machines would add.
func BenchmarkBalancer(b *testing.B) {
	c := startCluster(b, 3)
	ids := make([]string, 30)
	for i := range ids {
		ids[i] = fmt.Sprintf("bench-%02d", i)
	}
	tr := &http.Transport{MaxIdleConnsPerHost: warmClients}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: time.Minute}
	body := []byte(`{"path":"/status?code=200"}`)
	var next atomic.Uint64
	// once sends an execution of the next id to url.
	once := func(url string) func() (time.Duration, error) {
		return func() (time.Duration, error) {
			id := ids[next.Add(1)%uint64(len(ids))]
			req, _ := http.NewRequest("POST", url+"/v1/runtimes/"+id+"/executions", bytes.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+secret)
			req.Header.Set("x-opr-runtime-id", id)
			for k, v := range jsonAccept {
				req.Header.Set(k, v)
			}
			start := time.Now()
			resp, err := client.Do(req)
			if err != nil {
				return 0, err
			}
			drain(resp)
			if resp.StatusCode != 200 {
				return 0, fmt.Errorf("%s: status %d", url, resp.StatusCode)
			}
			return time.Since(start), nil
		}
	}
	// warmUp cold-starts every id where target sends it, then warms the
	// client's connections.
	warmUp := func(target *executor) {
		for _, id := range ids {
			if r, err := c.run(target, id, "/", true); err != nil || r.status != 200 {
				b.Fatalf("cold start %s through %s: %s", id, target.url, describe(r, err))
			}
		}
		if _, err := concurrently(warmClients, 2, once(target.url)); err != nil {
			b.Fatal(err)
		}
	}
	direct := c.hosts[0].x
	warmUp(direct)
	balancers := make([]*executor, len(c.hosts))
	for n := range c.hosts {
		hp := startHAProxy(b, c.servers[:n+1])
		balancers[n] = &executor{t: b, url: hp.url}
		warmUp(balancers[n])
	}

	var dd, db []time.Duration
	toDirect, toBalancer := once(direct.url), once(balancers[len(balancers)-1].url)
	for b.Loop() {
		for _, p := range []struct {
			f  func() (time.Duration, error)
			ds *[]time.Duration
		}{{toDirect, &dd}, {toBalancer, &db}} {
			d, err := p.f()
			if err != nil {
				b.Fatal(err)
			}
			*p.ds = append(*p.ds, d)
		}
	}
	reportDurations(b, "direct", dd)
	reportDurations(b, "balancer3", db)

	perClient := max(5, len(dd))
	rps := func(url string) float64 {
		d, err := concurrently(warmClients, perClient, once(url))
		if err != nil {
			b.Fatal(err)
		}
		return float64(warmClients*perClient) / d.Seconds()
	}
	b.ReportMetric(float64(warmClients*perClient), "c40-n")
	b.ReportMetric(rps(direct.url), "direct-c40-rps")
	for n, lb := range balancers {
		b.ReportMetric(rps(lb.url), fmt.Sprintf("hosts%d-c40-rps", n+1))
	}
}

package e2e

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"executor/tests/testenv"
)

// stallAfter is how many bytes of the registry's answers a stalling proxy
// passes: the ping, the manifest and the config, not the first big layer.
const stallAfter = 64 << 10

// stallProxy forwards TCP to a registry until it has passed its budget of
// bytes towards the client; then it stops passing anything, without closing,
// as a registry whose link died mid-transfer looks to its client.
type stallProxy struct {
	addr    string
	stalled chan struct{} // closed once the budget is spent

	mu     sync.Mutex
	budget int
	once   sync.Once
	stop   chan struct{}
	conns  []net.Conn
}

func startStallProxy(t *testing.T, target string, budget int) *stallProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{addr: ln.Addr().String(), stalled: make(chan struct{}), budget: budget, stop: make(chan struct{})}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		close(p.stop)
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); _, _ = io.Copy(up, c) }()
			go func() { defer wg.Done(); p.down(c, up) }()
		}
	}()
	return p
}

// down copies the registry's answer to the client while the budget lasts.
func (p *stallProxy) down(c, up net.Conn) {
	buf := make([]byte, 4096)
	for {
		n, err := up.Read(buf)
		if n > 0 {
			p.mu.Lock()
			pass := min(n, p.budget)
			p.budget -= pass
			p.mu.Unlock()
			if _, werr := c.Write(buf[:pass]); werr != nil {
				return
			}
			if pass < n {
				p.once.Do(func() { close(p.stalled) })
				<-p.stop // hold the connection open, silent
				return
			}
		}
		if err != nil {
			c.Close()
			return
		}
	}
}

// TestFaultsRegistry: a registry that is down, or that stalls mid-pull, fails
// the pull with a clear error (the stall at OPR_EXECUTOR_PULL_TIMEOUT, not at
// a client's patience), through POST /v1/images and through a cold start;
// nothing half-pulled stays, and the daemon serves.
func TestFaultsRegistry(t *testing.T) {
	closed, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	down := fmt.Sprintf("127.0.0.1:%d", closed)
	const pullTimeout = 3
	src := source(t, map[string]string{"index.js": "x"})
	timedOut := fmt.Sprintf("registry unreachable: the pull did not finish within %ds", pullTimeout)
	tests := []struct {
		name  string
		stall bool // the registry is a stalling proxy; else it is down
		// coldStart pulls through an execution (whose own timeout is far
		// longer than the pull's) instead of POST /v1/images.
		coldStart bool
		status    int
		typ, msg  string
	}{
		{"down, POST /v1/images", false, false, 502, "image_pull_failed", "registry unreachable"},
		{"down, cold start", false, true, 400, "runtime_failed", "failed to pull it: registry unreachable"},
		{"stalls, POST /v1/images", true, false, 502, "image_pull_failed", timedOut},
		{"stalls, cold start", true, true, 400, "runtime_failed", "failed to pull it: " + timedOut},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// A daemon of its own each time: its store has none of the
			// image's layers, so the stall hits a layer download.
			registry := down
			var stall *stallProxy
			if tc.stall {
				stall = startStallProxy(t, shared.registry.Addr(), stallAfter)
				registry = stall.addr
			}
			x := startExecutor(t, "CONTAINERS_REGISTRIES_CONF="+imagesRegistriesConf(t, registry),
				fmt.Sprintf("OPR_EXECUTOR_PULL_TIMEOUT=%d", pullTimeout))
			image := registry + "/openruntimes/test:v5-1"
			var r *response
			if tc.coldStart {
				r = faultRequest(t, x, "POST", "/v1/runtimes/registry-fault/executions", execBody(src, map[string]any{"image": image, "timeout": 60}))
			} else {
				r = faultRequest(t, x, "POST", "/v1/images", map[string]any{"image": image})
			}
			assertFault(t, r, tc.status, tc.typ, tc.msg)
			if stall != nil {
				select {
				case <-stall.stalled:
				default:
					t.Error("the proxy never stalled: the pull failed for another reason")
				}
			}
			if ents, _ := os.ReadDir(filepath.Join(x.dataDir, "images", "tmp")); len(ents) > 0 {
				t.Errorf("half-pulled layers left in images/tmp: %v", ents)
			}
			x.waitClean(t)
			assertServesFresh(t, x, src)
		})
	}
}

package netns

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("netns tests need root (CI runs as root)")
	}
}

func testNetwork(t *testing.T) *Network {
	t.Helper()
	requireRoot(t)
	name := fmt.Sprintf("nstest-%d-%s", os.Getpid(), t.Name())
	subnet := netip.MustParsePrefix(fmt.Sprintf("10.%d.%d.0/24", 200+os.Getpid()%50, os.Getpid()%250))
	n, err := New(context.Background(), Config{Name: name, Subnet: subnet, StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Close(context.Background()); err != nil {
			t.Errorf("close: %v", err)
		}
		if _, err := netlink.LinkByName(n.BridgeName()); err == nil {
			t.Errorf("bridge %s left behind", n.BridgeName())
		}
	})
	return n
}

// listenIn opens a TCP listener inside the namespace at path.
func listenIn(t *testing.T, path string, addr string) net.Listener {
	t.Helper()
	type res struct {
		l   net.Listener
		err error
	}
	ch := make(chan res, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		ns, err := vnetns.GetFromPath(path)
		if err != nil {
			ch <- res{err: err}
			return
		}
		defer ns.Close()
		if err := vnetns.Set(ns); err != nil {
			ch <- res{err: err}
			return
		}
		l, err := net.Listen("tcp", addr)
		ch <- res{l, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { r.l.Close() })
	return r.l
}

func TestAttachReachableAndDetachCleans(t *testing.T) {
	n := testNetwork(t)
	ctx := context.Background()
	ep, err := n.Attach(ctx, "rt1")
	if err != nil {
		t.Fatal(err)
	}
	if !n.Subnet().Contains(ep.Addr) || ep.Addr == n.Gateway() {
		t.Fatalf("address %s not a runtime address of %s", ep.Addr, n.Subnet())
	}
	l := listenIn(t, ep.NSPath, net.JoinHostPort(ep.Addr.String(), "3000"))
	go func() {
		c, err := l.Accept()
		if err == nil {
			c.Write([]byte("hi"))
			c.Close()
		}
	}()
	c, err := net.Dial("tcp", net.JoinHostPort(ep.Addr.String(), "3000"))
	if err != nil {
		t.Fatalf("dial runtime address from host: %v", err)
	}
	buf := make([]byte, 2)
	if _, err := c.Read(buf); err != nil || string(buf) != "hi" {
		t.Fatalf("read %q, %v", buf, err)
	}
	c.Close()
	l.Close()

	if err := n.Detach(ctx, ep); err != nil {
		t.Fatal(err)
	}
	if _, err := netlink.LinkByName(ep.HostIf); err == nil {
		t.Errorf("veth %s still exists after detach", ep.HostIf)
	}
	if _, err := os.Stat(ep.NSPath); !os.IsNotExist(err) {
		t.Errorf("namespace file %s still exists: %v", ep.NSPath, err)
	}
	if got := n.addrs.inUse(); got != 0 {
		t.Errorf("%d addresses still allocated", got)
	}
}

func TestConcurrentAttachUniqueAddresses(t *testing.T) {
	n := testNetwork(t)
	ctx := context.Background()
	const count = 20
	var mu sync.Mutex
	seen := map[netip.Addr]string{}
	var wg sync.WaitGroup
	errs := make(chan error, count)
	for i := 0; i < count; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			ep, err := n.Attach(ctx, fmt.Sprintf("c%d", i))
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			if other, dup := seen[ep.Addr]; dup {
				errs <- fmt.Errorf("address %s given to %s and %s", ep.Addr, other, ep.ID)
			}
			seen[ep.Addr] = ep.ID
			mu.Unlock()
			if err := n.Detach(ctx, ep); err != nil {
				errs <- err
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestResetRemovesLeftovers(t *testing.T) {
	n := testNetwork(t)
	ctx := context.Background()
	ep, err := n.Attach(ctx, "left")
	if err != nil {
		t.Fatal(err)
	}
	// A new process knows nothing of ep: simulate with a second Network value.
	n2, err := New(ctx, n.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := n2.Reset(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := netlink.LinkByName(ep.HostIf); err == nil {
		t.Errorf("veth %s survived reset", ep.HostIf)
	}
	if _, err := os.Stat(ep.NSPath); !os.IsNotExist(err) {
		t.Errorf("namespace %s survived reset", ep.NSPath)
	}
	n.mu.Lock()
	delete(n.endpoints, ep.NSPath)
	n.mu.Unlock()
}

func TestAllocatorWrapsAndExhausts(t *testing.T) {
	subnet := netip.MustParsePrefix("10.1.2.0/29") // gateway .1, usable .2-.6
	a := newAllocator(subnet, subnet.Addr().Next())
	var got []netip.Addr
	for {
		addr, err := a.get()
		if err != nil {
			break
		}
		got = append(got, addr)
	}
	if len(got) != 5 || got[0].String() != "10.1.2.2" || got[4].String() != "10.1.2.6" {
		t.Fatalf("got %v", got)
	}
	a.put(got[1])
	if addr, err := a.get(); err != nil || addr != got[1] {
		t.Fatalf("after release got %v %v", addr, err)
	}
}

// Package nettest builds test hosts for network tests: a network namespace
// of its own with one address, wired to the host's namespace by a veth pair
// and reachable only by traffic from given source prefixes (policy routing),
// so a test can stand in for "the internet" or a metadata service without any
// traffic leaving the machine, and without changing routes for anyone else.
package nettest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// rulePriority places our policy rules before the main table (32766).
const rulePriority = 9000

// Host is a test host in its own network namespace.
type Host struct {
	Addr   netip.Addr // the host's address inside its namespace
	Peer   netip.Addr // the host-side end's address: what masqueraded traffic comes from
	NSPath string     // pinned namespace
	Link   string     // host-side veth name

	dir     string
	table   int
	rules   []*netlink.Rule
	servers []*http.Server
	mu      sync.Mutex
	seen    []string // remote addresses of HTTP requests served
}

// HostConfig describes a test host.
type HostConfig struct {
	Addr netip.Addr     // address inside (e.g. 198.18.0.1, 169.254.169.254)
	Peer netip.Addr     // address of the host-side end (e.g. 198.18.0.2)
	From []netip.Prefix // source prefixes whose traffic to Addr is routed to the host
	Dir  string         // a directory for the namespace file (e.g. t.TempDir())
}

var linkSeq struct {
	mu sync.Mutex
	n  uint32
}

// uniqueName returns an interface name unique to this process and call.
func uniqueName(prefix string) string {
	linkSeq.mu.Lock()
	linkSeq.n++
	n := linkSeq.n
	linkSeq.mu.Unlock()
	return fmt.Sprintf("%s%05x%03x", prefix, os.Getpid()&0xfffff, n&0xfff)
}

// NewHost creates the host. Close removes everything it made; call it even
// when NewHost fails half-way (it returns the partial host then).
func NewHost(cfg HostConfig) (h *Host, err error) {
	h = &Host{Addr: cfg.Addr, Peer: cfg.Peer, dir: cfg.Dir, Link: uniqueName("nth")}
	h.NSPath = filepath.Join(cfg.Dir, "host-"+h.Link)
	defer func() {
		if err != nil {
			_ = h.Close()
			h = nil
		}
	}()
	if err := CreateNamespace(h.NSPath); err != nil {
		return h, err
	}
	ns, err := vnetns.GetFromPath(h.NSPath)
	if err != nil {
		return h, err
	}
	defer ns.Close()
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: h.Link}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(ns))}
	if err := netlink.LinkAdd(veth); err != nil {
		return h, fmt.Errorf("nettest: veth %s: %w", h.Link, err)
	}
	// /32 addresses add no prefix route: nothing changes for traffic that
	// our policy rule does not select.
	if err := netlink.AddrAdd(veth, &netlink.Addr{IPNet: host32(cfg.Peer)}); err != nil {
		return h, fmt.Errorf("nettest: address %s: %w", cfg.Peer, err)
	}
	if err := netlink.LinkSetUp(veth); err != nil {
		return h, err
	}
	inside, err := netlink.NewHandleAt(ns)
	if err != nil {
		return h, err
	}
	defer inside.Close()
	eth0, err := inside.LinkByName("eth0")
	if err != nil {
		return h, err
	}
	if err := inside.AddrAdd(eth0, &netlink.Addr{IPNet: host32(cfg.Addr)}); err != nil {
		return h, err
	}
	for _, l := range []netlink.Link{eth0} {
		if err := inside.LinkSetUp(l); err != nil {
			return h, err
		}
	}
	if lo, err := inside.LinkByName("lo"); err == nil {
		_ = inside.LinkSetUp(lo)
	}
	if err := inside.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Dst: host32(cfg.Peer), Scope: netlink.SCOPE_LINK}); err != nil {
		return h, fmt.Errorf("nettest: route to peer: %w", err)
	}
	if err := inside.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: net.IP(cfg.Peer.AsSlice())}); err != nil {
		return h, fmt.Errorf("nettest: default route: %w", err)
	}
	if err := h.routeFrom(veth, cfg.From); err != nil {
		return h, err
	}
	return h, nil
}

// routeFrom sends traffic from the prefixes to Addr into the veth through a
// routing table of its own.
func (h *Host) routeFrom(veth netlink.Link, from []netip.Prefix) error {
	used := map[int]bool{}
	rules, err := netlink.RuleList(netlink.FAMILY_V4)
	if err != nil {
		return err
	}
	for _, r := range rules {
		used[r.Table] = true
	}
	for {
		h.table = 100000 + rand.IntN(1<<30)
		if !used[h.table] {
			break
		}
	}
	if err := netlink.RouteAdd(&netlink.Route{LinkIndex: veth.Attrs().Index, Dst: host32(h.Addr), Scope: netlink.SCOPE_LINK, Table: h.table}); err != nil {
		return fmt.Errorf("nettest: route in table %d: %w", h.table, err)
	}
	for _, p := range from {
		r := netlink.NewRule()
		r.Family = netlink.FAMILY_V4
		r.Priority = rulePriority
		r.Table = h.table
		r.Src = prefixNet(p)
		r.Dst = host32(h.Addr)
		if err := netlink.RuleAdd(r); err != nil {
			return fmt.Errorf("nettest: rule from %s: %w", p, err)
		}
		h.rules = append(h.rules, r)
	}
	return nil
}

// Close removes the rules, routes, veth, servers and namespace.
func (h *Host) Close() error {
	var errs []error
	for _, s := range h.servers {
		_ = s.Close()
	}
	for _, r := range h.rules {
		if err := netlink.RuleDel(r); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("nettest: delete rule: %w", err))
		}
	}
	if h.table != 0 {
		routes, _ := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: h.table}, netlink.RT_FILTER_TABLE)
		for _, r := range routes {
			_ = netlink.RouteDel(&r)
		}
	}
	if l, err := netlink.LinkByName(h.Link); err == nil {
		if err := netlink.LinkDel(l); err != nil {
			errs = append(errs, err)
		}
	}
	if err := RemoveNamespace(h.NSPath); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// ServeHTTP starts an HTTP server on Addr:port inside the namespace that
// answers every request with body and records where requests came from.
func (h *Host) ServeHTTP(port int, body string) error {
	l, err := ListenIn(h.NSPath, net.JoinHostPort(h.Addr.String(), fmt.Sprint(port)))
	if err != nil {
		return err
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.seen = append(h.seen, r.RemoteAddr)
		h.mu.Unlock()
		io.WriteString(w, body)
	})}
	h.servers = append(h.servers, srv)
	go srv.Serve(l)
	return nil
}

// Seen returns the remote addresses (ip:port) of the requests served so far.
func (h *Host) Seen() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.seen...)
}

func host32(a netip.Addr) *net.IPNet {
	return &net.IPNet{IP: net.IP(a.AsSlice()), Mask: net.CIDRMask(32, 32)}
}

func prefixNet(p netip.Prefix) *net.IPNet {
	p = p.Masked()
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), 32)}
}

// CreateNamespace makes a network namespace pinned on path.
func CreateNamespace(path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		return err
	}
	f.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- unix.Mount(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), path, "none", unix.MS_BIND, "")
	}()
	if err := <-errc; err != nil {
		os.Remove(path)
		return fmt.Errorf("nettest: namespace %s: %w", path, err)
	}
	return nil
}

// RemoveNamespace unpins a namespace; missing is fine.
func RemoveNamespace(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return err
	}
	if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
}

// In runs f on a thread switched into the namespace at path. The thread is
// never switched back: it ends with the goroutine.
func In(path string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		ns, err := vnetns.GetFromPath(path)
		if err != nil {
			errc <- err
			return
		}
		defer ns.Close()
		if err := vnetns.Set(ns); err != nil {
			errc <- err
			return
		}
		errc <- f()
	}()
	return <-errc
}

// ListenIn opens a TCP listener inside the namespace. The socket stays in that
// namespace; it can be served from any goroutine.
func ListenIn(path, addr string) (net.Listener, error) {
	var l net.Listener
	err := In(path, func() (err error) {
		l, err = net.Listen("tcp", addr)
		return err
	})
	return l, err
}

// Get sends GET http://addr/ from inside the namespace at path and returns the
// body. timeout bounds the whole exchange.
func Get(path, addr string, timeout time.Duration) (string, error) {
	var body string
	err := In(path, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(timeout))
		req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
		req.Close = true
		if err := req.Write(c); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		body = string(b)
		return err
	})
	return body, err
}

// FreeSubnet picks a 10.x.y.0/bits prefix that no address or route of the
// host overlaps, as netns.New checks (an address counts with its prefix
// length, a default route does not).
func FreeSubnet(bits int) (netip.Prefix, error) {
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return netip.Prefix{}, err
	}
	routes, _ := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	for i := 0; i < 1000; i++ {
		cand := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(150 + rand.IntN(100)), byte(rand.IntN(256)), 0}), bits).Masked()
		clash := false
		for _, a := range addrs {
			for _, n := range []*net.IPNet{a.IPNet, a.Peer} {
				if n == nil {
					continue
				}
				if p, ok := netip.AddrFromSlice(n.IP.To4()); ok {
					ones, bits := n.Mask.Size()
					if bits == 128 {
						ones -= 96
					}
					if netip.PrefixFrom(p, ones).Overlaps(cand) {
						clash = true
					}
				}
			}
		}
		for _, r := range routes {
			if r.Dst == nil {
				continue
			}
			if p, ok := netip.AddrFromSlice(r.Dst.IP.To4()); ok {
				ones, _ := r.Dst.Mask.Size()
				if ones > 0 && netip.PrefixFrom(p, ones).Overlaps(cand) {
					clash = true
				}
			}
		}
		if !clash {
			return cand, nil
		}
	}
	return netip.Prefix{}, errors.New("nettest: no free subnet")
}

// Blocked reports whether err looks like a connection that was silently
// dropped or refused, as opposed to a test mistake.
func Blocked(err error) bool {
	if err == nil {
		return false
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, unix.ECONNREFUSED) ||
		errors.Is(err, unix.EHOSTUNREACH) || errors.Is(err, unix.ENETUNREACH) ||
		strings.Contains(err.Error(), "i/o timeout")
}

// NFTTables lists the nftables tables called name, as "family/name".
func NFTTables(name string) ([]string, error) {
	c, err := nftables.New()
	if err != nil {
		return nil, err
	}
	tabs, err := c.ListTables()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, tb := range tabs {
		if tb.Name == name {
			out = append(out, fmt.Sprintf("%d/%s", tb.Family, tb.Name))
		}
	}
	return out, nil
}

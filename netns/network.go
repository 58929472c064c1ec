// Package netns gives each runtime its own network namespace, wired to a
// bridge of the executor with a veth pair and an address of the bridge's subnet.
package netns

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
)

// Config describes one network (one name of OPR_EXECUTOR_NETWORK). The zero
// value of every optional field is the safe default.
type Config struct {
	// Name is the network name clients know (e.g. openruntimes-runtimes).
	Name string
	// Bridge is the bridge interface name; empty derives a short stable one
	// from Name (interface names are limited to 15 bytes).
	Bridge string
	// Subnet holds the bridge address (the first host address) and the
	// runtimes' addresses.
	Subnet netip.Prefix
	// StateDir holds the namespace files (ns/) and address leases (leases/)
	// of this network's endpoints. It must be this network's own.
	StateDir string
	Logger   *slog.Logger

	// AllowRuntimeToRuntime lets runtimes reach each other. By default
	// (false) bridge ports cannot talk to each other (isolated ports plus a
	// bridge-family nftables rule), and no new connection is routed into the
	// bridge (from runtimes of other networks, hairpin, other hosts): only
	// the host itself opens connections to runtimes.
	AllowRuntimeToRuntime bool
	// AllowHostAccess lets runtimes open connections to the host's own
	// addresses (the gateway, the executor's API port...). By default
	// (false) only replies to connections the host opened, and DNS (port 53,
	// UDP and TCP) to DNSServers, get in.
	AllowHostAccess bool
	// AllowLinkLocal lets runtimes reach 169.254.0.0/16 (cloud metadata
	// services). Blocked by default.
	AllowLinkLocal bool
	// DenyCIDRs are destinations runtimes may not reach (IPv4 prefixes).
	// Use 0.0.0.0/0 with AllowCIDRs for an allow-list-only egress.
	DenyCIDRs []netip.Prefix
	// AllowCIDRs are exceptions: destinations that stay reachable even when
	// they fall inside DenyCIDRs or 169.254.0.0/16. Deny wins unless an
	// allow entry covers the destination. They do not open the host's own
	// addresses (see AllowHostAccess) nor other runtimes.
	AllowCIDRs []netip.Prefix
	// HostCIDRs are more of the host's own addresses, beyond those of the
	// namespace the network lives in: a rootless daemon's namespace reaches
	// the real host's addresses (and pasta's gateway) by forwarding, so
	// they are dropped as the host's are, unless AllowHostAccess; DNS to
	// DNSServers among them stays open.
	HostCIDRs []netip.Prefix
	// DNSServers are the nameservers of runtimes' resolv.conf (ResolvConf),
	// and the host addresses runtimes may query on port 53 when a resolver
	// listens on the host itself. nil means the host's: the non-loopback
	// nameservers of /etc/resolv.conf, read once by New (its IPv4 ones for
	// the firewall); an empty non-nil slice means none.
	DNSServers []netip.Addr

	// PoolSize keeps that many endpoints (namespace, veth, address) ready,
	// so Attach is off the critical path: filled at start, and refilled
	// in the background once Refill asks, PoolGrace later. 0 disables the
	// pool. Pooled namespace files are not named after the endpoint id.
	PoolSize int
	// PoolGrace is how long a refill waits after Refill asks for it, so
	// that it does not compete with the work that just took an endpoint.
	PoolGrace time.Duration
	// AsyncDetach makes Detach return at once and tear the veth and
	// namespace down in the background (deleting a veth takes ~30 ms). The
	// address is released only once the veth is gone; Close waits for it.
	AsyncDetach bool

	// BridgePorts is how many runtimes one bridge takes before the next
	// ones go to an overflow bridge (overflow.go), at most MaxBridgePorts
	// (the kernel's limit, 1,023); 0 means DefaultBridgePorts (256).
	BridgePorts int
}

// Network is a bridge, the overflow bridges made when it filled, and the
// endpoints attached to them.
type Network struct {
	cfg     Config
	gateway netip.Addr
	addrs   *allocator
	leases  leaseStore
	nsDir   string
	seq     atomic.Uint64
	vethTag string
	owner   *owner
	dns     []netip.Addr // those the firewall lets runtimes query
	resolv  *ResolvConf
	log     *slog.Logger

	// creating is held shared while endpoints are built and exclusively
	// by Reset, so Reset never mistakes a half-built endpoint for a leftover.
	creating sync.RWMutex

	// growMu serialises making and removing overflow bridges.
	growMu sync.Mutex

	mu          sync.Mutex
	bridges     []*bridge            // the first, then overflow bridges
	endpoints   map[string]*Endpoint // handed out by Attach, by NSPath
	owned       map[string]*Endpoint // every endpoint of this process not yet torn down, by HostIf
	closed      bool
	bg          sync.WaitGroup // background teardowns
	tearingDown atomic.Int64   // background teardowns in flight

	pool       chan *Endpoint
	poolWake   chan struct{} // Refill's, buffered: one pending wake is enough
	poolOnce   sync.Once
	poolStop   chan struct{}
	poolCancel context.CancelFunc
	poolDone   sync.WaitGroup
}

// BridgeName derives the interface name used for a network name.
func BridgeName(network string) string {
	sum := sha256.Sum256([]byte(network))
	return "opr" + hex.EncodeToString(sum[:])[:10]
}

// New ensures the bridge exists with its gateway address and is up, turns on
// IPv4 forwarding, and (re)writes the network's nftables tables. It reads the
// address leases in StateDir: an address whose veth still exists stays
// reserved; leases without a veth are dropped. It does not remove endpoints
// left by an earlier process: call Reset for that.
//
// Before it changes anything it checks that the bridge and tables, if they
// exist, are this network's own (see owner.go; a *ForeignError otherwise) and
// that no address or route of the host overlaps the subnet, our bridge's
// aside (a *SubnetInUseError otherwise).
func New(ctx context.Context, cfg Config) (_ *Network, err error) {
	if cfg.Name == "" {
		return nil, errors.New("netns: network name is empty")
	}
	if !cfg.Subnet.IsValid() || !cfg.Subnet.Addr().Is4() || cfg.Subnet.Bits() > 30 {
		return nil, fmt.Errorf("netns: subnet %q must be an IPv4 prefix of at most /30", cfg.Subnet)
	}
	cfg.Subnet = cfg.Subnet.Masked()
	if cfg.Bridge == "" {
		cfg.Bridge = BridgeName(cfg.Name)
	}
	if len(cfg.Bridge) > 15 {
		return nil, fmt.Errorf("netns: bridge name %q is longer than 15 bytes", cfg.Bridge)
	}
	if len(cfg.Bridge) < 9 {
		return nil, fmt.Errorf("netns: bridge name %q is shorter than 9 bytes", cfg.Bridge)
	}
	for _, l := range [][]netip.Prefix{cfg.AllowCIDRs, cfg.DenyCIDRs, cfg.HostCIDRs} {
		for _, p := range l {
			if !p.IsValid() || !p.Addr().Is4() {
				return nil, fmt.Errorf("netns: %q is not an IPv4 prefix", p)
			}
		}
	}
	if !filepath.IsAbs(cfg.StateDir) {
		// Its owner record is what tells our bridge from another's.
		return nil, fmt.Errorf("netns: state dir %q must be an absolute path", cfg.StateDir)
	}
	if cfg.PoolSize < 0 {
		return nil, fmt.Errorf("netns: pool size %d is negative", cfg.PoolSize)
	}
	if cfg.BridgePorts == 0 {
		cfg.BridgePorts = DefaultBridgePorts
	}
	if cfg.BridgePorts < 0 || cfg.BridgePorts > MaxBridgePorts {
		return nil, fmt.Errorf("netns: %d ports per bridge: the kernel allows 1 to %d", cfg.BridgePorts, MaxBridgePorts)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	// Read once: every runtime of the network gets the same file, and the
	// firewall opens DNS to the nameservers it names.
	resolv, err := ReadResolvConf(HostResolvConf, cfg.DNSServers)
	if err != nil {
		// As if it were empty: runtimes still get the configured
		// nameservers, and an unreadable file has none to give.
		cfg.Logger.Warn("host resolver configuration", "network", cfg.Name, "err", err)
	}
	n := &Network{
		cfg:       cfg,
		gateway:   cfg.Subnet.Addr().Next(),
		nsDir:     filepath.Join(cfg.StateDir, "ns"),
		leases:    leaseStore{dir: filepath.Join(cfg.StateDir, "leases")},
		endpoints: make(map[string]*Endpoint),
		owned:     make(map[string]*Endpoint),
		poolWake:  make(chan struct{}, 1),
		log:       cfg.Logger,
		dns:       cfg.DNSServers,
		resolv:    resolv,
	}
	if n.dns == nil {
		n.dns = resolv.hostDNS
	}
	// Host-side veth names carry a tag of the bridge, which the bridge
	// firewall matches ports by. Reset goes by leases, not by the tag: it
	// derives from the network name, which another executor may share.
	n.vethTag = "v" + cfg.Bridge[3:9]
	n.addrs = newAllocator(cfg.Subnet, n.gateway)
	if n.owner, err = readOwner(cfg.StateDir, cfg.Bridge); err != nil {
		return nil, err
	}
	found, err := n.checkOwnership()
	if err != nil {
		return nil, err
	}
	var own []int
	if found.first != nil {
		own = append(own, found.first.Attrs().Index)
	}
	for _, l := range found.overflow {
		own = append(own, l.Attrs().Index)
	}
	if err := checkSubnetFree(cfg.Subnet, own...); err != nil {
		return nil, err
	}
	// Checked: from here on the host changes. The owner id is on disk
	// before any mark carries it.
	if err := n.owner.save(); err != nil {
		return nil, err
	}
	for _, d := range []string{n.nsDir, n.leases.dir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("netns: state dir: %w", err)
		}
	}
	for _, name := range found.adopt {
		n.log.Info("adopting the unmarked bridge of an earlier run of this network", "network", cfg.Name, "bridge", name, "stateDir", cfg.StateDir)
	}
	br, err := ensureBridge(cfg.Bridge, netip.PrefixFrom(n.gateway, cfg.Subnet.Bits()), found.first, n.owner.alias())
	if err != nil {
		return nil, err
	}
	n.bridges = []*bridge{{name: cfg.Bridge, link: br, ports: map[string]bool{}}}
	if found.first == nil {
		// Made now: a failure below takes it away again.
		defer func() {
			if err != nil {
				_ = n.removeFirewall()
				_ = n.removeBridge(cfg.Bridge)
			}
		}()
	}
	// An earlier process's overflow bridges, which may still hold its
	// runtimes: kept until Reset removes those and them.
	for _, l := range found.overflow {
		name := l.Attrs().Name
		idx, _ := overflowIndex(cfg.Bridge, name)
		ol, err := ensureBridge(name, netip.PrefixFrom(n.gateway, 32), l, n.owner.alias())
		if err != nil {
			return nil, err
		}
		n.bridges = append(n.bridges, &bridge{name: name, index: idx, link: ol, ports: map[string]bool{}})
	}
	// Ports left by an earlier process count until Reset removes them.
	for _, l := range found.links {
		for _, b := range n.bridges {
			if l.Type() == "veth" && l.Attrs().MasterIndex == b.link.Attrs().Index {
				b.ports[l.Attrs().Name] = true
			}
		}
	}
	for _, b := range n.bridges {
		if err := n.setProxyARP(b); err != nil {
			return nil, err
		}
	}
	if err := enableForwarding(); err != nil {
		return nil, err
	}
	if err := n.installFirewall(bridgeNames(n.bridges)); err != nil {
		return nil, err
	}
	if err := n.loadLeases(); err != nil {
		n.log.Warn("address leases", "network", cfg.Name, "err", err)
	}
	return n, nil
}

// loadLeases reserves the addresses of an earlier process whose veth still
// exists and drops the leases whose veth is gone.
func (n *Network) loadLeases() error {
	ls, err := n.leases.load()
	for _, l := range ls {
		if l.HostIf == "" || linkExists(l.HostIf) {
			n.addrs.reserve(l.Addr)
			continue
		}
		if rerr := n.leases.remove(l.Addr); rerr != nil {
			n.addrs.reserve(l.Addr)
			err = errors.Join(err, rerr)
		}
	}
	return err
}

func linkExists(name string) bool {
	_, err := netlink.LinkByName(name)
	return err == nil || !isNotFound(err)
}

// Name returns the network's name.
func (n *Network) Name() string { return n.cfg.Name }

// BridgeName returns the first bridge's interface name.
func (n *Network) BridgeName() string { return n.cfg.Bridge }

// NamespaceDir is the directory in which the network pins its runtimes'
// network namespaces (a bind mount each).
func (n *Network) NamespaceDir() string { return n.nsDir }

// Gateway returns the bridge's own address.
func (n *Network) Gateway() netip.Addr { return n.gateway }

// Subnet returns the network's subnet.
func (n *Network) Subnet() netip.Prefix { return n.cfg.Subnet }

// ResolvConf returns the resolver configuration of the network's runtimes,
// derived from the host's when New ran and from Config.DNSServers.
func (n *Network) ResolvConf() *ResolvConf { return n.resolv }

// Reset removes every endpoint an earlier process of ours left behind: veths
// that our leases name or that are ports of our bridges, namespace files and
// their mounts in StateDir, and releases their leases
// once their veths are gone. Endpoints of this process are kept. Overflow
// bridges left without ports are removed. It then starts filling the pool, if
// there is one.
func (n *Network) Reset(ctx context.Context) error {
	err := n.reset()
	n.startPool()
	return err
}

func (n *Network) reset() error {
	n.creating.Lock()
	defer n.creating.Unlock()
	n.mu.Lock()
	live := make(map[string]bool, 2*len(n.owned))
	for _, ep := range n.owned {
		live[ep.HostIf] = true
		live[ep.NSPath] = true
	}
	n.mu.Unlock()

	var errs []error
	// Read before any veth goes: a veth is ours when one of our leases
	// names it (written before it is made, removed once it is gone).
	ls, err := n.leases.load()
	if err != nil {
		errs = append(errs, err)
	}
	leased := make(map[string]bool, len(ls))
	for _, l := range ls {
		if l.HostIf != "" {
			leased[l.HostIf] = true
		}
	}
	links, err := dump(netlink.LinkList)
	if err != nil {
		return fmt.Errorf("netns: list links: %w", err)
	}
	masters := n.bridgeIndices()
	for _, l := range links {
		name := l.Attrs().Name
		if l.Type() != "veth" || live[name] || !ownsVeth(l, leased, masters) {
			continue
		}
		if err := netlink.LinkDel(l); err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("delete veth %s: %w", name, err))
		}
	}
	entries, err := os.ReadDir(n.nsDir)
	if err != nil && !os.IsNotExist(err) {
		errs = append(errs, err)
	}
	for _, e := range entries {
		p := filepath.Join(n.nsDir, e.Name())
		if live[p] {
			continue
		}
		if err := removeNamespace(p); err != nil {
			errs = append(errs, err)
		}
	}
	for _, l := range ls {
		if live[l.HostIf] && l.HostIf != "" {
			continue
		}
		if l.HostIf != "" && linkExists(l.HostIf) {
			errs = append(errs, fmt.Errorf("netns: veth %s of lease %s still exists", l.HostIf, l.Addr))
			continue
		}
		// Its host route, if it was on an overflow bridge.
		if err := n.dropHostRoutes(l.Addr); err != nil {
			errs = append(errs, err)
		}
		if err := n.leases.remove(l.Addr); err != nil {
			errs = append(errs, err)
			continue
		}
		n.addrs.put(l.Addr)
	}
	// The ports of earlier processes are gone, and those of this one's
	// endpoints whose teardown could not delete them.
	type port struct {
		b    *bridge
		name string
	}
	var stale []port
	n.mu.Lock()
	for _, b := range n.bridges {
		for name := range b.ports {
			if n.owned[name] == nil {
				stale = append(stale, port{b, name})
			}
		}
	}
	n.mu.Unlock()
	for _, p := range stale {
		if !linkExists(p.name) {
			n.releasePort(p.b, p.name, false)
		}
	}
	if err := n.dropEmptyOverflow(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// ownsVeth: a veth is ours when one of our leases names it, or when it is a
// port of one of our bridges. A name with our tag alone is not enough: the
// tag is derived from the network name, which another executor may share.
// masters are the interface indices of our bridges (bridgeIndices).
func ownsVeth(l netlink.Link, leased map[string]bool, masters map[int]bool) bool {
	return leased[l.Attrs().Name] || masters[l.Attrs().MasterIndex]
}

func (n *Network) bridgeIndices() map[int]bool {
	m := map[int]bool{}
	for _, b := range n.bridgeList() {
		m[b.link.Attrs().Index] = true
	}
	return m
}

// found is what checkOwnership found of ours on the host.
type found struct {
	first    netlink.Link   // the first bridge; nil when there is none
	overflow []netlink.Link // an earlier process's overflow bridges
	adopt    []string       // those of them ours but unmarked
	links    []netlink.Link // every link when it looked
}

// checkOwnership looks at the bridges and tables of our names before anything
// is changed: the first bridge, overflow bridges an earlier process left, and
// the tables. Any of them that is not ours fails New, as the first bridge
// alone did before overflow bridges: the names are ours to make.
func (n *Network) checkOwnership() (f found, err error) {
	f.links, err = dump(netlink.LinkList)
	if err != nil {
		return f, fmt.Errorf("netns: list links: %w", err)
	}
	for _, l := range f.links {
		name := l.Attrs().Name
		_, over := overflowIndex(n.cfg.Bridge, name)
		if name != n.cfg.Bridge && !over {
			continue
		}
		adopt, err := n.owner.checkBridge(l)
		if err != nil {
			return f, err
		}
		if adopt {
			f.adopt = append(f.adopt, name)
		}
		if over {
			f.overflow = append(f.overflow, l)
		} else {
			f.first = l
		}
	}
	c, err := nftables.New()
	if err != nil {
		return f, fmt.Errorf("netns: nftables: %w", err)
	}
	if err := n.owner.checkTables(c, n.tables()...); err != nil {
		return f, err
	}
	return f, nil
}

// removeBridge deletes the bridge name if it still bears our mark.
func (n *Network) removeBridge(name string) error {
	l, err := netlink.LinkByName(name)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("netns: look up bridge %s: %w", name, err)
	}
	if markOf(l.Attrs().Alias) != n.owner.mark() {
		return fmt.Errorf("netns: bridge %s no longer bears this executor's mark (alias %q): left alone", name, l.Attrs().Alias)
	}
	if err := netlink.LinkDel(l); err != nil && !isNotFound(err) {
		return fmt.Errorf("netns: delete bridge %s: %w", name, err)
	}
	return nil
}

// Close detaches every endpoint (waiting for background teardowns), empties
// the pool, removes leftovers, the nftables tables and the bridge; a table or
// bridge that no longer bears our mark is left alone. The owner record stays
// in StateDir: the next start is the same owner.
func (n *Network) Close(ctx context.Context) error {
	n.mu.Lock()
	n.closed = true
	eps := make([]*Endpoint, 0, len(n.endpoints))
	for _, ep := range n.endpoints {
		eps = append(eps, ep)
	}
	n.mu.Unlock()
	var errs []error
	errs = append(errs, n.stopPool())
	for _, ep := range eps {
		errs = append(errs, n.Detach(ctx, ep))
	}
	n.bg.Wait()
	errs = append(errs, n.reset())
	errs = append(errs, n.removeFirewall())
	n.growMu.Lock()
	for _, b := range n.bridgeList() {
		errs = append(errs, n.removeBridge(b.name))
	}
	n.growMu.Unlock()
	_ = os.Remove(n.nsDir)
	_ = os.Remove(n.leases.dir)
	return errors.Join(errs...)
}

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

	"github.com/vishvananda/netlink"
)

// Config describes one network (one name of OPR_EXECUTOR_NETWORK).
type Config struct {
	// Name is the network name clients know (e.g. openruntimes-runtimes).
	Name string
	// Bridge is the bridge interface name; empty derives a short stable one
	// from Name (interface names are limited to 15 bytes).
	Bridge string
	// Subnet holds the bridge address (the first host address) and the
	// runtimes' addresses.
	Subnet netip.Prefix
	// StateDir holds the namespace files of this network's endpoints.
	StateDir string
	Logger   *slog.Logger
}

// Network is a bridge and the endpoints attached to it.
type Network struct {
	cfg     Config
	bridge  netlink.Link
	gateway netip.Addr
	addrs   *allocator
	nsDir   string
	seq     atomic.Uint64
	vethTag string

	mu        sync.Mutex
	endpoints map[string]*Endpoint
}

// BridgeName derives the interface name used for a network name.
func BridgeName(network string) string {
	sum := sha256.Sum256([]byte(network))
	return "opr" + hex.EncodeToString(sum[:])[:10]
}

// New ensures the bridge exists with its gateway address and is up. It does
// not remove endpoints left by an earlier process: call Reset for that.
func New(ctx context.Context, cfg Config) (*Network, error) {
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
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	n := &Network{
		cfg:       cfg,
		gateway:   cfg.Subnet.Addr().Next(),
		nsDir:     filepath.Join(cfg.StateDir, "ns"),
		endpoints: make(map[string]*Endpoint),
	}
	// Host-side veth names carry a tag of the bridge so that Reset can tell
	// ours from anyone else's even when they are detached from the bridge.
	n.vethTag = "v" + cfg.Bridge[3:9]
	n.addrs = newAllocator(cfg.Subnet, n.gateway)
	if err := os.MkdirAll(n.nsDir, 0o700); err != nil {
		return nil, fmt.Errorf("netns: state dir: %w", err)
	}
	br, err := ensureBridge(cfg.Bridge, netip.PrefixFrom(n.gateway, cfg.Subnet.Bits()))
	if err != nil {
		return nil, err
	}
	n.bridge = br
	return n, nil
}

// Name returns the network's name.
func (n *Network) Name() string { return n.cfg.Name }

// BridgeName returns the bridge interface name.
func (n *Network) BridgeName() string { return n.cfg.Bridge }

// Gateway returns the bridge's own address.
func (n *Network) Gateway() netip.Addr { return n.gateway }

// Subnet returns the network's subnet.
func (n *Network) Subnet() netip.Prefix { return n.cfg.Subnet }

// Reset removes every endpoint an earlier process of ours left behind: veths
// with our tag, namespace files and their mounts. Endpoints of this process are
// kept.
func (n *Network) Reset(ctx context.Context) error {
	n.mu.Lock()
	live := make(map[string]bool, len(n.endpoints))
	for _, ep := range n.endpoints {
		live[ep.HostIf] = true
		live[ep.NSPath] = true
	}
	n.mu.Unlock()

	var errs []error
	links, err := netlink.LinkList()
	if err != nil {
		return fmt.Errorf("netns: list links: %w", err)
	}
	for _, l := range links {
		name := l.Attrs().Name
		if l.Type() != "veth" || live[name] || !n.ownsVeth(l) {
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
	return errors.Join(errs...)
}

func (n *Network) ownsVeth(l netlink.Link) bool {
	name := l.Attrs().Name
	if len(name) >= len(n.vethTag) && name[:len(n.vethTag)] == n.vethTag {
		return true
	}
	return n.bridge != nil && l.Attrs().MasterIndex == n.bridge.Attrs().Index
}

// Close detaches every endpoint and deletes the bridge.
func (n *Network) Close(ctx context.Context) error {
	n.mu.Lock()
	eps := make([]*Endpoint, 0, len(n.endpoints))
	for _, ep := range n.endpoints {
		eps = append(eps, ep)
	}
	n.mu.Unlock()
	var errs []error
	for _, ep := range eps {
		errs = append(errs, n.Detach(ctx, ep))
	}
	errs = append(errs, n.Reset(ctx))
	if l, err := netlink.LinkByName(n.cfg.Bridge); err == nil {
		if err := netlink.LinkDel(l); err != nil && !isNotFound(err) {
			errs = append(errs, fmt.Errorf("netns: delete bridge %s: %w", n.cfg.Bridge, err))
		}
	}
	_ = os.Remove(n.nsDir)
	return errors.Join(errs...)
}

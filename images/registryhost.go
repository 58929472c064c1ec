package images

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.podman.io/image/v5/pkg/sysregistriesv2"
	"go.podman.io/image/v5/types"
)

// lookupTimeout bounds the address lookup of a registry host; the dial that
// follows does its own.
const lookupTimeout = 10 * time.Second

// registryProxy is the SystemContext.DockerProxy of a pull. containers/image
// asks it before every request it sends for that pull (the ping, the token
// realm, manifests, blobs, and where redirects lead), so it is where a
// request to this host's own addresses is refused: an image reference such
// as 127.0.0.1:22/x or 169.254.169.254/x would otherwise have the daemon
// talk to local services and cloud metadata for whoever holds the API key,
// and tell open ports from closed ones by the error. Registries that
// registries.conf names (a [[registry]] location or mirror) are the
// operator's choice and always allowed, on loopback or not.
//
// The proxy itself is then chosen as net/http's default does (HTTPS_PROXY,
// NO_PROXY), which is what containers/image uses without this hook.
//
// The check resolves the name before net/http does: a name whose answer
// changes in between (DNS rebinding) is not caught. It narrows what a
// reference can reach; it is not a network policy.
func (s *Store) registryProxy(sys *types.SystemContext) func(*url.URL) (*url.URL, error) {
	var (
		once    sync.Once
		allowed map[string]bool
		mu      sync.Mutex
		checked = map[string]error{} // host -> verdict, for this pull
	)
	return func(u *url.URL) (*url.URL, error) {
		once.Do(func() { allowed = configuredHosts(sys) })
		host := strings.ToLower(u.Host)
		if !allowed[host] {
			mu.Lock()
			err, ok := checked[host]
			mu.Unlock()
			if !ok {
				err = checkRegistryHost(u.Hostname())
				mu.Lock()
				checked[host] = err
				mu.Unlock()
			}
			if err != nil {
				return nil, err
			}
		}
		return http.ProxyFromEnvironment(&http.Request{URL: u})
	}
}

// configuredHosts is every host[:port] registries.conf names as a location
// or mirror, lower-cased.
func configuredHosts(sys *types.SystemContext) map[string]bool {
	out := map[string]bool{}
	regs, err := sysregistriesv2.GetRegistries(sys)
	if err != nil {
		return out // the pull fails on the same file anyway
	}
	add := func(location string) {
		host, _, _ := strings.Cut(location, "/")
		if host != "" && !strings.HasPrefix(host, "*") {
			out[strings.ToLower(host)] = true
		}
	}
	for _, r := range regs {
		if r.Location != "" {
			add(r.Location)
		} else {
			add(r.Prefix)
		}
		for _, m := range r.Mirrors {
			add(m.Location)
		}
	}
	return out
}

// checkRegistryHost refuses a host whose addresses include a loopback,
// link-local or unspecified address or one of this host's own. A name that
// does not resolve passes: the dial then fails like any unreachable host.
func checkRegistryHost(host string) error {
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), lookupTimeout)
		defer cancel()
		if addrs, err = net.DefaultResolver.LookupNetIP(ctx, "ip", host); err != nil {
			return nil
		}
	}
	own := ownAddrs()
	for _, a := range addrs {
		a = a.Unmap().WithZone("")
		if a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsUnspecified() || a.IsMulticast() || own[a] {
			return refuse(ErrBlocked, "%s is on a loopback, link-local or this host's own address, "+
				"which registries.conf does not name as a registry", host)
		}
	}
	return nil
}

// ownAddrs is the set of this host's interface addresses.
func ownAddrs() map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	ifAddrs, err := net.InterfaceAddrs()
	if err != nil {
		return out
	}
	for _, ia := range ifAddrs {
		if n, ok := ia.(*net.IPNet); ok {
			if a, ok := netip.AddrFromSlice(n.IP); ok {
				out[a.Unmap()] = true
			}
		}
	}
	return out
}

package netns

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"strings"
)

// HostResolvConf is the host's resolver configuration, which runtimes'
// /etc/resolv.conf is derived from.
const HostResolvConf = "/etc/resolv.conf"

// Hosts is a runtime's /etc/hosts: the loopback names, and hostname on the
// runtime's address addr.
func Hosts(addr netip.Addr, hostname string) []byte {
	return fmt.Appendf(nil, "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n%s\t%s\n", addr, hostname)
}

// ResolvConf is the /etc/resolv.conf runtimes get. It is derived once, from
// the host's file and the configured nameservers, so that making a runtime
// does not read the host's file again; a later change of that file reaches
// only runtimes of a ResolvConf derived after it. It is safe for concurrent
// use.
type ResolvConf struct {
	text string
	// hostDNS are the host's IPv4 nameservers that are not loopback (those
	// of text when no nameservers are configured): the firewall lets
	// runtimes query them by default.
	hostDNS []netip.Addr
}

// ReadResolvConf reads the host's resolver configuration at path (normally
// HostResolvConf) and derives runtimes' from it as ParseResolvConf does. A
// missing file is an empty one, as it is to the C library; the runtimes'
// then lists only the configured nameservers.
func ReadResolvConf(path string, servers []netip.Addr) (*ResolvConf, error) {
	data, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return ParseResolvConf(nil, servers), fmt.Errorf("netns: read resolver configuration: %w", err)
	}
	return ParseResolvConf(data, servers), nil
}

// ParseResolvConf derives runtimes' resolver configuration from the host's
// (data, in resolv.conf(5) form). servers, when not nil, are the nameservers
// runtimes use, written first, and the host's are dropped; an empty non-nil
// servers leaves runtimes without nameservers. When servers is nil, the
// host's nameservers are kept but for loopback ones: a runtime has its own
// network namespace and loopback, so those would reach nothing. The host's
// search and options lines are kept as they are; everything else (comments,
// sortlist, domain, lines that mean nothing) is dropped.
func ParseResolvConf(data []byte, servers []netip.Addr) *ResolvConf {
	var b strings.Builder
	for _, ns := range servers {
		b.WriteString("nameserver " + ns.String() + "\n")
	}
	c := &ResolvConf{}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "nameserver":
			if len(f) < 2 || isLoopback(f[1]) {
				continue
			}
			if a, err := netip.ParseAddr(f[1]); err == nil && a.Is4() {
				c.hostDNS = append(c.hostDNS, a)
			}
			if servers != nil {
				continue
			}
		case "search", "options":
		default:
			continue
		}
		// Verbatim: the C library's parser, not ours, has the last word on
		// what the rest of the line means.
		b.WriteString(line + "\n")
	}
	c.text = b.String()
	return c
}

// isLoopback reports whether a nameserver address, as resolv.conf spells it,
// is on the loopback. The textual tests catch what netip does not parse but
// the C library does (inet_aton's "127.1").
func isLoopback(s string) bool {
	if strings.HasPrefix(s, "127.") || s == "::1" {
		return true
	}
	a, err := netip.ParseAddr(s)
	return err == nil && a.IsLoopback()
}

// Render returns the content of a runtime's /etc/resolv.conf; the caller
// may keep and change it.
func (c *ResolvConf) Render() []byte { return []byte(c.text) }

package netns

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The firewall of one network lives in two nftables tables of its own, named
// after the first bridge, and touches nothing else on the host. Each rule
// naming <br> is there once per bridge of the network (overflow.go):
//
//	table inet executor_<bridge>
//	  chain input       (filter, hook input, priority 0, policy accept)
//	    iifname <br> ct state established,related accept       \
//	    iifname <br> ip daddr <dns> udp/tcp dport 53 accept     | unless AllowHostAccess
//	    iifname <br> counter drop                              /
//	  chain forward     (filter, hook forward, priority 0, policy accept)
//	    oifname <br> ct state established,related accept      \ unless AllowRuntimeToRuntime
//	    oifname <br> counter drop                             /
//	    oifname <br> accept                                   with AllowRuntimeToRuntime
//	    iifname <br> ip daddr <dns in HostCIDRs> dport 53 accept  \ unless AllowHostAccess
//	    iifname <br> ip daddr <HostCIDRs> counter drop           /
//	    iifname <br> ip daddr <AllowCIDRs> accept
//	    iifname <br> ip daddr 169.254.0.0/16 counter drop        unless AllowLinkLocal
//	    iifname <br> ip daddr <DenyCIDRs> counter drop
//	  chain postrouting (nat, hook postrouting, priority 100)
//	    ip saddr <subnet> oifname != <br> ... oifname != <br N> masquerade   (one rule)
//	table bridge executor_<bridge>                               unless AllowRuntimeToRuntime
//	  chain forward     (filter, hook forward, priority -200, policy accept)
//	    iifname <vethtag>* oifname <vethtag>* counter drop      (every bridge's ports)
//
// The chains accept by default and only ever match packets of our bridge, so
// other tables' verdicts are unaffected. Both tables are (re)written in one
// transaction that first deletes them, so a table left by a crashed run is
// replaced, never duplicated, and a half-written state is never visible.
// Every rule's comment is our owner mark (owner.go): New replaces, and Close
// deletes, only tables that bear it (or, once, an older version's unmarked
// ones that the state dir records).

// TableName is the name of the nftables tables (inet and bridge families) of
// the network whose bridge is bridge.
func TableName(bridge string) string { return "executor_" + bridge }

var linkLocal = netip.MustParsePrefix("169.254.0.0/16")

// installFirewall (re)writes both tables for the given bridges.
func (n *Network) installFirewall(bridges []string) error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("netns: nftables: %w", err)
	}
	tables := n.tables()
	inet, bridge := tables[0], tables[1]
	replaceTable(c, inet)
	deleteTable(c, bridge)

	accept := nftables.ChainPolicyAccept
	input := c.AddChain(&nftables.Chain{Name: "input", Table: inet, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	forward := c.AddChain(&nftables.Chain{Name: "forward", Table: inet, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept})
	post := c.AddChain(&nftables.Chain{Name: "postrouting", Table: inet, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource, Policy: &accept})
	// Every rule carries our owner mark: it is what tells our tables from
	// another executor's of the same name.
	mark := ruleComment(n.owner.mark())
	rule := func(ch *nftables.Chain, exprs ...[]expr.Any) {
		var all []expr.Any
		for _, e := range exprs {
			all = append(all, e...)
		}
		c.AddRule(&nftables.Rule{Table: ch.Table, Chain: ch, Exprs: all, UserData: mark})
	}

	// In the forward chain every oifname rule comes before every iifname
	// one: a runtime's connection to one on another bridge is matched by
	// both, and the allow list (iifname) must not open it.
	if !n.cfg.AllowHostAccess {
		for _, br := range bridges {
			rule(input, iif(br), ctState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), verdict(expr.VerdictAccept))
			for _, dns := range n.dns {
				for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
					rule(input, iif(br), daddr(netip.PrefixFrom(dns, 32)), l4proto(proto), dport(53), verdict(expr.VerdictAccept))
				}
			}
			rule(input, iif(br), drop())
		}
	}
	for _, br := range bridges {
		switch {
		case !n.cfg.AllowRuntimeToRuntime:
			rule(forward, oif(br, true), ctState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), verdict(expr.VerdictAccept))
			rule(forward, oif(br, true), drop())
		default:
			// Runtimes on different bridges talk through the host, and
			// with br_netfilter those on one bridge pass this chain too:
			// either way the egress lists below do not apply between
			// runtimes. Anything else into a bridge is accepted as by the
			// policy.
			rule(forward, oif(br, true), verdict(expr.VerdictAccept))
		}
	}
	for _, br := range bridges {
		n.egressRules(rule, forward, br)
	}
	notOurs := []expr.Any{}
	for _, br := range bridges {
		notOurs = append(notOurs, oif(br, false)...)
	}
	rule(post, saddr(n.cfg.Subnet), notOurs, []expr.Any{&expr.Masq{}})

	if !n.cfg.AllowRuntimeToRuntime {
		c.AddTable(bridge)
		bfwd := c.AddChain(&nftables.Chain{Name: "forward", Table: bridge, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityRef(-200), Policy: &accept})
		rule(bfwd, ifPrefix(expr.MetaKeyIIFNAME, n.vethTag), ifPrefix(expr.MetaKeyOIFNAME, n.vethTag), drop())
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("netns: install nftables rules for %s: %w", strings.Join(bridges, ", "), err)
	}
	return nil
}

// egressRules adds the forward rules of connections runtimes on br open.
func (n *Network) egressRules(rule func(*nftables.Chain, ...[]expr.Any), forward *nftables.Chain, br string) {
	if !n.cfg.AllowHostAccess {
		// The real host seen from a rootless daemon's namespace: before
		// the allow list, which does not open the host either.
		for _, h := range n.cfg.HostCIDRs {
			for _, dns := range n.dns {
				if h.Contains(dns) {
					for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
						rule(forward, iif(br), daddr(netip.PrefixFrom(dns, 32)), l4proto(proto), dport(53), verdict(expr.VerdictAccept))
					}
				}
			}
			rule(forward, iif(br), daddr(h), drop())
		}
	}
	for _, p := range n.cfg.AllowCIDRs {
		rule(forward, iif(br), daddr(p), verdict(expr.VerdictAccept))
	}
	if !n.cfg.AllowLinkLocal {
		rule(forward, iif(br), daddr(linkLocal), drop())
	}
	for _, p := range n.cfg.DenyCIDRs {
		rule(forward, iif(br), daddr(p), drop())
	}
}

// removeFirewall deletes the network's tables that bear our mark; missing
// tables are fine, another's are left alone (and reported).
func (n *Network) removeFirewall() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("netns: nftables: %w", err)
	}
	var errs []error
	del := false
	for _, t := range n.tables() {
		marks, exists, err := tableMarks(c, t)
		switch {
		case err != nil:
			errs = append(errs, err)
		case !exists:
		case !marks[n.owner.mark()]:
			errs = append(errs, fmt.Errorf("netns: %s %s no longer bears this executor's mark: left alone", tableWhat(t), t.Name))
		default:
			c.DelTable(t)
			del = true
		}
	}
	if del {
		if err := c.Flush(); err != nil {
			errs = append(errs, fmt.Errorf("netns: remove nftables tables %s: %w", TableName(n.cfg.Bridge), err))
		}
	}
	return errors.Join(errs...)
}

// tables are the network's nftables tables: inet, then bridge.
func (n *Network) tables() []*nftables.Table {
	name := TableName(n.cfg.Bridge)
	return []*nftables.Table{
		{Name: name, Family: nftables.TableFamilyINet},
		{Name: name, Family: nftables.TableFamilyBridge},
	}
}

// replaceTable queues: create t if missing, delete it (with everything in
// it), create it empty. All in the caller's transaction.
func replaceTable(c *nftables.Conn, t *nftables.Table) {
	deleteTable(c, t)
	c.AddTable(t)
}

// deleteTable queues the deletion of t whether or not it exists (adding an
// existing table is a no-op, so the delete never fails for a missing one).
func deleteTable(c *nftables.Conn, t *nftables.Table) {
	c.AddTable(t)
	c.DelTable(t)
}

// enableForwarding turns on IPv4 forwarding. It is left on at Close: other
// networks of this or other programs may rely on it.
func enableForwarding() error {
	const p = "/proc/sys/net/ipv4/ip_forward"
	if b, err := os.ReadFile(p); err == nil && strings.TrimSpace(string(b)) == "1" {
		return nil
	}
	if err := os.WriteFile(p, []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("netns: enable IPv4 forwarding: %w", err)
	}
	return nil
}

// Expressions. Register 1 is the only one used.

func ifnameBytes(name string) []byte {
	b := make([]byte, 16) // IFNAMSIZ, NUL padded as the kernel compares it
	copy(b, name)
	return b
}

func iif(name string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifnameBytes(name)},
	}
}

// oif matches the output interface name: equal when eq, different otherwise.
func oif(name string, eq bool) []expr.Any {
	op := expr.CmpOpNeq
	if eq {
		op = expr.CmpOpEq
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: op, Register: 1, Data: ifnameBytes(name)},
	}
}

// ifPrefix matches an interface name starting with prefix (nft's "name*").
func ifPrefix(key expr.MetaKey, prefix string) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: key, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(prefix)},
	}
}

func ipv4() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
	}
}

func addrMatch(offset uint32, p netip.Prefix) []expr.Any {
	p = p.Masked()
	e := append(ipv4(), &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: 4})
	if p.Bits() < 32 {
		mask := net4Mask(p.Bits())
		e = append(e, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: make([]byte, 4)})
	}
	a := p.Addr().As4()
	return append(e, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a[:]})
}

func net4Mask(bits int) []byte {
	v := ^uint32(0) << (32 - bits)
	if bits == 0 {
		v = 0
	}
	return []byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}
}

func saddr(p netip.Prefix) []expr.Any { return addrMatch(12, p) }
func daddr(p netip.Prefix) []expr.Any { return addrMatch(16, p) }

func l4proto(proto byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
	}
}

func dport(port uint16) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
	}
}

func ctState(bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

func verdict(k expr.VerdictKind) []expr.Any { return []expr.Any{&expr.Verdict{Kind: k}} }

func drop() []expr.Any {
	return []expr.Any{&expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop}}
}

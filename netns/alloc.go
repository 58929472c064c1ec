package netns

import (
	"errors"
	"net/netip"
	"sync"
)

// ErrNoAddress means every address of the subnet is in use.
var ErrNoAddress = errors.New("netns: no free address in subnet")

// allocator hands out host addresses of a subnet. It walks the subnet from a
// cursor rather than always taking the lowest free address, so a released
// address is reused as late as possible.
type allocator struct {
	mu     sync.Mutex
	subnet netip.Prefix
	first  netip.Addr
	last   netip.Addr
	next   netip.Addr
	used   map[netip.Addr]bool
}

func newAllocator(subnet netip.Prefix, gateway netip.Addr) *allocator {
	last := lastAddr(subnet).Prev() // keep the broadcast address free
	a := &allocator{subnet: subnet, first: gateway.Next(), last: last, used: map[netip.Addr]bool{}}
	a.next = a.first
	return a
}

func (a *allocator) get() (netip.Addr, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	start := a.next
	for {
		cand := a.next
		a.next = a.next.Next()
		if !a.next.IsValid() || a.last.Less(a.next) {
			a.next = a.first
		}
		if !a.used[cand] {
			a.used[cand] = true
			return cand, nil
		}
		if a.next == start {
			return netip.Addr{}, ErrNoAddress
		}
	}
}

func (a *allocator) put(addr netip.Addr) {
	a.mu.Lock()
	delete(a.used, addr)
	a.mu.Unlock()
}

func (a *allocator) inUse() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.used)
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := 32 - p.Bits()
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v |= (1 << host) - 1
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

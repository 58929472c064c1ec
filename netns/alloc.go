package netns

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"time"
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
	freed  chan struct{} // closed and replaced whenever an address is put back
}

func newAllocator(subnet netip.Prefix, gateway netip.Addr) *allocator {
	last := lastAddr(subnet).Prev() // keep the broadcast address free
	a := &allocator{subnet: subnet, first: gateway.Next(), last: last, used: map[netip.Addr]bool{}, freed: make(chan struct{})}
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

// reserve marks addr as used (an address held by a lease of an earlier
// process). Addresses outside the allocator's range are ignored.
func (a *allocator) reserve(addr netip.Addr) {
	if addr.Less(a.first) || a.last.Less(addr) {
		return
	}
	a.mu.Lock()
	a.used[addr] = true
	a.mu.Unlock()
}

func (a *allocator) isUsed(addr netip.Addr) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.used[addr]
}

func (a *allocator) put(addr netip.Addr) {
	a.mu.Lock()
	delete(a.used, addr)
	close(a.freed)
	a.freed = make(chan struct{})
	a.mu.Unlock()
}

// getOrWait is get, but when the subnet is full and wait says that addresses
// are about to come back (background teardowns), it waits for one.
func (a *allocator) getOrWait(ctx context.Context, wait func() bool) (netip.Addr, error) {
	for {
		a.mu.Lock()
		freed := a.freed
		a.mu.Unlock()
		addr, err := a.get()
		if err != ErrNoAddress || !wait() {
			return addr, err
		}
		select {
		case <-freed:
		case <-ctx.Done():
			return netip.Addr{}, err
		case <-time.After(time.Second): // re-check wait()
		}
	}
}

// size is how many addresses the allocator hands out in all.
func (a *allocator) size() int {
	f, l := a.first.As4(), a.last.As4()
	v := func(b [4]byte) int { return int(b[0])<<24 | int(b[1])<<16 | int(b[2])<<8 | int(b[3]) }
	return v(l) - v(f) + 1
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

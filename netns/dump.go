package netns

import (
	"errors"

	"github.com/vishvananda/netlink"
)

// dumpAttempts bounds the retries of a netlink dump the kernel interrupted.
const dumpAttempts = 10

// dump runs a netlink dump (LinkList, AddrList, RouteList...) again while the
// kernel reports it interrupted: links or addresses changed while it was
// read (another executor, a container engine, tests making endpoints), and
// the partial result must not be taken for the host's state. Each new
// attempt reads everything afresh.
func dump[T any](list func() (T, error)) (T, error) {
	var out T
	var err error
	for range dumpAttempts {
		out, err = list()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			return out, err
		}
	}
	return out, err
}

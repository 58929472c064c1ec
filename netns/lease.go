package netns

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
)

// lease records that an address is taken, and by which veth and namespace, so
// that a restarted daemon never hands out an address whose old veth still
// exists. There is one file per lease, named after the address, in
// <StateDir>/leases. A lease is written before the veth is created and removed
// only once the veth is gone.
type lease struct {
	Addr   netip.Addr `json:"addr"`
	ID     string     `json:"id"`
	HostIf string     `json:"hostIf"`
	NSPath string     `json:"ns"`
}

type leaseStore struct{ dir string }

func (s leaseStore) path(a netip.Addr) string { return filepath.Join(s.dir, a.String()) }

// create publishes l atomically and exclusively: the content is written to a
// temporary file that is then hard-linked to the lease's name, which fails
// with fs.ErrExist when the address is already leased (by any process). A
// reader never sees a partial lease. No fsync: a lease only has to outlive the
// daemon, not the machine (a reboot takes every veth with it).
func (s leaseStore) create(l lease) error {
	b, err := json.Marshal(l)
	if err != nil {
		return err
	}
	tmp := filepath.Join(s.dir, fmt.Sprintf(".%s.%x.tmp", l.Addr, rand.Uint64()))
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("netns: write lease: %w", err)
	}
	defer os.Remove(tmp)
	if err := os.Link(tmp, s.path(l.Addr)); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fs.ErrExist
		}
		return fmt.Errorf("netns: publish lease %s: %w", l.Addr, err)
	}
	return nil
}

// read returns the lease of a; an error matching fs.ErrNotExist when there
// is none.
func (s leaseStore) read(a netip.Addr) (lease, error) {
	b, err := os.ReadFile(s.path(a))
	if err != nil {
		return lease{}, err
	}
	l := lease{}
	if err := json.Unmarshal(b, &l); err != nil {
		return lease{}, fmt.Errorf("netns: lease %s: %w", a, err)
	}
	l.Addr = a
	return l, nil
}

func (s leaseStore) remove(a netip.Addr) error {
	if err := os.Remove(s.path(a)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("netns: remove lease %s: %w", a, err)
	}
	return nil
}

// load reads every lease. Temporary files of an interrupted create are
// removed; unreadable leases are reported with the address they name, which
// stays reserved.
func (s leaseStore) load() ([]lease, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	var out []lease
	var errs []error
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			_ = os.Remove(filepath.Join(s.dir, name))
			continue
		}
		addr, err := netip.ParseAddr(name)
		if err != nil {
			errs = append(errs, fmt.Errorf("netns: stray file %s in lease dir", name))
			continue
		}
		l := lease{Addr: addr}
		b, err := os.ReadFile(filepath.Join(s.dir, name))
		if err == nil {
			err = json.Unmarshal(b, &l)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("netns: lease %s: %w", name, err))
		}
		l.Addr = addr
		out = append(out, l)
	}
	return out, errors.Join(errs...)
}

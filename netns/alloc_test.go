package netns

import (
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

func TestAllocatorWrapsAndExhausts(t *testing.T) {
	subnet := netip.MustParsePrefix("10.1.2.0/29") // gateway .1, usable .2-.6
	a := newAllocator(subnet, subnet.Addr().Next())
	var got []netip.Addr
	for {
		addr, err := a.get()
		if err != nil {
			break
		}
		got = append(got, addr)
	}
	if len(got) != 5 || got[0].String() != "10.1.2.2" || got[4].String() != "10.1.2.6" {
		t.Fatalf("got %v", got)
	}
	a.put(got[1])
	if addr, err := a.get(); err != nil || addr != got[1] {
		t.Fatalf("after release got %v %v", addr, err)
	}
	a.put(got[2])
	a.reserve(got[2])
	a.reserve(netip.MustParseAddr("10.9.9.9")) // outside: ignored
	if _, err := a.get(); err != ErrNoAddress {
		t.Fatalf("reserved address handed out: %v", err)
	}
}

func TestLeaseStoreIsExclusiveAndAtomic(t *testing.T) {
	s := leaseStore{dir: t.TempDir()}
	l := lease{Addr: netip.MustParseAddr("10.0.0.2"), ID: "a", HostIf: "vabc1", NSPath: "/x/a"}
	if err := s.create(l); err != nil {
		t.Fatal(err)
	}
	if err := s.create(lease{Addr: l.Addr, ID: "b"}); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second lease of the same address: %v", err)
	}
	// An interrupted create leaves only a dot file, which load removes.
	if err := os.WriteFile(filepath.Join(s.dir, ".10.0.0.3.1.tmp"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	ls, err := s.load()
	if err != nil || len(ls) != 1 || ls[0] != l {
		t.Fatalf("load: %+v %v", ls, err)
	}
	if ents, _ := os.ReadDir(s.dir); len(ents) != 1 {
		t.Fatalf("dir holds %d files", len(ents))
	}
	if err := s.remove(l.Addr); err != nil {
		t.Fatal(err)
	}
	if err := s.remove(l.Addr); err != nil {
		t.Fatalf("removing a missing lease: %v", err)
	}
}

package main

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReadSubIDs(t *testing.T) {
	file := filepath.Join(t.TempDir(), "subuid")
	if err := os.WriteFile(file, []byte("alice:100000:65536\nbob:200000:1000\nbob:300000:65536\n1001:400000:131072\ncarol:x:65536\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		id      int
		want    subIDRange
		wantErr string
	}{
		{"alice", 1000, subIDRange{100000, 65536}, ""},
		{"bob", 1002, subIDRange{300000, 65536}, ""},   // the first range large enough
		{"dave", 1001, subIDRange{400000, 131072}, ""}, // by numeric id
		{"carol", 1003, subIDRange{}, "has no range for carol"},
		{"erin", 1004, subIDRange{}, "has no range for erin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readSubIDs(file, tt.name, tt.id)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %v, %v, want %v", got, err, tt.want)
			}
		})
	}
	small := filepath.Join(t.TempDir(), "subuid")
	if err := os.WriteFile(small, []byte("frank:100000:1000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readSubIDs(small, "frank", 1005); err == nil || !strings.Contains(err.Error(), "fewer than 65536") {
		t.Fatalf("a range too small: %v", err)
	}
	// A range that starts at 0 is taken as the file gives it; an empty or negative one is no range at all.
	odd := filepath.Join(t.TempDir(), "subuid")
	if err := os.WriteFile(odd, []byte("gina:0:65536\nhank:100000:0\nhank:-5:65536\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := readSubIDs(odd, "gina", 1006); err != nil || got != (subIDRange{0, 65536}) {
		t.Errorf("a range from 0: %v, %v", got, err)
	}
	if _, err := readSubIDs(odd, "hank", 1007); err == nil || !strings.Contains(err.Error(), "has no range for hank") {
		t.Errorf("empty and negative ranges: %v, want no range", err)
	}
}

func TestMappedRange(t *testing.T) {
	tests := []struct {
		maps    string
		want    subIDRange
		wantErr bool
	}{
		{"         0       1000          1\n         1     100000      65536\n", subIDRange{1, 65536}, false},
		{"0 1000 1\n1 100000 1000\n1001 200000 65536\n", subIDRange{1001, 65536}, false},
		{"1 100000 65536\n65537 300000 65536\n", subIDRange{1, 65536}, false}, // of two as large, the first
		{"1 100000 65536\n65537 300000 65537\n", subIDRange{65537, 65537}, false},
		{"0 1000 1\n1 100000 0\n", subIDRange{}, true},
		{"0 1000 1\nx 100000 65536\n1 100000\n", subIDRange{}, true},
		{"0 0 4294967295\n", subIDRange{}, true},
		{"0 1000 1\n", subIDRange{}, true},
	}
	for _, tt := range tests {
		file := filepath.Join(t.TempDir(), "uid_map")
		if err := os.WriteFile(file, []byte(tt.maps), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := mappedRange(file)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("%q: got %v, %v, want %v (error %v)", tt.maps, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestRootlessDataDir(t *testing.T) {
	tests := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{"XDG_DATA_HOME": "/x/data", "HOME": "/home/u"}, "/x/data/executor"},
		{map[string]string{"XDG_DATA_HOME": "relative", "HOME": "/home/u"}, "/home/u/.local/share/executor"},
		{map[string]string{"HOME": "/home/u"}, "/home/u/.local/share/executor"},
		{map[string]string{}, ""},
	}
	for _, tt := range tests {
		if got := rootlessDataDir(func(k string) string { return tt.env[k] }); got != tt.want {
			t.Errorf("%v: %q, want %q", tt.env, got, tt.want)
		}
	}
}

func TestHostAddrs(t *testing.T) {
	got := parseHostAddrs(hostAddrs())
	if len(got) == 0 || got[0] != slirpNet {
		t.Fatalf("host addresses %v do not begin with slirp4netns's network %v", got, slirpNet)
	}
	for _, p := range got[1:] {
		if p.Bits() != 32 || !p.Addr().Is4() || p.Addr().IsLoopback() {
			t.Errorf("%v is not one IPv4 host address", p)
		}
	}
	if want := []netip.Prefix{netip.MustParsePrefix("10.0.0.1/32")}; len(parseHostAddrs("10.0.0.1/32,bogus,")) != len(want) {
		t.Errorf("a bad entry is not skipped")
	}
}

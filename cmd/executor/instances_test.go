package main

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"executor/netns"
)

func TestNetworkErrorNamesTheVariable(t *testing.T) {
	subnet := netip.MustParsePrefix("10.89.0.0/17")
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"subnet in use", &netns.SubnetInUseError{Subnet: subnet, Address: true, Interface: "eth0", Prefix: netip.MustParsePrefix("10.89.0.5/8")},
			`OPR_EXECUTOR_SUBNET (network "a" gets 10.89.0.0/17): netns: subnet 10.89.0.0/17 overlaps the host's address 10.89.0.5/8 of interface eth0`},
		{"foreign bridge", &netns.ForeignError{What: "bridge", Name: "opr1234567890", Detail: "it belongs to another executor"},
			`OPR_EXECUTOR_NETWORK "a": netns: bridge opr1234567890 is not this executor's: it belongs to another executor`},
		{"anything else", errors.New("netns: create bridge: EPERM"), `OPR_EXECUTOR_NETWORK "a": netns: create bridge: EPERM`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := networkError("a", subnet, tc.err)
			if !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("got %q, want it to start with %q", err, tc.want)
			}
			if !errors.Is(err, tc.err) {
				t.Error("the cause is not wrapped")
			}
		})
	}
}

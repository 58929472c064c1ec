package main

import (
	"slices"
	"testing"
)

// OPR_EXECUTOR_SUBNET is split evenly between the networks of OPR_EXECUTOR_NETWORK: the next power of two of
// them, in order from the subnet's start, each at least a /28; a subnet too small for them stops the daemon.
func TestNetworkSubnets(t *testing.T) {
	tests := []struct {
		networks, subnet string
		want             []string
		err              string
	}{
		{networks: "a", subnet: "10.89.0.0/16", want: []string{"10.89.0.0/16"}},
		{networks: "a,b", subnet: "10.89.0.0/16", want: []string{"10.89.0.0/17", "10.89.128.0/17"}},
		{networks: "a,b,c", subnet: "10.89.0.0/16", want: []string{"10.89.0.0/18", "10.89.64.0/18", "10.89.128.0/18"}},
		{networks: "a,b,c,d", subnet: "172.16.0.0/12", want: []string{"172.16.0.0/14", "172.20.0.0/14", "172.24.0.0/14", "172.28.0.0/14"}},
		{networks: "a,b,c,d,e", subnet: "10.0.0.0/8", want: []string{"10.0.0.0/11", "10.32.0.0/11", "10.64.0.0/11", "10.96.0.0/11", "10.128.0.0/11"}},
		{networks: "a", subnet: "192.168.7.16/28", want: []string{"192.168.7.16/28"}},
		{networks: "a,b", subnet: "192.168.7.0/27", want: []string{"192.168.7.0/28", "192.168.7.16/28"}},
		{networks: "a,b", subnet: "192.168.7.16/28", err: "OPR_EXECUTOR_SUBNET 192.168.7.16/28 is too small for 2 networks"},
		{networks: "a", subnet: "192.168.7.16/29", err: "OPR_EXECUTOR_SUBNET 192.168.7.16/29 is too small for 1 networks"},
	}
	for _, tt := range tests {
		t.Run(tt.networks+" "+tt.subnet, func(t *testing.T) {
			c, err := loadConfig(envOf(map[string]string{"OPR_EXECUTOR_SECRET": "s", "OPR_EXECUTOR_NETWORK": tt.networks, "OPR_EXECUTOR_SUBNET": tt.subnet}))
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("err %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			subnets, err := c.networkSubnets()
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, p := range subnets {
				got = append(got, p.String())
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

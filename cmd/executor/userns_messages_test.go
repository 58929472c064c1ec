package main

import "testing"

// What a bad OPR_EXECUTOR_USERNS is told: a value that is not the format (a zero is no id and no size) gets the
// format with an example; a well-formed range that cannot be used says what is wrong with it.
func TestParseUserNSMessages(t *testing.T) {
	const format = " must be full, off, HOSTID:SIZE or HOSTUID:HOSTGID:SIZE (e.g. 1000000000:65536)"
	tests := []struct{ v, want string }{
		{"0:65536", `OPR_EXECUTOR_USERNS="0:65536"` + format},
		{"100000:0", `OPR_EXECUTOR_USERNS="100000:0"` + format},
		{"100000:0:65536", `OPR_EXECUTOR_USERNS="100000:0:65536"` + format},
		{"100000:65536:x", `OPR_EXECUTOR_USERNS="100000:65536:x"` + format},
		{"1000000000:65535", `OPR_EXECUTOR_USERNS="1000000000:65535": the range must hold at least 65536 ids (images use ids up to 65534)`},
		{"4294901760:65536", `OPR_EXECUTOR_USERNS="4294901760:65536": the range goes past the largest id 4294967294`},
	}
	for _, tt := range tests {
		if _, err := parseUserNS(tt.v); err == nil || err.Error() != tt.want {
			t.Errorf("parseUserNS(%q): %v, want %q", tt.v, err, tt.want)
		}
	}
}

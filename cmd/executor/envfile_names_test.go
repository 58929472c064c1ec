package main

import "testing"

// The names an environment file may set, as systemd accepts them: ASCII letters, digits and underscores, not
// starting with a digit.
func TestValidEnvName(t *testing.T) {
	tests := map[string]bool{
		"a": true, "z": true, "A": true, "Z": true, "_": true, "A0": true, "a9": true, "_0": true,
		"OPR_EXECUTOR_LOG_LEVEL": true, "opr_executor_x": true, "azAZ_09": true,
		"": false, "0A": false, "9": false, "A-B": false, "A.B": false, "A B": false, "{": false, "`": false,
		"@": false, "[": false, "A/": false, "A:": false, "é": false,
	}
	for name, want := range tests {
		if got := validEnvName(name); got != want {
			t.Errorf("validEnvName(%q) = %v, want %v", name, got, want)
		}
	}
}

package api

import (
	"encoding/json"
	"math"
	"testing"
)

// The runtime list is written by hand for speed (appendJSONFloat,
// appendPHPString); every value must come out as the reference's encoder
// (encoding/json, slashes escaped) writes it.
func TestRuntimeFieldsEncodeAsMarshalPHP(t *testing.T) {
	floats := []float64{0, 1, -1, 0.5, 1e-6, -1e-6, 9.99e-7, 1e-7, 1e21, -1e21, 9.99e20, 1.5e-9, 1796095514.152551,
		123456789.123, math.SmallestNonzeroFloat64, math.MaxFloat64}
	for _, f := range floats {
		want, err := json.Marshal(f)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendJSONFloat(nil, f); string(got) != string(want) {
			t.Errorf("appendJSONFloat(%v) = %s, encoding/json writes %s", f, got, want)
		}
	}
	strs := []string{"", "plain", `a"b\c/d`, "tab\there", "del\x7f", "é", "\u2028", "\xff", "space ok", "<&>"}
	for _, s := range strs {
		want, err := marshalPHP(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendPHPString(nil, s); string(got) != string(want) {
			t.Errorf("appendPHPString(%q) = %s, marshalPHP writes %s", s, got, want)
		}
	}
}

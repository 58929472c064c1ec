package api

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func TestValidators(t *testing.T) {
	n := func(s string) json.Number { return json.Number(s) }
	versions := whitelist{list: []string{"v2", "v5"}}
	tests := []struct {
		name   string
		v      validator
		raw    any
		want   any
		wantOK bool
	}{
		{"text ok", textOf(5), "abc", "abc", true},
		{"text empty fails with default min 1", textOf(5), "", nil, false},
		{"text min 0 accepts empty", optionalText(5), "", "", true},
		{"text too long", textOf(3), "abcd", nil, false},
		{"text counts runes", textOf(2), "👋é", "👋é", true},
		{"text unlimited", optionalText(0), strings.Repeat("x", 100000), strings.Repeat("x", 100000), true},
		{"text rejects number", textOf(5), n("5"), nil, false},
		{"text rejects null", textOf(5), nil, nil, false},
		{"text rejects object", textOf(5), map[string]any{}, nil, false},

		{"strict int", integer{}, n("600"), int64(600), true},
		{"strict int negative", integer{}, n("-5"), int64(-5), true},
		{"strict int refuses string", integer{}, "600", nil, false},
		{"strict int refuses float literal", integer{}, n("600.0"), nil, false},
		{"strict int refuses exponent", integer{}, n("6e2"), nil, false},
		{"strict int refuses bool", integer{}, true, nil, false},
		{"int max", integer{}, n("2147483647"), int64(2147483647), true},
		{"int over max", integer{}, n("2147483648"), nil, false},
		{"int min", integer{}, n("-2147483648"), int64(-2147483648), true},
		{"int under min", integer{}, n("-2147483649"), nil, false},
		{"loose int string", integer{loose: true}, "30", int64(30), true},
		{"loose int padded", integer{loose: true}, " +30\n", int64(30), true},
		{"loose int number", integer{loose: true}, n("30"), int64(30), true},
		{"loose int float string", integer{loose: true}, "30.0", nil, false},
		{"loose int exponent string", integer{loose: true}, "3e1", nil, false},
		{"loose int garbage", integer{loose: true}, "30s", nil, false},
		{"loose int empty", integer{loose: true}, "", nil, false},
		{"loose int hex", integer{loose: true}, "0x1e", nil, false},

		{"float int", float{loose: true}, n("2"), float64(2), true},
		{"float fraction", float{loose: true}, n("2.5"), 2.5, true},
		{"float string", float{loose: true}, "2.5", 2.5, true},
		{"float string exp", float{loose: true}, "1e1", float64(10), true},
		{"float string leading dot", float{loose: true}, ".5", 0.5, true},
		{"float string padded", float{loose: true}, " 1.5 ", 1.5, true},
		{"float refuses inf", float{loose: true}, "Inf", nil, false},
		{"float refuses nan", float{loose: true}, "NaN", nil, false},
		{"float refuses hex", float{loose: true}, "0x10", nil, false},
		{"float refuses empty", float{loose: true}, "", nil, false},
		{"float refuses bool", float{loose: true}, true, nil, false},
		{"float refuses overflow", float{loose: true}, "1e400", nil, false},
		{"strict float refuses string", float{}, "2.5", nil, false},

		{"strict bool", boolean{}, true, true, true},
		{"strict bool false", boolean{}, false, false, true},
		{"strict bool refuses string", boolean{}, "true", nil, false},
		{"strict bool refuses number", boolean{}, n("1"), nil, false},
		{"loose bool true", boolean{loose: true}, "true", true, true},
		{"loose bool false string", boolean{loose: true}, "false", false, true},
		{"loose bool 0 string", boolean{loose: true}, "0", false, true},
		{"loose bool 1 string", boolean{loose: true}, "1", true, true},
		{"loose bool 0 number", boolean{loose: true}, n("0"), false, true},
		{"loose bool 1 number", boolean{loose: true}, n("1"), true, true},
		{"loose bool json false", boolean{loose: true}, false, false, true},
		{"loose bool refuses yes", boolean{loose: true}, "yes", nil, false},
		{"loose bool refuses TRUE", boolean{loose: true}, "TRUE", nil, false},
		{"loose bool refuses 2", boolean{loose: true}, n("2"), nil, false},

		{"assoc object", assoc{65535}, map[string]any{"a": "b"}, map[string]any{"a": "b"}, true},
		{"assoc empty object", assoc{65535}, map[string]any{}, map[string]any{}, true},
		{"assoc empty array", assoc{65535}, []any{}, map[string]any{}, true},
		{"assoc list fails", assoc{65535}, []any{"a"}, nil, false},
		{"assoc string fails", assoc{65535}, `{"a":"b"}`, nil, false},
		{"assoc too large", assoc{10}, map[string]any{"a": "bcdefgh"}, nil, false},
		{"assoc size at limit", assoc{11}, map[string]any{"a": "b/"}, map[string]any{"a": "b/"}, true}, // {"a":"b\/"}
		{"assoc unicode escapes counted", assoc{19}, map[string]any{"a": "éé"}, nil, false},            // {"a":"\u00e9\u00e9"} is 20 bytes
		{"assoc unicode escapes at limit", assoc{20}, map[string]any{"a": "éé"}, map[string]any{"a": "éé"}, true},

		{"whitelist loose canonical", versions, "V5", "v5", true},
		{"whitelist loose exact", versions, "v2", "v2", true},
		{"whitelist unknown", versions, "v3", nil, false},
		{"whitelist refuses object", versions, map[string]any{}, nil, false},
		{"whitelist strict case", restartPolicies(), "Always", nil, false},
		{"whitelist strict ok", restartPolicies(), "on-failure", "on-failure", true},
		{"whitelist strict refuses number", whitelist{list: []string{"1"}, strict: true}, n("1"), nil, false},
		{"whitelist loose number", whitelist{list: []string{"1"}}, n("1"), "1", true},

		{"anyOf text", anyOf{textOf(65535), assoc{65535}}, `{"a":1}`, `{"a":1}`, true},
		{"anyOf object", anyOf{textOf(65535), assoc{65535}}, map[string]any{"a": "1"}, map[string]any{"a": "1"}, true},
		{"anyOf empty string fails", anyOf{textOf(65535), assoc{65535}}, "", nil, false},
		{"anyOf number fails", anyOf{textOf(65535), assoc{65535}}, n("1"), nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := tt.v.convert(tt.raw)
			if ok != tt.wantOK || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("convert(%#v) = %#v, %v; want %#v, %v", tt.raw, got, ok, tt.want, tt.wantOK)
			}
			// checkParams relies on it: the value is stored in a field of valueType.
			if ok && !reflect.TypeOf(got).AssignableTo(tt.v.valueType()) {
				t.Errorf("convert(%#v) gave a %T, valueType says %s", tt.raw, got, tt.v.valueType())
			}
		})
	}
}

func TestValidatorDescriptions(t *testing.T) {
	tests := []struct {
		v    validator
		want string
	}{
		{textOf(64), "Value must be a valid string and at least 1 chars and no longer than 64 chars"},
		{optionalText(256), "Value must be a valid string and no longer than 256 chars"},
		{optionalText(0), "Value must be a valid string"},
		{textOf(0), "Value must be a valid string and at least 1 chars"},
		{integer{}, "Value must be a valid signed 32-bit integer between -2,147,483,648 and 2,147,483,647"},
		{integer{loose: true}, "Value must be a valid signed 32-bit integer between -2,147,483,648 and 2,147,483,647"},
		{float{loose: true}, "Value must be a valid float"},
		{boolean{}, "Value must be a valid boolean"},
		{assoc{65535}, "Value must be a valid object."},
		{restartPolicies(), "Value must be one of (no, always, on-failure, unless-stopped)"},
		{anyOf{textOf(65535), assoc{65535}}, "Value must be a valid object."},
	}
	for _, tt := range tests {
		if got := tt.v.description(); got != tt.want {
			t.Errorf("%#v: %q, want %q", tt.v, got, tt.want)
		}
	}
}

package api

import (
	"encoding/json"
	"math"
	"testing"
	"time"

	"executor/sandbox/protocol"
)

func TestMarshalPHP(t *testing.T) {
	type doc struct {
		Z    string  `json:"z"`
		A    string  `json:"a"`
		F    float64 `json:"f"`
		Path string  `json:"path"`
	}
	got, err := marshalPHP(doc{Z: "👋 é <b>&</b>", A: "line\nbreak \"q\" \\", F: 1784800800.123456, Path: "/storage/builds/x.gz"})
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"z":"👋 é <b>&<\/b>","a":"line\nbreak \"q\" \\","f":1784800800.123456,"path":"\/storage\/builds\/x.gz"}`
	if string(got) != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	var back doc
	if err := json.Unmarshal(got, &back); err != nil || back.Path != "/storage/builds/x.gz" {
		t.Errorf("round trip: %+v %v", back, err)
	}
}

func TestHeaderSet(t *testing.T) {
	tests := []struct {
		name    string
		headers []protocol.Header
		arrays  bool
		want    string
	}{
		{"empty is a PHP empty array", nil, true, `[]`},
		{"single stays string", []protocol.Header{{Name: "a", Values: []string{"1"}}}, true, `{"a":"1"}`},
		{"repeated kept", []protocol.Header{{Name: "a", Values: []string{"1", "2"}}}, true, `{"a":["1","2"]}`},
		{"repeated collapsed to last", []protocol.Header{{Name: "a", Values: []string{"1", "2"}}}, false, `{"a":"2"}`},
		{"order kept, duplicates merged", []protocol.Header{
			{Name: "z", Values: []string{"1"}}, {Name: "a", Values: []string{"x/y"}}, {Name: "z", Values: []string{"2"}},
		}, true, `{"z":["1","2"],"a":"x\/y"}`},
		{"no values", []protocol.Header{{Name: "a"}}, true, `{"a":""}`},
		{"html not escaped", []protocol.Header{{Name: "link", Values: []string{"<a>&"}}}, false, `{"link":"<a>&"}`},
	}
	for _, tt := range tests {
		if got := newHeaderSet(tt.headers, tt.arrays).appendPHP(nil); string(got) != tt.want {
			t.Errorf("%s: %s, want %s", tt.name, got, tt.want)
		}
	}
}

func TestPHPFloatString(t *testing.T) {
	for f, want := range map[float64]string{
		1753300000.123456:    "1753300000.1235",
		12:                   "12",
		1.5:                  "1.5",
		0.0015:               "0.0015",
		0.00001:              "1.0E-5",
		1.5e-7:               "1.5E-7",
		1e20:                 "1.0E+20",
		123456789012345678.0: "1.2345678901235E+17",
		0:                    "0",
		math.Inf(1):          "INF",
	} {
		if got := phpFloatString(f); got != want {
			t.Errorf("%v: %q, want %q", f, got, want)
		}
	}
}

func TestPHPString(t *testing.T) {
	tests := []struct {
		in   any
		want string
	}{
		{"text", "text"},
		{json.Number("5"), "5"},
		{json.Number("-0"), "0"},
		{json.Number("2.50"), "2.5"},
		{json.Number("1.0"), "1"},
		{json.Number("1e3"), "1000"},
		{json.Number("99999999999999999999"), "1.0E+20"},
		{true, "1"},
		{false, ""},
		{nil, ""},
		{map[string]any{"a": "b/c"}, `{"a":"b\/c"}`},
		{[]any{json.Number("1"), "x"}, `[1,"x"]`},
	}
	for _, tt := range tests {
		if got := phpString(tt.in); got != tt.want {
			t.Errorf("%#v: %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestTimeEncoding(t *testing.T) {
	if got := logTimestamp(time.Date(2026, 7, 23, 12, 0, 1, 999999999, time.FixedZone("CEST", 7200))); got != "2026-07-23T10:00:01.999+00:00" {
		t.Errorf("timestamp %q", got)
	}
	if got := unixSeconds(time.Time{}); got != 0 {
		t.Errorf("zero time %v", got)
	}
	if got := unixSeconds(time.Unix(1784800800, 123456789)); got != 1784800800.123456 {
		t.Errorf("unix seconds %v", got)
	}
	if got := seconds(1234567891 * time.Nanosecond); got != 1.234568 {
		t.Errorf("seconds %v", got)
	}
}

func TestMultipartBoundaryAvoidsContent(t *testing.T) {
	for i := 0; i < 100; i++ {
		b := multipartBoundary([]byte("x"))
		if len(b) != 42 || b[:29] != "-----------------------------" {
			t.Fatalf("boundary %q", b)
		}
	}
}

package sandbox

import (
	"errors"
	"reflect"
	"testing"

	"executor/oci"
	"executor/sandbox/protocol"
)

// Each protocol version gets its directories where its runtimes look.
func TestBinds(t *testing.T) {
	base := []oci.Bind{
		{Source: "/d/src", Destination: "/tmp"},
		{Source: "/d/builds", Destination: "/mnt/code"},
		{Source: "/d/hosts", Destination: "/etc/hosts", ReadOnly: true},
		{Source: "/d/resolv.conf", Destination: "/etc/resolv.conf", ReadOnly: true},
	}
	logs := oci.Bind{Source: "/d/logs", Destination: "/mnt/logs"}
	cache := oci.Bind{Source: "/d/cache", Destination: "/cache"}
	init := oci.Bind{Source: "/bin/executor-init", Destination: oci.InitPath, ReadOnly: true}
	v2 := append([]oci.Bind(nil), base...)
	v2[1].Destination = "/usr/code"
	tests := []struct {
		name string
		spec Spec
		init string
		want []oci.Bind
	}{
		{"v2", Spec{Version: protocol.V2}, "", v2},
		{"v3", Spec{Version: protocol.V3}, "", base},
		{"v4", Spec{Version: protocol.V4}, "", append(append([]oci.Bind(nil), base...), logs)},
		{"v5 with cache and init", Spec{Version: protocol.V5, CacheKey: "k", Command: "make"}, "/bin/executor-init",
			append(append([]oci.Bind(nil), base...), logs, cache, init)},
		{"cache key without a build", Spec{Version: protocol.V5, CacheKey: "k"}, "", append(append([]oci.Bind(nil), base...), logs)},
	}
	for _, tt := range tests {
		if got := binds("/d", tt.spec, tt.init); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s:\n got %+v\nwant %+v", tt.name, got, tt.want)
		}
	}
}

// An error says its kind and message, and its cause once.
func TestErrorText(t *testing.T) {
	cause := errors.New("image not found")
	tests := []struct {
		err  error
		want string
		kind Kind
	}{
		{newError(RuntimeFailed, `Missing image "x" and failed to pull it: image not found`, cause),
			`runtime failed: Missing image "x" and failed to pull it: image not found`, RuntimeFailed},
		{newError(HostFailed, "Something went wrong when starting runtime.", cause),
			"host failed: Something went wrong when starting runtime.: image not found", HostFailed},
		{newError(NotFound, "", nil), "not found", NotFound},
		{newError(Capacity, "", nil), "at capacity", Capacity},
		{newError(Capacity+1, "", nil), "kind(13)", Capacity + 1},
		{newError(0, "", nil), "kind(0)", 0},
		{cause, "image not found", 0},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
		if got := KindOf(tt.err); got != tt.kind {
			t.Errorf("KindOf(%q) = %v, want %v", tt.err, got, tt.kind)
		}
	}
	if !errors.Is(newError(HostFailed, "x", cause), cause) {
		t.Error("an error does not wrap its cause")
	}
}

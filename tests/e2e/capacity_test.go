package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"executor/netns"
	"executor/netns/nettest"
)

// TestNetworkFullIs503 runs a daemon on the smallest subnet it accepts (a
// /28: 13 runtime addresses) and creates runtimes until one fails: that one
// is a 503 naming the limit and its setting, leaves nothing behind, the
// earlier runtimes still serve, and once one is deleted a create succeeds.
func TestNetworkFullIs503(t *testing.T) {
	subnet, err := nettest.FreeSubnet(28)
	if err != nil {
		t.Fatal(err)
	}
	x := startExecutor(t, "OPR_EXECUTOR_SUBNET="+subnet.String())
	src := source(t, map[string]string{"index.js": "capacity"})
	create := func(id string) *response {
		return x.request(t, "POST", "/v1/runtimes", map[string]any{
			"runtimeId": id, "image": "openruntimes/test:v5-1", "source": src,
			"entrypoint": "index.js", "runtimeEntrypoint": startCommand,
		}, nil)
	}
	leases := filepath.Join(x.dataDir, "networks", netns.BridgeName(x.network), "leases")
	state := func() []string {
		out := x.leftovers()
		ents, _ := os.ReadDir(leases)
		for _, e := range ents {
			out = append(out, "lease: "+e.Name())
		}
		slices.Sort(out)
		return out
	}

	var ids []string
	var before []string
	var full *response
	for i := 0; full == nil; i++ {
		if i > 13 {
			t.Fatalf("%d runtimes created on a /28, which has room for 13", i)
		}
		id := fmt.Sprintf("cap-%d", i)
		s := state()
		r := create(id)
		switch r.status {
		case 201:
			ids = append(ids, id)
		case 503:
			full, before = r, s
		default:
			t.Fatalf("create %s: %d %s", id, r.status, r.body)
		}
	}
	if len(ids) != 13 {
		t.Errorf("%d runtimes before the network was full, want 13", len(ids))
	}
	e := full.json(t)
	msg, _ := e["message"].(string)
	if e["type"] != "runtime_failed" || e["code"] != float64(503) ||
		!strings.Contains(msg, "OPR_EXECUTOR_SUBNET") || !strings.Contains(msg, subnet.String()) {
		t.Errorf("full network: %s, want runtime_failed 503 naming %s and OPR_EXECUTOR_SUBNET", full.body, subnet)
	}

	// Nothing of the failed runtime stays. Its cleanup ends before the
	// reply; the poll only absorbs the kernel's asynchronous link removal.
	deadline := time.Now().Add(5 * time.Second)
	for after := state(); !slices.Equal(after, before); after = state() {
		if time.Now().After(deadline) {
			t.Fatalf("the failed create left something behind:\nbefore %s\nafter  %s", strings.Join(before, "\n       "), strings.Join(after, "\n       "))
		}
		time.Sleep(50 * time.Millisecond)
	}
	r := x.request(t, "GET", "/v1/runtimes", nil, nil)
	var list []map[string]any
	if err := json.Unmarshal(r.body, &list); err != nil || len(list) != len(ids) {
		t.Fatalf("list after the failed create: %d %s", r.status, r.body)
	}

	for _, id := range ids {
		r := x.request(t, "POST", "/v1/runtimes/"+id+"/executions", map[string]any{"path": "/status?code=201"}, jsonAccept)
		if r.status != 200 || r.json(t)["statusCode"] != float64(201) {
			t.Fatalf("execution on %s after the network was full: %d %s", id, r.status, r.body)
		}
	}

	if r := x.request(t, "DELETE", "/v1/runtimes/"+ids[4], nil, nil); r.status != 200 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	if r := create("cap-again"); r.status != 201 {
		t.Fatalf("create after a delete: %d %s", r.status, r.body)
	}
	if r := x.request(t, "POST", "/v1/runtimes/cap-again/executions", map[string]any{"path": "/status?code=202"}, jsonAccept); r.status != 200 || r.json(t)["statusCode"] != float64(202) {
		t.Fatalf("execution on the runtime made after a delete: %d %s", r.status, r.body)
	}
}

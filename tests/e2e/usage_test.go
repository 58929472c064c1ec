package e2e

import (
	"encoding/json"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// usageDoc is a runtime's figures as GET /v1/health (keyed) and the runtime
// objects give them.
type usageDoc struct {
	CPU    *float64 `json:"cpu"`   // runtime objects
	Usage  *float64 `json:"usage"` // health: the CPU figure
	Memory *struct {
		Usage uint64 `json:"usage"`
		Limit uint64 `json:"limit"`
	} `json:"memory"`
	PIDs *uint64 `json:"pids"`
}

// healthUsage is the keyed health document with the memory figures.
type healthUsage struct {
	Status string   `json:"status"`
	Usage  *float64 `json:"usage"`
	Memory *struct {
		Total     uint64 `json:"total"`
		Available uint64 `json:"available"`
	} `json:"memory"`
	Runtimes map[string]usageDoc `json:"runtimes"`
}

// runtimeCounter reads one of the runtime's own cgroup files (there is one
// runtime): controller is its v1 hierarchy, file its name.
func runtimeCounter(t *testing.T, x *executor, controller, file string) uint64 {
	t.Helper()
	dir := filepath.Join("/sys/fs/cgroup", controller, x.cgParent, "rt-*")
	if cgroup2() {
		dir = filepath.Join("/sys/fs/cgroup", x.cgParent, "rt-*")
	}
	n, err := strconv.ParseUint(readOne(t, filepath.Join(dir, file)), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestRuntimeUsageFromCgroup: a runtime with 128 MB that holds 48 MiB and
// starts 3 sleeping processes shows, in GET /v1/health (with the key), in
// GET /v1/runtimes/{id} and in its entry of GET /v1/runtimes, memory above
// its idle figure and within its limit of 128,000,000 bytes (the API's MB
// are 10^6 bytes), and the task count its cgroup's pids.current holds. A
// sample is up to a second old: the test polls until the figures agree
// with the cgroup files, with a generous deadline and no timing assertion.
func TestRuntimeUsageFromCgroup(t *testing.T) {
	x := startExecutor(t)
	const id = "usage"
	src := source(t, map[string]string{"index.js": "x"})
	if r := x.request(t, "POST", "/v1/runtimes/"+id+"/executions", execBody(src, map[string]any{"memory": 128}), jsonAccept); r.status != 200 {
		t.Fatalf("cold start: %d %s", r.status, r.body)
	}
	t.Cleanup(func() { x.deleteRuntime(t, id); x.waitClean(t) })

	memFile, memLimitFile := "memory.usage_in_bytes", "memory.limit_in_bytes"
	if cgroup2() {
		memFile, memLimitFile = "memory.current", "memory.max"
	}
	if got := runtimeCounter(t, x, "memory", memLimitFile); got != 128_000_000 {
		t.Fatalf("the runtime's cgroup limit is %d", got)
	}
	get := func() usageDoc {
		t.Helper()
		r := x.request(t, "GET", "/v1/runtimes/"+id, nil, nil)
		var obj struct {
			Usage *usageDoc `json:"usage"`
		}
		if r.status != 200 || json.Unmarshal(r.body, &obj) != nil {
			t.Fatalf("GET /v1/runtimes/%s: %d %s", id, r.status, r.body)
		}
		if obj.Usage == nil {
			return usageDoc{}
		}
		return *obj.Usage
	}
	listed := func() usageDoc {
		t.Helper()
		r := x.request(t, "GET", "/v1/runtimes", nil, nil)
		var list []struct {
			Usage *usageDoc `json:"usage"`
		}
		if r.status != 200 || json.Unmarshal(r.body, &list) != nil || len(list) != 1 {
			t.Fatalf("GET /v1/runtimes: %d %s", r.status, r.body)
		}
		if list[0].Usage == nil {
			return usageDoc{}
		}
		return *list[0].Usage
	}
	health := func() (healthUsage, usageDoc) {
		t.Helper()
		r := x.health(t, true)
		var doc healthUsage
		if r.status != 200 || json.Unmarshal(r.body, &doc) != nil {
			t.Fatalf("GET /v1/health: %d %s", r.status, r.body)
		}
		return doc, doc.Runtimes[id]
	}
	// agree polls until every view gives the cgroup's pids.current and a
	// memory figure within 8 MiB of the cgroup's (the memory of a Go
	// server moves a little between a sample and the file read), and
	// returns the last views.
	agree := func(what string) (usageDoc, usageDoc, usageDoc, healthUsage) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			g, l := get(), listed()
			doc, h := health()
			pids, mem := runtimeCounter(t, x, "pids", "pids.current"), runtimeCounter(t, x, "memory", memFile)
			ok := true
			for _, u := range []usageDoc{g, l, h} {
				ok = ok && u.PIDs != nil && *u.PIDs == pids && u.Memory != nil &&
					u.Memory.Usage+8<<20 >= mem && u.Memory.Usage <= mem+8<<20
			}
			if ok {
				return g, l, h, doc
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: figures never agreed with the cgroup (pids.current %d, memory %d): get %s, list %s, health %s",
					what, pids, mem, showUsage(g), showUsage(l), showUsage(h))
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	idle, _, _, _ := agree("idle")

	// 48 MiB in /dev/shm (a tmpfs of 64 MiB, charged to the runtime's
	// cgroup) and 3 sleeping processes, left behind by the shell.
	r := x.request(t, "POST", "/v1/runtimes/"+id+"/executions", map[string]any{
		"path": "/shell", "method": "POST", "timeout": 60,
		"body": "dd if=/dev/zero of=/dev/shm/hold bs=1048576 count=48 2>&1 && " +
			"for i in 1 2 3; do sleep 600 </dev/null >/dev/null 2>&1 & done; echo held",
	}, jsonAccept)
	if body, _ := r.json(t)["body"].(string); r.status != 200 || !containsLine(body, "held") {
		t.Fatalf("holding memory: %d %s", r.status, r.body)
	}
	g, l, h, doc := agree("holding 48 MiB and 3 sleeps")
	t.Logf("idle %s; holding %s; host %+v", showUsage(idle), showUsage(h), doc.Memory)
	for name, u := range map[string]usageDoc{"GET /v1/runtimes/{id}": g, "GET /v1/runtimes": l, "health": h} {
		if u.Memory.Limit != 128_000_000 {
			t.Errorf("%s: memory limit %d, want 128000000", name, u.Memory.Limit)
		}
		if u.Memory.Usage < idle.Memory.Usage+40<<20 || u.Memory.Usage > u.Memory.Limit {
			t.Errorf("%s: memory %d, want 48 MiB above the idle %d and within the limit", name, u.Memory.Usage, idle.Memory.Usage)
		}
		if *u.PIDs < *idle.PIDs+3 {
			t.Errorf("%s: %d tasks, want the idle %d and 3 sleeps", name, *u.PIDs, *idle.PIDs)
		}
	}
	if g.CPU == nil || l.CPU == nil || h.Usage == nil {
		t.Errorf("a CPU figure is missing: get %s, list %s, health %s", showUsage(g), showUsage(l), showUsage(h))
	}
	if doc.Status != "pass" || doc.Usage == nil || doc.Memory == nil || doc.Memory.Total == 0 || doc.Memory.Available > doc.Memory.Total {
		t.Errorf("health's host figures: %+v", doc)
	}
	// Without the key, health says nothing of the figures.
	if pub := x.health(t, false); string(pub.body) != `{"status":"pass"}` {
		t.Errorf("health without the key: %s", pub.body)
	}
}

func showUsage(u usageDoc) string {
	b, _ := json.Marshal(u)
	return string(b)
}

func containsLine(s, line string) bool {
	for _, l := range logLines(s) {
		if l == line {
			return true
		}
	}
	return false
}

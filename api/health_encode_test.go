package api

import (
	"math"
	"strconv"
	"testing"

	"executor/sandbox"
)

// healthStatsOf is the keyed health document of fig as a value for
// marshalPHP, as health built it before appendHealthStats: the oracle the
// hand-written encoder is held to.
func healthStatsOf(fig sandbox.Usage, warnings []string) healthStatsJSON {
	out := healthStatsJSON{Status: "pass", Usage: finite(fig.CPU), Runtimes: make(map[string]runtimeHealthJSON, len(fig.Runtimes)), Warnings: warnings}
	if fig.HasMemory {
		out.Memory = &hostMemoryJSON{Total: fig.MemoryTotal, Available: fig.MemoryAvailable}
	}
	for id, u := range fig.Runtimes {
		mem, pids := runtimeFigures(u)
		out.Runtimes[id] = runtimeHealthJSON{Status: "pass", Usage: finite(u.CPU), Memory: mem, PIDs: pids}
	}
	return out
}

// The keyed health document, encoded by hand, is byte for byte what
// marshalPHP makes of it, whatever the ids, figures and warnings hold.
func TestHealthEncodingMatchesMarshalPHP(t *testing.T) {
	usages := []sandbox.RuntimeUsage{
		{},
		{CPU: 1e-7},
		{CPU: 1e21, HasPIDs: true},
		{CPU: math.NaN(), HasMemory: true},
		{CPU: math.Inf(-1), Memory: 1, MemoryLimit: 0, HasMemory: true, PIDs: 0, HasPIDs: true},
		{CPU: 33.333333333333336, Memory: math.MaxUint64, MemoryLimit: math.MaxUint64, PIDs: math.MaxUint64, HasMemory: true, HasPIDs: true},
	}
	ids := []string{"a", "B", "fn-1", "fn-10", "fn-2", "", "é", "a/b", `q"uote`, "tab\t", "bad \xff", "\u2028", "z"}
	manyRuntimes := map[string]sandbox.RuntimeUsage{}
	for i, id := range ids {
		manyRuntimes[id] = usages[i%len(usages)]
	}
	for i := range 300 {
		manyRuntimes["runtime-"+strconv.Itoa(i)] = usages[i%len(usages)]
	}
	figs := []sandbox.Usage{
		{},
		{CPU: math.NaN(), Runtimes: map[string]sandbox.RuntimeUsage{}},
		{CPU: 12.5, MemoryTotal: 8 << 30, MemoryAvailable: 3 << 30, HasMemory: true, Runtimes: map[string]sandbox.RuntimeUsage{"one": usages[5]}},
		{CPU: 1e-9, MemoryTotal: math.MaxUint64, HasMemory: true, Runtimes: manyRuntimes},
	}
	warningSets := [][]string{nil, {}, {"runtimes run without cgroup limits / \"rootless\""}, {"one", "two é \u2029"}}
	for i, fig := range figs {
		for j, warnings := range warningSets {
			want, err := marshalPHP(healthStatsOf(fig, warnings))
			if err != nil {
				t.Fatal(err)
			}
			if got := appendHealthStats(nil, fig, warnings); string(got) != string(want) {
				t.Errorf("figures %d, warnings %d:\n%s\nwant\n%s", i, j, got, want)
			}
		}
	}
}

// FuzzHealthEncoding holds appendHealthStats to marshalPHP for runtimes'
// ids and figures a fuzzer picks.
func FuzzHealthEncoding(f *testing.F) {
	f.Add("fn", "fn-2", 1.5, uint64(1<<20), uint64(64<<20), uint64(3), true, "")
	f.Add("", "\xff/\u2028", math.Inf(1), uint64(0), uint64(math.MaxUint64), uint64(0), false, "a \"warning\"")
	f.Fuzz(func(t *testing.T, id1, id2 string, cpu float64, mem, limit, pids uint64, has bool, warning string) {
		fig := sandbox.Usage{CPU: cpu / 3, MemoryTotal: limit, MemoryAvailable: mem, HasMemory: has, Runtimes: map[string]sandbox.RuntimeUsage{
			id1: {CPU: cpu, Memory: mem, MemoryLimit: limit, PIDs: pids, HasMemory: has, HasPIDs: !has},
			id2: {CPU: -cpu, Memory: limit, MemoryLimit: mem, PIDs: pids + 1, HasMemory: !has, HasPIDs: has},
		}}
		var warnings []string
		if warning != "" {
			warnings = []string{warning, id1}
		}
		want, err := marshalPHP(healthStatsOf(fig, warnings))
		if err != nil {
			t.Fatal(err)
		}
		if got := appendHealthStats(nil, fig, warnings); string(got) != string(want) {
			t.Errorf("got\n%s\nwant\n%s", got, want)
		}
	})
}

// BenchmarkHealthKeyed is the keyed GET /v1/health with a thousand
// runtimes' figures, the issue 16 scale (target: p99 under 20 ms through
// the daemon).
func BenchmarkHealthKeyed(b *testing.B) {
	fig := sandbox.Usage{CPU: 12.5, MemoryTotal: 8 << 30, MemoryAvailable: 3 << 30, HasMemory: true, Runtimes: map[string]sandbox.RuntimeUsage{}}
	for i := range 1000 {
		fig.Runtimes["executor-idle-"+strconv.Itoa(i)] = sandbox.RuntimeUsage{CPU: 0.25, Memory: 12 << 20, MemoryLimit: 64 << 20, PIDs: 7, HasMemory: true, HasPIDs: true}
	}
	benchGet(b, usageBackend{fakeBackend: &fakeBackend{}, fig: fig}, "/v1/health")
}

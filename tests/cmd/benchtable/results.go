package main

import (
	"bufio"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// results are the metrics of each benchmark, by name without the
// -GOMAXPROCS suffix (BenchmarkColdStart/rootless), in the order they came.
// A benchmark run more than once (-count) keeps its last run.
type results struct {
	order   []string
	metrics map[string]map[string]float64
}

func newResults() *results { return &results{metrics: map[string]map[string]float64{}} }

var (
	// A result line: name, iterations, then value-unit pairs. The name may
	// stand alone on an earlier line when the benchmark logged something.
	resultLine = regexp.MustCompile(`^(Benchmark\S*)?\s+(\d+)((?:\s+[-+0-9.eE]+\s+\S+)+)\s*$`)
	nameLine   = regexp.MustCompile(`^(Benchmark\S+)\s*$`)
	procs      = regexp.MustCompile(`-\d+$`)
)

func (r *results) readText(in io.Reader) error {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	pending := ""
	for sc.Scan() {
		line := sc.Text()
		if m := nameLine.FindStringSubmatch(line); m != nil {
			pending = m[1]
			continue
		}
		m := resultLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		name := m[1]
		if name == "" {
			if name = pending; name == "" {
				continue
			}
		}
		pending = ""
		fields := strings.Fields(m[3])
		if len(fields)%2 != 0 {
			continue
		}
		ms := map[string]float64{}
		for i := 0; i < len(fields); i += 2 {
			v, err := strconv.ParseFloat(fields[i], 64)
			if err != nil {
				ms = nil
				break
			}
			ms[fields[i+1]] = v
		}
		if ms == nil {
			continue
		}
		name = procs.ReplaceAllString(name, "")
		if _, ok := r.metrics[name]; !ok {
			r.order = append(r.order, name)
		}
		r.metrics[name] = ms
	}
	return sc.Err()
}

// stat is one figure: its samples' count and quantiles, or a single value
// in p50 with n 0 and no quantiles.
type stat struct {
	n             float64
	p50, p90, p99 float64
	quantiles     bool
}

// figure is bench's figure fig: <fig>-n and <fig>-pXX-ms.
func (r *results) figure(bench, fig string) (stat, bool) {
	m := r.metrics[bench]
	p50, ok := m[fig+"-p50-ms"]
	if !ok {
		return stat{}, false
	}
	return stat{n: m[fig+"-n"], p50: p50, p90: m[fig+"-p90-ms"], p99: m[fig+"-p99-ms"], quantiles: true}, true
}

// single is bench's metric unit as a single value.
func (r *results) single(bench, unit string) (stat, bool) {
	v, ok := r.metrics[bench][unit]
	return stat{p50: v}, ok
}

// figures lists bench's figures in name order.
func (r *results) figures(bench string) []string {
	var out []string
	for unit := range r.metrics[bench] {
		if fig, ok := strings.CutSuffix(unit, "-p50-ms"); ok {
			out = append(out, fig)
		}
	}
	slices.Sort(out)
	return out
}

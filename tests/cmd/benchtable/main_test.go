package main

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// testdata/bench.out is a real make bench run's raw output (reduced:
// -benchtime 5x, 20 runtimes, against the daemon at dde5b68; its
// BenchmarkScale line from a run of that benchmark alone, against the
// daemon at 36c063e, once its creations were paired, its
// BenchmarkWarmExecutionWorking line from a 20x run of that one alone, its
// BenchmarkColdStart, BenchmarkColdStartIDRange and BenchmarkRuntimeBoot
// lines from a 5x run of those three, against the daemon of the commit that
// added this, once the runtime's first answer was measured beside the boot,
// and its BenchmarkWarmExecution and BenchmarkWarmExecutionRootless lines
// from a 5x run of those two, against the daemon at 743bea5, once the
// reference proxies were measured beside it); testdata/bench.json a real
// go test -json run of one benchmark.

func readSample(t *testing.T, name string) *results {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := parse(f)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestParse(t *testing.T) {
	tests := []struct {
		sample, bench, fig string
		wantN              float64
	}{
		{"bench.out", "BenchmarkColdStart/disk-1GiB", "cold", 5},
		{"bench.out", "BenchmarkColdStart/rootless", "cold", 5},
		{"bench.out", "BenchmarkColdStart/no-disk", "container", 5},
		{"bench.out", "BenchmarkColdStart/prewarmed", "boot", 5},
		{"bench.out", "BenchmarkContainerStart/seccomp+userns", "first-byte", 5},
		{"bench.out", "BenchmarkWarmExecution", "executor", 50},
		{"bench.out", "BenchmarkScale", "health", 50},
		{"bench.out", "BenchmarkAttachDetach/pool8+async-detach/paced", "attach", 5},
		{"bench.json", "BenchmarkContainerStart/seccomp+userns", "first-byte", 2},
	}
	for _, tt := range tests {
		t.Run(tt.sample+"/"+tt.bench+"/"+tt.fig, func(t *testing.T) {
			s, ok := readSample(t, tt.sample).figure(tt.bench, tt.fig)
			if !ok {
				t.Fatalf("no figure %s of %s", tt.fig, tt.bench)
			}
			if s.n != tt.wantN {
				t.Errorf("n = %v, want %v", s.n, tt.wantN)
			}
			if !(s.p50 > 0 && s.p50 <= s.p90 && s.p90 <= s.p99) {
				t.Errorf("quantiles out of order or missing: %+v", s)
			}
		})
	}
}

func TestParseText(t *testing.T) {
	const out = `goos: linux
BenchmarkA-2   	       3	 100 ns/op	  3.000 x-n	  1.500 x-p50-ms	  2.000 x-p90-ms	  2.500 x-p99-ms	  40.00 rps
BenchmarkB/sub-16
    b_test.go:10: a log line between the name and the result
       5	  7 ns/op	  0.5000 y-p50-ms
BenchmarkA-2   	       3	 100 ns/op	  3.000 x-n	  9.000 x-p50-ms	  9.000 x-p90-ms	  9.000 x-p99-ms
--- FAIL: BenchmarkC-2
PASS
`
	res, err := parse(strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(res.order, " "); got != "BenchmarkA BenchmarkB/sub" {
		t.Errorf("benchmarks %q", got)
	}
	if s, _ := res.figure("BenchmarkA", "x"); s.p50 != 9 {
		t.Errorf("the second run of BenchmarkA should count: p50 %v", s.p50)
	}
	if s, ok := res.figure("BenchmarkB/sub", "y"); !ok || s.p50 != 0.5 {
		t.Errorf("a result on its own line: %+v %v", s, ok)
	}
}

// The table from the recorded run: every target row has a verdict, the
// cold-start floor is the sum of its benchmark's two baseline figures plus
// 10 ms, and the
// figures no target names are listed after.
func TestRender(t *testing.T) {
	res := readSample(t, "bench.out")
	var buf bytes.Buffer
	if err := render(&buf, res); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	t.Log("\n" + out)
	if strings.Contains(out, "Not measured") {
		t.Errorf("the recorded run has every figure, the table says otherwise")
	}
	rows := targetRows(res)
	for _, rw := range rows {
		if len(rw.missing) > 0 {
			t.Errorf("%s: missing %v", rw.label, rw.missing)
		}
	}
	c, _ := res.figure(coldStart, "container")
	b, _ := res.figure(coldStart, "boot")
	a, _ := res.figure(coldStart, "answer")
	if got, want := rows[0].base.p50, c.p50+b.p50+a.p50+10; got != want {
		t.Errorf("cold-start floor %v, want %v", got, want)
	}
	for _, want := range []string{"cold start (ms)", "warm, 40 clients (req/s)", "warm, 40 clients vs bare TCP relay (req/s)", "health at 20 (ms)", "other figures", "AttachDetach/sync attach (ms)"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in the table", want)
		}
	}
}

// Missing figures are said, not shown as zero or as met.
func TestRenderMissing(t *testing.T) {
	res, err := parse(strings.NewReader("BenchmarkWarmExecution-2 \t 5\t 1 ns/op\t 5 executor-n\t 1.2 executor-p50-ms\t 1.3 executor-p90-ms\t 1.4 executor-p99-ms\n"))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := render(&buf, res); err != nil {
		t.Fatal(err)
	}
	for _, rw := range targetRows(res) {
		if strings.HasPrefix(rw.label, "warm execution (ms)") && len(rw.missing) == 0 {
			t.Errorf("warm execution without its direct baseline is not missing anything")
		}
	}
	if !strings.Contains(buf.String(), "Not measured in this run: ") || regexp.MustCompile(`(?m)\byes\s*$`).MatchString(buf.String()) {
		t.Errorf("table:\n%s", buf.String())
	}
}

// The command fails on input with no benchmark result.
func TestNoResults(t *testing.T) {
	cmd := exec.Command("go", "run", ".")
	cmd.Stdin = strings.NewReader("FAIL\texecutor/tests/e2e\t1.0s\n")
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Errorf("exit 0 on no results: %s", out)
	}
}

func TestSignTest(t *testing.T) {
	tests := []struct {
		k, n int
		want float64
	}{
		{0, 0, 1},
		{0, 30, 1},
		{30, 30, 1 / float64(1<<30)},
		{1, 1, 0.5},
		{2, 3, 0.5},        // 3+1 of 8
		{19, 30, 0.100244}, // the last count a sign test of 30 pairs calls chance at 5%
		{20, 30, 0.049369}, // the first it does not
		{16, 30, 0.427768}, // about half
		{25, 30, 0.000162}, // clearly slower
		{31, 30, 0},        // more than n
	}
	for _, tt := range tests {
		if got := signTest(tt.k, tt.n); math.Abs(got-tt.want) > 1e-6 {
			t.Errorf("signTest(%d, %d) = %.6f, want %.6f", tt.k, tt.n, got, tt.want)
		}
	}
}

// A cold start's executor's share is judged by its pairs above the
// allowance (the benchmark's share-over-slack-pairs), not by its p50: with
// 20 pairs, 14 above is chance at 5% and 15 is not, whatever the p50 reads;
// and without the count there is no verdict.
func TestColdShareVerdict(t *testing.T) {
	const line = "BenchmarkColdStart/%s-2 \t 20\t 1 ns/op\t 20 share-n\t %g share-p50-ms\t 30 share-p90-ms\t 40 share-p99-ms%s\n"
	tests := []struct {
		name, bench string
		p50         float64
		over        string // the count's field, "" for none
		label, want string
	}{
		{"chance", "disk-1GiB", 12, "\t 14 share-over-slack-pairs", "cold start, executor's share (ms)", "yes"},
		{"above", "no-disk", 9, "\t 15 share-over-slack-pairs", "cold start, no disk, executor's share (ms)", "NO"},
		{"prewarmed", "prewarmed", 2, "\t 0 share-over-slack-pairs", "cold start, prewarmed, executor's share (ms)", "yes"},
		{"no count", "rootless", 1, "", "cold start, rootless, executor's share (ms)", "-"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := parse(strings.NewReader(fmt.Sprintf(line, tt.bench, tt.p50, tt.over)))
			if err != nil {
				t.Fatal(err)
			}
			for _, rw := range targetRows(res) {
				if rw.label != tt.label {
					continue
				}
				cells := strings.Split(rw.line(len(rw.label)), "\t")
				if got := cells[len(cells)-2]; got != tt.want {
					t.Errorf("verdict %q, want %q: %q", got, tt.want, cells)
				}
				return
			}
			t.Fatalf("no row %q", tt.label)
		})
	}
}

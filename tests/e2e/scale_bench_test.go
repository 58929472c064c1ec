package e2e

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"executor/netns/nettest"
	"executor/tests/cmd/benchtable/samples"
)

// scaleRuntimesEnv sets how many idle runtimes BenchmarkScale holds; make
// bench asks for the 1,000, make test's smoke run for a few.
const scaleRuntimesEnv = "EXECUTOR_BENCH_RUNTIMES"

// scaleMemory is each idle runtime's memory limit in MB, as in issue 16.
const scaleMemory = 64

// BenchmarkScale holds N idle runtimes (memory=64) in one daemon, created one
// after another, and reports what they cost it and how its API answers with
// them: the daemon's RSS and OS threads at 10 and at N runtimes and the
// increment per runtime between the two, the creation latency of runtimes
// 1-10 and of the last 10, each beside a hardened container start taken
// right after it (startBench, from a spawn namespace: the host's share of
// any growth), health (authenticated) and list latency at N (apiSamples of
// each per iteration), and the delete latency of all N. N is
// $EXECUTOR_BENCH_RUNTIMES, 1000 when unset; at least 20, so that the first
// ten and the last ten are different runtimes.
//
// The figures are the daemon's as it is: the benchmark measures whatever
// per-runtime threads, memory and locking it has, and assumes none of it.
//
// Those creations are made on the spot (the harness turns the prewarm pool
// off). Once the N runtimes are deleted and their daemon stopped, a daemon
// with its defaults, the pool among them, creates N again (see
// scalePrewarmed): the creation latency of its first and last ten, each
// from a prewarmed sandbox, is what an operator's creations take when
// they are not back to back.
func BenchmarkScale(b *testing.B) {
	n := 1000
	if v := os.Getenv(scaleRuntimesEnv); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 20 {
			b.Fatalf("%s=%q: want a number of runtimes, at least 20", scaleRuntimesEnv, v)
		}
	}
	// The harness's /24 holds 253 runtimes: room for n needs a larger one.
	subnet, err := nettest.FreeSubnet(20)
	if err != nil {
		b.Fatal(err)
	}
	x := startExecutor(b, "OPR_EXECUTOR_SUBNET="+subnet.String(), networkPoolDefault)
	pid := x.cmd.Process.Pid
	src := source(b, map[string]string{"index.js": "x"})

	// Registered after startExecutor's cleanup, so it runs first: every
	// runtime made is deleted, whatever failed, before the daemon stops and
	// its leftovers are checked.
	var created []string
	b.Cleanup(func() {
		for _, id := range created {
			if r := x.request(b, "DELETE", "/v1/runtimes/"+id, nil, nil); r.status != 200 && r.status != 404 {
				b.Errorf("cleanup: delete %s: %d %s", id, r.status, r.body)
			}
		}
	})

	create := func(id string) time.Duration { return scaleCreate(b, x, src, id, &created) }
	// Pull the image first, outside the figures.
	create("scale-pull")
	if r := x.request(b, "DELETE", "/v1/runtimes/scale-pull", nil, nil); r.status != 200 {
		b.Fatalf("delete scale-pull: %d %s", r.status, r.body)
	}
	created = created[:0]

	// A hardened container start beside each of the first and the last
	// ten creations, from a spawn namespace made now, as the daemon's
	// was: what the host's growing number of runtimes does to a container
	// start alone, apart from the executor's own part of a creation.
	starts := newStartBench(b, "-spawn-namespace")
	var first, last, firstStarts, lastStarts []time.Duration
	// executor-spawn, the daemon's child that starts the containers, is
	// the executor's memory too.
	var at10, spawnAt10 procStatus
	for i := range n {
		d := create(fmt.Sprintf("scale-%d", i))
		switch {
		case i < 10:
			first = append(first, d)
			settle()
			firstStarts = append(firstStarts, starts.once(b))
			settle()
		case i >= n-10:
			last = append(last, d)
			settle()
			lastStarts = append(lastStarts, starts.once(b))
			settle()
		}
		if i == 9 {
			at10 = readProcStatus(b, pid)
			spawnAt10 = readProcStatus(b, spawnerOf(b, pid))
		}
	}
	atN := readProcStatus(b, pid)
	spawnAtN := readProcStatus(b, spawnerOf(b, pid))

	// The first keyed health request starts the background CPU sampler
	// and waits for its first figures (about 100 ms, see README); a
	// balancer polls steadily, which is what is measured.
	if r := x.request(b, "GET", "/v1/health", nil, nil); r.status != 200 {
		b.Fatalf("health at %d runtimes: %d %s", n, r.status, r.body)
	}
	var health, list []time.Duration
	for b.Loop() {
		for range apiSamples {
			start := time.Now()
			if r := x.request(b, "GET", "/v1/health", nil, nil); r.status != 200 {
				b.Fatalf("health at %d runtimes: %d %s", n, r.status, r.body)
			}
			health = append(health, time.Since(start))
			start = time.Now()
			r := x.request(b, "GET", "/v1/runtimes", nil, nil)
			list = append(list, time.Since(start))
			if r.status != 200 {
				b.Fatalf("list at %d runtimes: %d %s", n, r.status, r.body)
			}
			if got := strings.Count(string(r.body), `"hostname"`); got != len(created) {
				b.Fatalf("list at %d runtimes shows %d", len(created), got)
			}
		}
	}

	var del []time.Duration
	for len(created) > 0 {
		id := created[len(created)-1]
		start := time.Now()
		r := x.request(b, "DELETE", "/v1/runtimes/"+id, nil, nil)
		del = append(del, time.Since(start))
		if r.status != 200 {
			b.Fatalf("delete %s: %d %s", id, r.status, r.body)
		}
		created = created[:len(created)-1]
	}

	b.ReportMetric(float64(n), "runtimes")
	b.ReportMetric(at10.rssMB(), "rss-at10-MB")
	b.ReportMetric(atN.rssMB(), "rss-atN-MB")
	b.ReportMetric(float64(atN.rssKiB-at10.rssKiB)/float64(n-10), "rss-per-runtime-KiB")
	b.ReportMetric(spawnAt10.rssMB(), "spawner-rss-at10-MB")
	b.ReportMetric(spawnAtN.rssMB(), "spawner-rss-atN-MB")
	b.ReportMetric(float64(at10.threads), "threads-at10")
	b.ReportMetric(float64(atN.threads), "threads-atN")
	b.ReportMetric(float64(atN.threads-at10.threads)/float64(n-10), "threads-per-runtime")
	samples.Report(b, "create-first10", first)
	samples.Report(b, "create-last10", last)
	samples.Report(b, "container-first10", firstStarts)
	samples.Report(b, "container-last10", lastStarts)
	samples.Report(b, "create-less-container-first10", less(first, firstStarts))
	samples.Report(b, "create-less-container-last10", less(last, lastStarts))
	samples.Report(b, "delete", del)
	samples.Report(b, "health", health)
	samples.Report(b, "list", list)

	x.stop()
	// The kernel frees what the runtimes held (network namespaces,
	// cgroups, loop devices) in its own workers, seconds after: the next
	// daemon's first creations would share the CPU with that.
	waitHostIdle(b)
	first, last = scalePrewarmed(b, n, subnet.String(), src)
	samples.Report(b, "prewarmed-create-first10", first)
	samples.Report(b, "prewarmed-create-last10", last)
}

// scaleCreate creates runtime id on x, idle, as BenchmarkScale's runtimes
// are, adds it to created and says how long the creation took.
func scaleCreate(b *testing.B, x *executor, src, id string, created *[]string) time.Duration {
	b.Helper()
	body := map[string]any{
		"runtimeId": id, "image": "openruntimes/test:v5-1", "source": src, "entrypoint": "index.js",
		"runtimeEntrypoint": startCommand, "memory": scaleMemory,
	}
	start := time.Now()
	r := x.request(b, "POST", "/v1/runtimes", body, jsonAccept)
	d := time.Since(start)
	if r.status != 201 {
		b.Fatalf("creating runtime %s (%d held): %d %s", id, len(*created), r.status, r.body)
	}
	*created = append(*created, id)
	return d
}

// scalePrewarmed has a daemon with its defaults, the prewarm pool among
// them, create n idle runtimes one after another and returns how long the
// first ten and the last ten creations took. Each of those twenty waits
// until the pool has refilled and is checked to be made from a prewarmed
// sandbox; the others come back to back, and the pool serves what it has.
// The runtimes are deleted before it returns.
func scalePrewarmed(b *testing.B, n int, subnet, src string) (first, last []time.Duration) {
	b.Helper()
	// "OPR_EXECUTOR_PREWARM=" undoes the harness's prewarmOff.
	x := startExecutor(b, "OPR_EXECUTOR_SUBNET="+subnet, "OPR_EXECUTOR_PREWARM=", networkPoolDefault)
	defer x.stop()
	var created []string
	defer func() {
		for _, id := range created {
			if r := x.request(b, "DELETE", "/v1/runtimes/"+id, nil, nil); r.status != 200 && r.status != 404 {
				b.Errorf("delete %s: %d %s", id, r.status, r.body)
			}
		}
	}()
	// The image is pulled, and the pool has demand for it.
	scaleCreate(b, x, src, "scale-pull", &created)
	pooled := func() int { return x.logs.Count("from a prewarmed sandbox") }
	for i := range n {
		id := fmt.Sprintf("scale-%d", i)
		if i >= 10 && i < n-10 {
			scaleCreate(b, x, src, id, &created)
			continue
		}
		// Settled first, so that the count of sandboxes taken is
		// whole: a sandbox made beyond them is waiting.
		waitPoolSettled(b, x)
		waitLog(b, x, "sandbox prewarmed", pooled()+1)
		waitPoolSettled(b, x)
		d := scaleCreate(b, x, src, id, &created)
		// Each creation logs how it was made, in a line that names it;
		// the log may lag the reply.
		line := waitLogLine(b, x, `msg="runtime prepared`, " runtime="+id+" ")
		if !strings.Contains(line, "from a prewarmed sandbox") {
			b.Fatalf("creation %d of %d was not made from a prewarmed sandbox: %s", i, n, line)
		}
		if i < 10 {
			first = append(first, d)
		} else {
			last = append(last, d)
		}
	}
	b.Logf("prewarmed daemon: %d of %d creations made from a prewarmed sandbox", pooled(), n+1)
	return first, last
}

// waitHostIdle waits until the host's CPUs were at least 90% idle over half
// a second, for at most a minute.
func waitHostIdle(b *testing.B) {
	b.Helper()
	idle := func() (idle, total uint64) {
		raw, err := os.ReadFile("/proc/stat")
		if err != nil {
			b.Fatal(err)
		}
		line, _, _ := strings.Cut(string(raw), "\n") // "cpu  user nice system idle iowait ..."
		for i, f := range strings.Fields(line)[1:] {
			v, err := strconv.ParseUint(f, 10, 64)
			if err != nil {
				b.Fatalf("/proc/stat: %q: %v", line, err)
			}
			total += v
			if i == 3 || i == 4 { // idle, iowait
				idle += v
			}
		}
		return idle, total
	}
	deadline := time.Now().Add(time.Minute)
	for {
		i0, t0 := idle()
		time.Sleep(500 * time.Millisecond)
		i1, t1 := idle()
		if t1 > t0 && float64(i1-i0)/float64(t1-t0) >= 0.9 {
			return
		}
		if time.Now().After(deadline) {
			b.Logf("the host was still busy a minute after the runtimes went (%.0f%% idle)", 100*float64(i1-i0)/float64(max(t1-t0, 1)))
			return
		}
	}
}

// apiSamples is how many health and list requests each iteration of
// BenchmarkScale times: with one each, 20 iterations would make the p99 the
// one slowest request.
const apiSamples = 10

// less is a[i]-b[i] for each i: each figure less the baseline taken beside it.
func less(a, b []time.Duration) []time.Duration {
	out := make([]time.Duration, len(a))
	for i := range a {
		out[i] = a[i] - b[i]
	}
	return out
}

// spawnerOf is the pid of the executor-spawn child of the daemon at pid.
func spawnerOf(t testing.TB, pid int) int {
	t.Helper()
	found := childrenNamed(pid, "executor-spawn")
	if len(found) != 1 {
		t.Fatalf("the daemon %d has %d executor-spawn children, want 1", pid, len(found))
	}
	return found[0]
}

// childrenNamed is the pids of pid's children (of any of its threads)
// whose command name is comm.
func childrenNamed(pid int, comm string) []int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	var found []int
	for _, f := range tasks {
		data, _ := os.ReadFile(f)
		for _, p := range strings.Fields(string(data)) {
			name, _ := os.ReadFile("/proc/" + p + "/comm")
			if strings.TrimSpace(string(name)) == comm {
				n, _ := strconv.Atoi(p)
				found = append(found, n)
			}
		}
	}
	return found
}

// procStatus is what /proc/<pid>/status says of a process's size.
type procStatus struct {
	rssKiB  int64
	threads int64
}

func (s procStatus) rssMB() float64 { return float64(s.rssKiB) * 1024 / 1e6 }

func readProcStatus(t testing.TB, pid int) procStatus {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var s procStatus
	var seen int
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		fields := strings.Fields(v)
		if len(fields) == 0 {
			continue
		}
		switch k {
		case "VmRSS": // "  123456 kB"
			s.rssKiB, err = strconv.ParseInt(fields[0], 10, 64)
			seen++
		case "Threads":
			s.threads, err = strconv.ParseInt(fields[0], 10, 64)
			seen++
		}
		if err != nil {
			t.Fatalf("/proc/%d/status: %s: %v", pid, sc.Text(), err)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if seen != 2 {
		t.Fatalf("/proc/%d/status: no VmRSS or Threads line", pid)
	}
	return s
}

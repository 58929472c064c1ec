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
// increment per runtime between the two, the creation latency of its first
// 10 runtimes and of its last scalePairs(N), these against creations by a
// second daemon holding 10 taken between them (see scalePaired), health
// (authenticated) and list latency at N (apiSamples of each per iteration),
// and the delete latency of all N. N is $EXECUTOR_BENCH_RUNTIMES, 1000 when unset; at least 20.
//
// The figures are the daemon's as it is: the benchmark measures whatever
// per-runtime threads, memory and locking it has, and assumes none of it.
//
// Those creations are made on the spot (the harness turns the prewarm pool
// off). Once the N runtimes are deleted and their daemons stopped, two
// daemons with their defaults, the pool among them, do the same again (see
// scalePrewarmed): what an operator's creations take when they are not back
// to back.
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
	src := source(b, map[string]string{"index.js": "x"})
	big := newScaleDaemon(b, src, "OPR_EXECUTOR_SUBNET="+subnet.String(), networkPoolDefault)
	small := newScaleDaemon(b, src, networkPoolDefault)
	pid := big.x.cmd.Process.Pid

	var first []time.Duration
	for range 10 {
		small.create(b)
		settle()
		first = append(first, big.create(b))
		settle()
	}
	at10 := readProcStatus(b, pid)
	spawnAt10 := readProcStatus(b, spawnerOf(b, pid))
	pairs := scalePairs(n)
	for len(big.created) < n-pairs {
		big.create(b)
	}
	pairedN, paired10, slower := scalePaired(b, big, small, pairs, settle)
	atN := readProcStatus(b, pid)
	spawnAtN := readProcStatus(b, spawnerOf(b, pid))

	// The first keyed health request starts the background CPU sampler
	// and waits for its first figures (about 100 ms, see README); a
	// balancer polls steadily, which is what is measured.
	x := big.x
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
			if got := strings.Count(string(r.body), `"hostname"`); got != len(big.created) {
				b.Fatalf("list at %d runtimes shows %d", len(big.created), got)
			}
		}
	}

	var del []time.Duration
	for len(big.created) > 0 {
		id := big.created[len(big.created)-1]
		start := time.Now()
		r := x.request(b, "DELETE", "/v1/runtimes/"+id, nil, nil)
		del = append(del, time.Since(start))
		if r.status != 200 {
			b.Fatalf("delete %s: %d %s", id, r.status, r.body)
		}
		big.created = big.created[:len(big.created)-1]
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
	samples.Report(b, "create-atN", pairedN)
	samples.Report(b, "create-at10", paired10)
	b.ReportMetric(float64(slower), "create-atN-slower-pairs")
	samples.Report(b, "delete", del)
	samples.Report(b, "health", health)
	samples.Report(b, "list", list)

	small.stop(b)
	big.stop(b)
	// The kernel frees what the runtimes held (network namespaces,
	// cgroups, loop devices) in its own workers, seconds after: the next
	// daemons' first creations would share the CPU with that.
	waitHostIdle(b)
	first, pairedN, paired10, slower = scalePrewarmed(b, n, subnet.String(), src)
	samples.Report(b, "prewarmed-create-first10", first)
	samples.Report(b, "prewarmed-create-atN", pairedN)
	samples.Report(b, "prewarmed-create-at10", paired10)
	b.ReportMetric(float64(slower), "prewarmed-create-atN-slower-pairs")
}

// scalePairs is how many of the last creations of BenchmarkScale's N are
// paired with a creation by a daemon holding 10: 30 at the 1,000 (a
// one-sided sign test then tells a daemon slower in 20 pairs of 30 at 5%),
// a few for make test's smoke run.
func scalePairs(n int) int { return min(30, n/4) }

// scalePaired has big make its last pairs creations and small one creation
// beside each of them, the two taking turns at going first, with before
// called before every creation (the pause that keeps one creation's
// aftermath out of the next). It returns the latencies
// of big's creations, of small's, and in how many pairs big's was the
// slower: a sign test of whether big is slower, with the host's drift over
// the minutes a run takes (this VM's neighbours) the same for both sides
// of each pair, as is whatever the host's number of runtimes does to a
// container start (the kernel's pivot_root visits every thread on the
// host): the executor's own growth is what is left.
func scalePaired(b *testing.B, big, small *scaleDaemon, pairs int, before func()) (atN, at10 []time.Duration, slower int) {
	b.Helper()
	for i := range pairs {
		var dBig, dSmall time.Duration
		if i%2 == 0 {
			before()
			dBig = big.create(b)
			before()
			dSmall = small.create(b)
		} else {
			before()
			dSmall = small.create(b)
			before()
			dBig = big.create(b)
		}
		atN, at10 = append(atN, dBig), append(at10, dSmall)
		if dBig > dSmall {
			slower++
		}
	}
	return atN, at10, slower
}

// scaleDaemon is a daemon of BenchmarkScale and the runtimes it holds.
type scaleDaemon struct {
	x       *executor
	src     string
	created []string
	// made counts the runtimes made, for their ids: one deleted may
	// still be going when the next is made.
	made int
	// prewarmed checks that each creation was made from a prewarmed
	// sandbox.
	prewarmed bool
}

// newScaleDaemon starts a daemon with env, has it pull the test image
// (outside the figures), and deletes every runtime it made when b ends,
// whatever failed, before the daemon stops and its leftovers are checked.
func newScaleDaemon(b *testing.B, src string, env ...string) *scaleDaemon {
	b.Helper()
	d := &scaleDaemon{x: startExecutor(b, env...), src: src}
	// Registered after startExecutor's cleanup, so it runs first.
	b.Cleanup(func() { d.deleteAll(b) })
	d.create(b)
	d.deleteAll(b)
	return d
}

// create creates the daemon's next runtime, idle, and says how long the
// creation took.
func (d *scaleDaemon) create(b *testing.B) time.Duration {
	b.Helper()
	id := fmt.Sprintf("scale-%d", d.made)
	d.made++
	body := map[string]any{
		"runtimeId": id, "image": "openruntimes/test:v5-1", "source": d.src, "entrypoint": "index.js",
		"runtimeEntrypoint": startCommand, "memory": scaleMemory,
	}
	start := time.Now()
	r := d.x.request(b, "POST", "/v1/runtimes", body, jsonAccept)
	took := time.Since(start)
	if r.status != 201 {
		b.Fatalf("creating runtime %s (%d held): %d %s", id, len(d.created), r.status, r.body)
	}
	d.created = append(d.created, id)
	if d.prewarmed {
		// Each creation logs how it was made, in a line that names it;
		// the log may lag the reply.
		line := waitLogLine(b, d.x, `msg="runtime prepared`, " runtime="+id+" ")
		if !strings.Contains(line, "from a prewarmed sandbox") {
			b.Fatalf("creation %d was not made from a prewarmed sandbox: %s", len(d.created), line)
		}
	}
	return took
}

func (d *scaleDaemon) deleteAll(b *testing.B) {
	b.Helper()
	for _, id := range d.created {
		if r := d.x.request(b, "DELETE", "/v1/runtimes/"+id, nil, nil); r.status != 200 && r.status != 404 {
			b.Errorf("delete %s: %d %s", id, r.status, r.body)
		}
	}
	d.created = d.created[:0]
}

func (d *scaleDaemon) stop(b *testing.B) {
	b.Helper()
	d.deleteAll(b)
	d.x.stop()
}

// poolReady waits until the daemon's prewarm pool holds a sandbox and
// makes no other: the next creation is made from one, and no refill shares
// the host's cores with it.
func (d *scaleDaemon) poolReady(b *testing.B) {
	b.Helper()
	// Settled first, so that the counts are whole: a sandbox made beyond
	// those taken and those the pool retired is waiting.
	waitPoolSettled(b, d.x)
	logs := d.x.logs
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		parked := logs.Count("sandbox prewarmed") - logs.Count("from a prewarmed sandbox") - logs.Count("prewarmed sandbox retired")
		if parked > 0 {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("the prewarm pool holds no sandbox a minute on:\n%s", logs.String())
		}
	}
	waitPoolSettled(b, d.x)
}

// renewDemand makes one runtime and deletes it: the cold start it takes
// counts as demand, so that a pool that shrank while the daemon was idle
// (it lasts prewarmWindow, a minute, without one) is made again.
func (d *scaleDaemon) renewDemand(b *testing.B) {
	b.Helper()
	prewarmed := d.prewarmed
	d.prewarmed = false
	d.create(b)
	d.prewarmed = prewarmed
	id := d.created[len(d.created)-1]
	if r := d.x.request(b, "DELETE", "/v1/runtimes/"+id, nil, nil); r.status != 200 {
		b.Fatalf("delete %s: %d %s", id, r.status, r.body)
	}
	d.created = d.created[:len(d.created)-1]
}

// scalePrewarmed has two daemons with their defaults, the prewarm pool
// among them, do what BenchmarkScale's did: one creates n idle runtimes one
// after another, the other 10 beside its first 10, and their last
// creations are then paired as scalePaired pairs them. The first daemon's
// first 10 and the paired creations are each taken once both pools have
// refilled and settled, and checked to be made from a prewarmed sandbox;
// the others come back to back, and the pool serves what it has. The
// runtimes are deleted and the daemons stopped before it returns.
func scalePrewarmed(b *testing.B, n int, subnet, src string) (first, atN, at10 []time.Duration, slower int) {
	b.Helper()
	// "OPR_EXECUTOR_PREWARM=" undoes the harness's prewarmOff.
	big := newScaleDaemon(b, src, "OPR_EXECUTOR_SUBNET="+subnet, "OPR_EXECUTOR_PREWARM=", networkPoolDefault)
	defer big.stop(b)
	small := newScaleDaemon(b, src, "OPR_EXECUTOR_PREWARM=", networkPoolDefault)
	defer small.stop(b)
	ready := func() {
		small.poolReady(b)
		big.poolReady(b)
	}
	big.prewarmed = true
	for range 10 {
		small.create(b)
		ready()
		first = append(first, big.create(b))
	}
	big.prewarmed = false
	pairs := scalePairs(n)
	for len(big.created) < n-pairs {
		big.create(b)
	}
	b.Logf("prewarmed daemon: %d of %d creations made from a prewarmed sandbox", big.x.logs.Count("from a prewarmed sandbox"), n-pairs+1)
	// The second daemon was idle while the first made them, for longer
	// than an unused pool lasts on a slow run.
	small.renewDemand(b)
	big.prewarmed, small.prewarmed = true, true
	atN, at10, slower = scalePaired(b, big, small, pairs, ready)
	return first, atN, at10, slower
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

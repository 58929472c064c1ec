package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// soakFigures are the daemon's own figures that the soak compares: resident
// memory, threads and open fds, from /proc, and goroutines, from its
// metrics (go_goroutines).
type soakFigures struct {
	rssKiB, threads, fds, goroutines int
}

func (f soakFigures) String() string {
	return fmt.Sprintf("RSS %d KiB, threads %d, fds %d, goroutines %d", f.rssKiB, f.threads, f.fds, f.goroutines)
}

// daemonFigures reads the figures of the daemon pid whose metrics listen on
// metricsAddr.
func daemonFigures(t *testing.T, pid int, metricsAddr string) soakFigures {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	var f soakFigures
	for _, line := range strings.Split(string(status), "\n") {
		k, v, _ := strings.Cut(line, ":")
		fs := strings.Fields(v)
		if len(fs) == 0 {
			continue
		}
		switch k {
		case "VmRSS":
			f.rssKiB, _ = strconv.Atoi(fs[0])
		case "Threads":
			f.threads, _ = strconv.Atoi(fs[0])
		}
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	f.fds = len(fds)
	_, samples := scrape(t, metricsAddr)
	g, ok := samples["go_goroutines"]
	if !ok {
		t.Fatalf("no go_goroutines in the metrics")
	}
	f.goroutines = int(g)
	return f
}

// outcome describes a failed request for the test's log.
func outcome(r *response, err error) string {
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("%d %s", r.status, r.body)
}

// rssWindow is how long the RSS is sampled at the end of the warm-up and
// of the soak. The mean under load is what is compared: a Go heap swings
// between its live size and the GC's goal (twice that) and returns pages
// to the kernel only slowly once idle, so one reading, loaded or quiet, is
// the GC's phase at that moment rather than the daemon's footprint.
const rssWindow = 10 * time.Second

type rssSamples struct {
	n              int
	mean           float64
	minKiB, maxKiB int
}

func (r rssSamples) String() string {
	return fmt.Sprintf("mean %.0f KiB (min %d, max %d, %d samples)", r.mean, r.minKiB, r.maxKiB, r.n)
}

// sampleRSS reads the daemon's VmRSS every 200 ms between from and to and
// sends the figures once done.
func sampleRSS(pid int, from, to time.Time) <-chan rssSamples {
	done := make(chan rssSamples, 1)
	go func() {
		var r rssSamples
		var sum int
		time.Sleep(time.Until(from))
		for time.Now().Before(to) {
			status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
			if err != nil {
				break
			}
			for _, line := range strings.Split(string(status), "\n") {
				if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
					kib, _ := strconv.Atoi(strings.Fields(v)[0])
					sum += kib
					r.n++
					r.maxKiB = max(r.maxKiB, kib)
					if r.minKiB == 0 || kib < r.minKiB {
						r.minKiB = kib
					}
				}
			}
			time.Sleep(200 * time.Millisecond)
		}
		if r.n > 0 {
			r.mean = float64(sum) / float64(r.n)
		}
		done <- r
	}()
	return done
}

// soakLoad is one phase of the soak's traffic and what it counted.
type soakLoad struct {
	x         *executor
	client    *http.Client
	src       string
	storage   string
	clients   int
	runtimes  int
	ops       map[string]*atomic.Int64
	errCount  atomic.Int64
	mu        sync.Mutex
	firstErrs []string
}

func (l *soakLoad) fail(format string, args ...any) {
	l.errCount.Add(1)
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.firstErrs) < 20 {
		l.firstErrs = append(l.firstErrs, fmt.Sprintf(format, args...))
	}
}

// send is x.send over the soak's own client: one keep-alive connection per
// client goroutine rather than DefaultTransport's two per host, which would
// open and close a connection per request and soak the test's ephemeral
// ports instead of the daemon.
func (l *soakLoad) send(method, path string, body any, headers map[string]string) (*response, error) {
	var b []byte
	if body != nil {
		var err error
		if b, err = json.Marshal(body); err != nil {
			return nil, err
		}
	}
	req, err := http.NewRequest(method, l.x.url+path, bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+secret)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := l.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	var out bytes.Buffer
	if _, err := out.ReadFrom(resp.Body); err != nil {
		return nil, fmt.Errorf("%s %s: read the reply: %w", method, path, err)
	}
	return &response{status: resp.StatusCode, header: resp.Header, body: out.Bytes()}, nil
}

// execute runs one execution of runtime id with a cold-start body (a
// runtime that maintenance removed starts again) and checks the reply is the
// runtime's own 200.
func (l *soakLoad) execute(id string) bool {
	r, err := l.send("POST", "/v1/runtimes/"+id+"/executions", execBody(l.src, nil), jsonAccept)
	if err != nil {
		l.fail("execute %s: %v", id, err)
		return false
	}
	var res struct {
		StatusCode int `json:"statusCode"`
	}
	if r.status != 200 || json.Unmarshal(r.body, &res) != nil || res.StatusCode != 200 {
		l.fail("execute %s: %d %s", id, r.status, r.body)
		return false
	}
	l.ops["execute"].Add(1)
	return true
}

// run sends the whole mix until ctx ends, and waits for every request in
// flight (requests are not cancelled: a phase's end is no client
// disconnecting, which the fault tests cover): clients executions spread over runtimes warm runtimes; churn
// goroutines creating a runtime, executing it, then deleting it or leaving
// it to maintenance, turn about; builder goroutines building with
// remove=true. Every id is one goroutine's own, so a DELETE never races a
// client's execution (that would be the client's mistake, not the daemon's).
func (l *soakLoad) run(ctx context.Context, phase string) {
	var wg sync.WaitGroup
	for c := range l.clients {
		wg.Go(func() {
			id := fmt.Sprintf("soak-%d", c%l.runtimes)
			for ctx.Err() == nil {
				l.execute(id)
			}
		})
	}
	const churners, builders = 4, 2
	for g := range churners {
		wg.Go(func() {
			for n := 0; ctx.Err() == nil; n++ {
				id := fmt.Sprintf("churn-%s-%d-%d", phase, g, n)
				body := map[string]any{"runtimeId": id, "image": "openruntimes/test:v5-1", "source": l.src,
					"entrypoint": "index.js", "runtimeEntrypoint": startCommand}
				if r, err := l.send("POST", "/v1/runtimes", body, nil); err != nil || r.status != 201 {
					l.fail("create %s: %s", id, outcome(r, err))
					continue
				}
				l.ops["create"].Add(1)
				if !l.execute(id) || n%2 == 1 {
					continue // odd ones are maintenance's
				}
				if r, err := l.send("DELETE", "/v1/runtimes/"+id, nil, nil); err != nil || r.status != 200 {
					l.fail("delete %s: %s", id, outcome(r, err))
					continue
				}
				l.ops["delete"].Add(1)
			}
		})
	}
	for g := range builders {
		wg.Go(func() {
			for n := 0; ctx.Err() == nil; n++ {
				id := fmt.Sprintf("build-%s-%d-%d", phase, g, n)
				r, err := l.send("POST", "/v1/runtimes", map[string]any{
					"runtimeId": id, "image": "openruntimes/test:v5-1", "source": l.src, "entrypoint": "index.js",
					"destination": l.storage, "remove": true,
					"command": `tar -zxf /tmp/code.tar.gz -C /mnt/code && sh helpers/build.sh "echo installing"`,
				}, nil)
				if err != nil || r.status != 201 {
					l.fail("build %s: %s", id, outcome(r, err))
					continue
				}
				res, err := r.decode()
				p, _ := res["path"].(string)
				if err != nil || !strings.HasPrefix(p, l.storage+"/") {
					l.fail("build %s: no artifact in %s", id, r.body)
					continue
				}
				_ = os.Remove(p) // the artifact is the storage's, not the daemon's
				l.ops["build"].Add(1)
			}
		})
	}
	wg.Wait()
}

// quiesce ends a phase: every runtime still listed is deleted (404:
// maintenance got there first), the host is clean, and the census settled.
func (l *soakLoad) quiesce(t *testing.T, want census) census {
	t.Helper()
	start := time.Now()
	r := l.x.request(t, "GET", "/v1/runtimes", nil, nil)
	var list []struct {
		Name string `json:"name"` // <the daemon's hostname>-<runtimeId>; churn and build ids hold "-soak-" too
	}
	if err := json.Unmarshal(r.body, &list); err != nil {
		t.Fatalf("list: %v %s", err, r.body)
	}
	var ids []string
	for _, rt := range list {
		i := -1
		for _, p := range []string{"-churn-", "-build-", "-soak-"} {
			if i = strings.Index(rt.Name, p); i >= 0 {
				break
			}
		}
		if i < 0 {
			t.Fatalf("runtime %q is none of the soak's", rt.Name)
		}
		id := rt.Name[i+1:]
		ids = append(ids, id)
		if r := l.x.request(t, "DELETE", "/v1/runtimes/"+id, nil, nil); r.status != 200 && r.status != 404 {
			t.Errorf("delete %s: %d %s", id, r.status, r.body)
		}
	}
	l.x.waitClean(t)
	l.client.CloseIdleConnections()
	c := settledCensus(t, l.x, want, 2*time.Minute)
	t.Logf("quiesced in %v: deleted %d runtimes %v", time.Since(start), len(ids), ids)
	return c
}

// TestSoak runs the soak: EXECUTOR_SOAK_CLIENTS (200) clients
// executing over EXECUTOR_SOAK_RUNTIMES (50) runtimes, with creates,
// deletes, builds and maintenance (threshold 5 s, every second) in the
// mix, for EXECUTOR_SOAK_DURATION (60s; make soak: 10m) after a warm-up of
// a fifth of that (at least 30 s). No request may fail. The daemon's mean
// RSS over the last rssWindow of the soak is within 10% of that of the
// warm-up; after the warm-up and at the end, with every runtime deleted and
// teardown settled, its goroutines are within 10%, and the census (fds,
// threads held in the kernel, processes, cgroups, mounts, netns, veths,
// nftables, leases, files) is equal. Its count of all threads, a high-water
// mark in Go (heldThreads), is printed and bounded against runaway growth
// (threadsWithin).
func TestSoak(t *testing.T) {
	duration := 60 * time.Second
	if v := os.Getenv("EXECUTOR_SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("EXECUTOR_SOAK_DURATION=%q: want a Go duration such as 10m", v)
		}
		duration = d
	}
	// Long enough that the runtimes' cold starts are over well before
	// the warm-up's last rssWindow, on a loaded 2-core machine too.
	warmup := max(duration/5, 30*time.Second)
	clients := envInt(t, "EXECUTOR_SOAK_CLIENTS", 200)
	runtimes := envInt(t, "EXECUTOR_SOAK_RUNTIMES", 50)
	x, metricsAddr := startWithMetrics(t, "OPR_EXECUTOR_INACTIVE_THRESHOLD=5", "OPR_EXECUTOR_MAINTENANCE_INTERVAL=1",
		"OPR_EXECUTOR_LOG_LEVEL=info")
	l := &soakLoad{
		x:        x,
		client:   &http.Client{Timeout: 120 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: clients + 16}},
		src:      source(t, map[string]string{"index.js": "x"}),
		storage:  shared.storage + "/soak-builds",
		clients:  clients,
		runtimes: runtimes,
		ops:      map[string]*atomic.Int64{"execute": {}, "create": {}, "delete": {}, "build": {}},
	}
	report := func(phase string, d time.Duration) {
		var parts []string
		for _, k := range []string{"execute", "create", "delete", "build"} {
			n := l.ops[k].Swap(0)
			parts = append(parts, fmt.Sprintf("%s %d (%.1f/s)", k, n, float64(n)/d.Seconds()))
		}
		t.Logf("%s (%v, %d clients over %d runtimes): %s; errors %d", phase, d, clients, runtimes, strings.Join(parts, ", "), l.errCount.Load())
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, e := range l.firstErrs {
			t.Error(e)
		}
		if l.errCount.Load() > 0 {
			t.FailNow()
		}
	}

	pid := x.cmd.Process.Pid
	ctx, cancel := context.WithTimeout(context.Background(), warmup)
	start := time.Now()
	rssDone := sampleRSS(pid, start.Add(warmup-rssWindow), start.Add(warmup))
	l.run(ctx, "warm")
	cancel()
	report("warm-up", time.Since(start))
	warmRSS := <-rssDone
	warm := l.quiesce(t, nil)
	warmFig := daemonFigures(t, pid, metricsAddr)
	t.Logf("after warm-up: RSS under load %s; quiet: %s; %s", warmRSS, warmFig, warm.counts())

	ctx, cancel = context.WithTimeout(context.Background(), duration)
	start = time.Now()
	rssDone = sampleRSS(pid, start.Add(duration-rssWindow), start.Add(duration))
	l.run(ctx, "soak")
	cancel()
	report("soak", time.Since(start))
	endRSS := <-rssDone
	// Counted over both phases: a short soak (EXECUTOR_SOAK_DURATION=10s)
	// may end before a churner's runtime has been idle 5 s.
	if n := strings.Count(x.logs.String(), "maintenance removed inactive runtimes"); n == 0 {
		t.Errorf("maintenance removed no runtime during the warm-up and the soak: it was not in the mix")
	} else {
		t.Logf("maintenance removed idle runtimes %d times during the warm-up and the soak", n)
	}
	end := l.quiesce(t, warm)
	endFig := daemonFigures(t, pid, metricsAddr)
	t.Logf("at the end: RSS under load %s; quiet: %s; %s", endRSS, endFig, end.counts())

	if d := warm.diff(end); len(d) > 0 {
		t.Errorf("census changed over the soak:\n%s", strings.Join(d, "\n"))
	}
	// A -race daemon (scripts/race.sh sets EXECUTOR_DAEMON_RACE) carries the detector's shadow memory and access
	// history, which grow with every heap address the daemon touches: its RSS says nothing of the daemon's own
	// (make soak measures that on the release build). Errors, threads and the census are still checked.
	raceDaemon := os.Getenv("EXECUTOR_DAEMON_RACE") == "1"
	if warmRSS.n == 0 || endRSS.n == 0 {
		t.Errorf("no RSS samples: warm-up %s, soak %s", warmRSS, endRSS)
	} else if raceDaemon {
		t.Logf("RSS not compared: the daemon is a -race build (%.0f KiB -> %.0f KiB)", warmRSS.mean, endRSS.mean)
	} else if endRSS.mean > 1.1*warmRSS.mean {
		t.Errorf("RSS under load grew over the soak: mean %.0f KiB over the warm-up's last %v, %.0f KiB over the soak's (more than 10%%)",
			warmRSS.mean, rssWindow, endRSS.mean)
	}
	if endFig.goroutines > warmFig.goroutines+warmFig.goroutines/10 {
		t.Errorf("goroutines grew over the soak: %d after warm-up, %d at the end (more than 10%%)", warmFig.goroutines, endFig.goroutines)
	}
	// Threads held in the kernel are in the census, compared exactly; all
	// of them are a high-water mark (heldThreads), bounded against runaway.
	if !threadsWithin(warmFig.threads, endFig.threads) {
		t.Errorf("threads grew over the soak: %d after warm-up, %d at the end", warmFig.threads, endFig.threads)
	}
	// fds are in the census, compared exactly.
}

package e2e

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"executor/tests/testenv"
)

// percentile reports the p-th percentile of ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[int(float64(len(s)-1)*p)]
}

func reportDurations(b *testing.B, prefix string, ds []time.Duration) {
	if len(ds) == 0 {
		return
	}
	b.ReportMetric(float64(percentile(ds, 0.5).Microseconds())/1000, prefix+"-p50-ms")
	b.ReportMetric(float64(percentile(ds, 0.95).Microseconds())/1000, prefix+"-p95-ms")
}

// BenchmarkColdStart measures an execution on a runtime id that does not
// exist yet, from request to reply, with the image already pulled: with each
// runtime on its own disk (the default) and, for the ratio, without; and the
// rootless daemon (an unprivileged user with a delegated cgroup subtree, its
// defaults).
func BenchmarkColdStart(b *testing.B) {
	for _, c := range []struct{ name, limit string }{{"disk-1GiB", "1GiB"}, {"no-disk", "0"}} {
		b.Run(c.name, func(b *testing.B) { benchColdStart(b, "OPR_EXECUTOR_DISK_LIMIT="+c.limit) })
	}
	b.Run("rootless", func(b *testing.B) {
		x := startRootless(b, rootlessUser(b, true))
		benchColdStartOn(b, x.executor, x.source(b, map[string]string{"index.js": "x"}))
	})
}

func benchColdStart(b *testing.B, env ...string) {
	x := startExecutor(b, env...)
	benchColdStartOn(b, x, source(b, map[string]string{"index.js": "x"}))
}

func benchColdStartOn(b *testing.B, x *executor, src string) {
	// Pull the image once, outside the measurement.
	if r := x.request(b, "POST", "/v1/runtimes/warmup/executions", execBody(src, nil), jsonAccept); r.status != 200 {
		b.Fatalf("%d %s", r.status, r.body)
	}
	x.request(b, "DELETE", "/v1/runtimes/warmup", nil, nil)
	var ds []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		id := fmt.Sprintf("cold-%d", i)
		start := time.Now()
		r := x.request(b, "POST", "/v1/runtimes/"+id+"/executions", execBody(src, nil), jsonAccept)
		ds = append(ds, time.Since(start))
		if r.status != 200 {
			b.Fatalf("%d %s", r.status, r.body)
		}
		b.StopTimer()
		x.request(b, "DELETE", "/v1/runtimes/"+id, nil, nil)
		b.StartTimer()
	}
	reportDurations(b, "cold", ds)
}

// BenchmarkWarmExecution compares a warm execution through the executor with
// the same request sent straight to the runtime's address, in the same run.
func BenchmarkWarmExecution(b *testing.B) {
	x := startExecutor(b)
	benchWarm(b, x, source(b, map[string]string{"index.js": "x"}), nil)
}

// BenchmarkWarmExecutionRootless is BenchmarkWarmExecution against the
// rootless daemon; the direct requests reach the runtime from inside the
// daemon's network namespace, where its address is.
func BenchmarkWarmExecutionRootless(b *testing.B) {
	x := startRootless(b, rootlessUser(b, true))
	src := x.source(b, map[string]string{"index.js": "x"})
	benchWarm(b, x.executor, src, func() func(ctx context.Context, network, addr string) (net.Conn, error) {
		return dialInNetns(x.inner(b))
	})
}

// benchWarm measures warm executions on x; dialer, when not nil, gives the
// direct requests' dial function (once the runtime runs).
func benchWarm(b *testing.B, x *executor, src string, dialer func() func(ctx context.Context, network, addr string) (net.Conn, error)) {
	if r := x.request(b, "POST", "/v1/runtimes/warm/executions", execBody(src, map[string]any{"path": "/status?code=200"}), jsonAccept); r.status != 200 {
		b.Fatalf("%d %s", r.status, r.body)
	}
	rt := x.request(b, "GET", "/v1/runtimes/warm", nil, nil).json(b)
	addr := runtimeAddr(b, x, rt["hostname"].(string))
	key := rt["key"].(string)

	tr := &http.Transport{DisableCompression: true}
	if dialer != nil {
		tr.DialContext = dialer()
	}
	direct := &http.Client{Transport: tr}
	directOnce := func() time.Duration {
		req, _ := http.NewRequest("GET", "http://"+addr+"/status?code=200", nil)
		req.Header.Set("x-open-runtimes-secret", key)
		req.Header.Set("x-open-runtimes-timeout", "15")
		req.Header.Set("x-open-runtimes-logging", "enabled")
		req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("opr:"+key)))
		start := time.Now()
		resp, err := direct.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		drain(resp)
		if id := resp.Header.Get("x-open-runtimes-log-id"); id != "" {
			// The executor reads and removes the log files; do the same so both paths do equal work on the runtime side.
			logs := filepath.Join(x.dataDir, "runtimes")
			matches, _ := filepath.Glob(filepath.Join(logs, "*", "logs", id+"_*"))
			for _, m := range matches {
				os.ReadFile(m)
				os.Remove(m)
			}
		}
		return time.Since(start)
	}
	viaExecutor := func() time.Duration {
		start := time.Now()
		r := x.request(b, "POST", "/v1/runtimes/warm/executions", map[string]any{"path": "/status?code=200"}, jsonAccept)
		d := time.Since(start)
		if r.status != 200 {
			b.Fatalf("%d %s", r.status, r.body)
		}
		return d
	}
	for i := 0; i < 20; i++ { // warm both paths' connections
		directOnce()
		viaExecutor()
	}
	var dd, de []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		dd = append(dd, directOnce())
		de = append(de, viaExecutor())
	}
	b.StopTimer()
	reportDurations(b, "direct", dd)
	reportDurations(b, "executor", de)
	overhead := percentile(de, 0.5) - percentile(dd, 0.5)
	b.ReportMetric(float64(overhead.Microseconds())/1000, "overhead-p50-ms")
	b.ReportMetric(float64(percentile(de, 0.5))/float64(percentile(dd, 0.5)), "executor/direct-p50")
}

// runtimeAddr finds a runtime's bridge address from the hosts file the
// executor wrote for it.
func runtimeAddr(t testing.TB, x *executor, hostname string) string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(x.dataDir, "runtimes", "*", "hosts"))
	for _, f := range files {
		data, _ := os.ReadFile(f)
		for _, line := range strings.Split(string(data), "\n") {
			if fields := strings.Fields(line); len(fields) == 2 && fields[1] == hostname {
				return net.JoinHostPort(fields[0], "3000")
			}
		}
	}
	t.Fatalf("no address for runtime host %s", hostname)
	return ""
}

func drain(resp *http.Response) {
	buf := make([]byte, 4096)
	for {
		if _, err := resp.Body.Read(buf); err != nil {
			break
		}
	}
	resp.Body.Close()
}

// BenchmarkRuntimeBoot is the runtime's own boot: the test runtime server
// started as a plain host process until it accepts connections. Cold start
// is judged against libcontainer start plus this.
func BenchmarkRuntimeBoot(b *testing.B) {
	bin := filepath.Join(b.TempDir(), "runtime-server")
	if err := testenv.BuildRuntimeServer(b.Context(), bin); err != nil {
		b.Fatal(err)
	}
	var ds []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		port, err := testenv.FreePort()
		if err != nil {
			b.Fatal(err)
		}
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		start := time.Now()
		cmd := exec.Command(bin, "-listen", addr, "-logs-dir", b.TempDir(), "-function-dir", b.TempDir())
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		for {
			c, err := net.Dial("tcp", addr)
			if err == nil {
				c.Close()
				break
			}
			time.Sleep(200 * time.Microsecond)
		}
		ds = append(ds, time.Since(start))
		cmd.Process.Kill()
		cmd.Wait()
	}
	reportDurations(b, "boot", ds)
}

package e2e

// The attacker suite of issue 10. Function code and build commands, which
// hold no API key, plant symlinks, FIFOs, sockets, /dev/zero links, sparse
// files and directories wherever the daemon (host root) reads or writes:
// execution log files, the build artifact, the build cache, the runtime's
// directories at restart, DELETE and shutdown. Each plant must end in a clear
// error or the runtime's own bytes, within the request's own timeout, with a
// host canary file never read, changed or removed.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"executor/oci"
	"executor/tests/testenv"
)

// hostileExecTimeout is the `timeout` of every execution here, in seconds;
// hostileBuildTimeout that of every build.
const (
	hostileExecTimeout  = 15
	hostileBuildTimeout = 60
)

// hostileGrace is how long past a request's own timeout the tests wait for
// its answer. A daemon blocked in open() on a FIFO never answers: without a
// bound the test would hang instead of failing.
const hostileGrace = 30 * time.Second

// canary is a host file the daemon must never read. Its directory also
// holds canary_logs.log and canary_errors.log: the names a log id climbing
// out of /mnt/logs would make the daemon read.
type canary struct {
	dir     string
	path    string
	content string
	stats   map[string]os.FileInfo
}

func newCanary(t *testing.T) *canary {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	c := &canary{dir: dir, path: filepath.Join(dir, "canary"), content: "hostile-canary-" + hex.EncodeToString(b), stats: map[string]os.FileInfo{}}
	for _, name := range []string{"canary", "canary_logs.log", "canary_errors.log"} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(c.content+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		st, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		c.stats[name] = st
	}
	return c
}

// leak says what of the host b carries: the canary, or the daemon's
// environment (its secret), which a link to /proc/self/environ would give.
func (c *canary) leak(b []byte) string {
	switch {
	case bytes.Contains(b, []byte(c.content)):
		return "the host canary's content"
	case bytes.Contains(b, []byte(secret)), bytes.Contains(b, []byte("OPR_EXECUTOR_SECRET=")):
		return "the daemon's environment (OPR_EXECUTOR_SECRET)"
	}
	return ""
}

// intact checks the canary files were neither written, truncated, removed,
// nor had their owner or mode changed (a chown or chmod through a link).
func (c *canary) intact(t *testing.T) {
	t.Helper()
	for name, was := range c.stats {
		p := filepath.Join(c.dir, name)
		st, err := os.Lstat(p)
		if err != nil {
			t.Errorf("canary %s: %v", name, err)
			continue
		}
		b, _ := os.ReadFile(p)
		s0, s1 := was.Sys().(*syscall.Stat_t), st.Sys().(*syscall.Stat_t)
		if string(b) != c.content+"\n" || st.Mode() != was.Mode() || s1.Uid != s0.Uid || s1.Gid != s0.Gid || !st.ModTime().Equal(was.ModTime()) {
			t.Errorf("canary %s changed: mode %v uid %d gid %d mtime %v content %q (was mode %v uid %d gid %d mtime %v)",
				name, st.Mode(), s1.Uid, s1.Gid, st.ModTime(), b, was.Mode(), s0.Uid, s0.Gid, was.ModTime())
		}
	}
}

// shell is the preamble of every planting script: $CANARY is the host
// canary, $UP climbs from any runtime directory (as the daemon sees it) to
// the host's root, $SERVER is the test runtime binary (it makes sockets).
func (c *canary) shell() string {
	return fmt.Sprintf("CANARY='%s'; UP='%s'; SERVER=$(ls /usr/local/server/runtime-server /usr/local/src/runtime-server 2>/dev/null | head -n 1)\n",
		c.path, strings.TrimSuffix(strings.Repeat("../", 24), "/"))
}

// plant is one thing a runtime can leave at a path $P the daemon opens.
type plant struct {
	name string
	sh   string
	// refusal is what the daemon's error or warning names when it refuses
	// the plant as a build artifact or cache.
	refusal string
}

var hostilePlants = []plant{
	{"absolute symlink to a host file", `ln -sfn "$CANARY" "$P"`, "symbolic link"},
	{"relative symlink climbing out", `ln -sfn "$UP$CANARY" "$P"`, "symbolic link"},
	{"symlink to /proc/self/environ", `ln -sfn /proc/self/environ "$P"`, "symbolic link"},
	{"symlink through /proc/self/root", `ln -sfn "/proc/self/root$CANARY" "$P"`, "symbolic link"},
	{"symlink to /dev/zero", `ln -sfn /dev/zero "$P"`, "symbolic link"},
	{"FIFO", `rm -rf "$P"; busybox mkfifo "$P"`, "not a regular file"},
	{"socket", `rm -rf "$P"; "$SERVER" -mksock "$P"`, "not a regular file"},
	{"directory", `rm -rf "$P"; mkdir "$P"`, "not a regular file"},
	{"sparse 1 TiB file", `rm -rf "$P"; busybox truncate -s 1099511627776 "$P"`, "build size limit"},
}

// swapLoop swaps $P between a file of the runtime's own and a link to the
// canary, in the background, while the daemon opens it: a check of the name
// followed by an open of the name would lose this race. Each loop adds a
// line to /tmp/swaps-over when it ends.
const swapLoop = `( i=0; while [ $i -lt 300 ]; do ln -sfn "$CANARY" "$P.l"; mv -f "$P.l" "$P"; echo own-bytes > "$P.f"; mv -f "$P.f" "$P"; i=$((i+1)); done; echo >>/tmp/swaps-over ) >/dev/null 2>&1 &`

func plantAt(path, sh string) string {
	return fmt.Sprintf("P=\"%s\"; %s\n", path, sh)
}

// hostileRequest is x.request bounded by limit, returning the error instead
// of failing, so that a hang is reported as the daemon not answering.
func hostileRequest(x *executor, method, path string, body any, headers map[string]string, limit time.Duration) (*response, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, x.url+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+secret)
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := (&http.Client{Timeout: limit}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: no answer within %v: %w", method, path, limit, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: reading the answer within %v: %w", method, path, limit, err)
	}
	return &response{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

// shellExec runs script in runtime id as its function code (the test
// runtime's /shell behaviour), under the execution timeout.
func shellExec(t *testing.T, x *executor, id, path, script string) *response {
	t.Helper()
	body := map[string]any{"path": path, "method": "POST", "timeout": hostileExecTimeout}
	if script != "" { // the API refuses an empty body
		body["body"] = script
	}
	r, err := hostileRequest(x, "POST", "/v1/runtimes/"+id+"/executions", body, jsonAccept, hostileExecTimeout*time.Second+hostileGrace)
	if err != nil {
		t.Fatalf("execution with timeout %ds: %v", hostileExecTimeout, err)
	}
	return r
}

// execResult checks an execution answered 200 with the runtime's reply and
// nothing of the host, and returns its logs and errors.
func execResult(t *testing.T, c *canary, r *response, wantBody string) (logs, errs string) {
	t.Helper()
	if leak := c.leak(r.body); leak != "" {
		t.Fatalf("the execution's answer carries %s: %d %.2000s", leak, r.status, r.body)
	}
	if r.status != 200 {
		t.Fatalf("execution: %d %.2000s", r.status, r.body)
	}
	res := r.json(t)
	if res["statusCode"] != float64(200) || res["body"] != wantBody {
		t.Fatalf("the runtime's reply did not come through: statusCode %v body %q, want 200 %q", res["statusCode"], res["body"], wantBody)
	}
	logs, _ = res["logs"].(string)
	errs, _ = res["errors"].(string)
	return logs, errs
}

// onlyZeros tells whether s is what a sparse file holds: NULs, cut at the
// log cap with its notice.
func onlyZeros(s string) bool {
	s = strings.TrimSuffix(strings.TrimSuffix(s, "\nLog file has been truncated to 5.00MB."), "\nError file has been truncated to 5.00MB.")
	return strings.Trim(s, "\x00") == "" && len(s) <= 5<<20
}

// TestHostileExecutionLogs: v4/v5 runtimes answer with a log id, and the
// daemon reads and removes /mnt/logs/<id>_logs.log and _errors.log. Whatever
// the runtime leaves there, the execution answers with the runtime's reply,
// and logs/errors are empty or the runtime's own bytes.
func TestHostileExecutionLogs(t *testing.T) {
	c := newCanary(t)
	x := startExecutor(t)
	for _, version := range []string{"v5", "v4"} {
		id := "logs-" + version
		createIdle(t, x, id, map[string]any{"image": "openruntimes/test:" + version + "-1", "version": version})
		t.Run(version, func(t *testing.T) {
			for i, p := range hostilePlants {
				own := func(s string) bool { return s == "" }
				if p.name == "sparse 1 TiB file" {
					own = onlyZeros
				}
				t.Run(p.name+", planted by the execution itself", func(t *testing.T) {
					script := c.shell() + plantAt("$LOGS_DIR/${LOG_ID}_logs.log", p.sh) + plantAt("$LOGS_DIR/${LOG_ID}_errors.log", p.sh) + "echo planted"
					logs, errs := execResult(t, c, shellExec(t, x, id, "/shell", script), "planted\n")
					if !own(logs) || !own(errs) {
						t.Errorf("logs %.200q errors %.200q: not the runtime's own bytes", logs, errs)
					}
					c.intact(t)
				})
				t.Run(p.name+", planted by an earlier execution", func(t *testing.T) {
					early := fmt.Sprintf("early%d", i)
					script := c.shell() + plantAt("$LOGS_DIR/"+early+"_logs.log", p.sh) + plantAt("$LOGS_DIR/"+early+"_errors.log", p.sh) + "echo planted"
					execResult(t, c, shellExec(t, x, id, "/shell", script), "planted\n")
					logs, errs := execResult(t, c, shellExec(t, x, id, "/shell?logid="+early, "echo answered"), "answered\n")
					if !own(logs) || !own(errs) {
						t.Errorf("logs %.200q errors %.200q: not the runtime's own bytes", logs, errs)
					}
					c.intact(t)
				})
			}
			t.Run("swapped between its own file and a link while the daemon reads", func(t *testing.T) {
				script := c.shell() + plantAt("$LOGS_DIR/${LOG_ID}_logs.log", swapLoop) + plantAt("$LOGS_DIR/${LOG_ID}_errors.log", swapLoop) + "echo planted"
				for i := range 5 {
					logs, errs := execResult(t, c, shellExec(t, x, id, "/shell", script), "planted\n")
					for _, s := range []string{logs, errs} {
						if !strings.HasPrefix("own-bytes\n", s) {
							t.Errorf("log file read as %.200q: not the runtime's own bytes", s)
						}
					}
					// The loops outlive the execution, planting under its log
					// id, which the daemon lends again once it took the files:
					// the next execution would find a link to a path that is
					// not there in the runtime, as its logs, and fail. That is
					// the runtime's doing, not what is tested here.
					waitSwapsOver(t, x, id, 2*(i+1))
				}
				c.intact(t)
			})
			// A log id is a file name: one that climbs out of /mnt/logs
			// would make the daemon read <canary dir>/canary_logs.log.
			climb := strings.TrimSuffix(strings.Repeat("../", 24), "/") + c.dir + "/canary"
			for _, tc := range []struct{ name, logID string }{
				{"log id climbing out of /mnt/logs", climb},
				{"log id climbing out, %-encoded", strings.ReplaceAll(climb, "/", "%2F")},
				{"absolute log id", c.dir + "/canary"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					logs, errs := execResult(t, c, shellExec(t, x, id, "/shell?logid="+url.QueryEscape(tc.logID), "echo answered"), "answered\n")
					if logs != "" || errs != "" {
						t.Errorf("logs %.200q errors %.200q for log id %q", logs, errs, tc.logID)
					}
					c.intact(t)
				})
			}
			// And the runtime's own logs still come through.
			r := shellExec(t, x, id, "/logs", "")
			if logs, _ := execResult(t, c, r, "OK"); !strings.Contains(logs, "log line 1") {
				t.Fatalf("the runtime's own logs after the plants: %q", logs)
			}
		})
	}
}

// shellBody is an execution of script by the test runtime's /shell, its
// logs kept or not.
func shellBody(script string, logging bool, timeout int) map[string]any {
	return map[string]any{"path": "/shell", "method": "POST", "body": script, "logging": logging, "timeout": timeout}
}

// waitSwapsOver waits until n swap loops have ended in runtime id (see
// swapLoop), asking with executions that keep no logs.
func waitSwapsOver(t *testing.T, x *executor, id string, n int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		body := shellBody("cat /tmp/swaps-over 2>/dev/null | wc -l", false, hostileExecTimeout)
		r, err := hostileRequest(x, "POST", "/v1/runtimes/"+id+"/executions", body, jsonAccept, hostileExecTimeout*time.Second+hostileGrace)
		if err != nil {
			t.Fatal(err)
		}
		res := r.json(t)
		got, _ := res["body"].(string)
		if ended, err := strconv.Atoi(strings.TrimSpace(got)); err == nil && ended >= n {
			return
		}
		if r.status != 200 || time.Now().After(deadline) {
			t.Fatalf("waiting for %d swap loops to end: %d %.500s", n, r.status, r.body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// filesUnder lists the regular files beneath dir (none when it is missing),
// saying for each whether it holds the canary.
func filesUnder(t *testing.T, c *canary, dir string) (names []string, leaked []string) {
	t.Helper()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		if d.IsDir() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		names = append(names, fmt.Sprintf("%s (%v, %d bytes)", p, info.Mode().Type(), info.Size()))
		if !info.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		// What was stored is at most a few MiB here; a bigger file is a
		// finding of its own, and its first MiBs tell whether it leaks.
		b, _ := io.ReadAll(io.LimitReader(f, 16<<20))
		if leak := c.leak(b); leak != "" {
			leaked = append(leaked, p+": "+leak)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", dir, err)
	}
	return names, leaked
}

func hostileBuild(t *testing.T, x *executor, body map[string]any) *response {
	t.Helper()
	body["timeout"] = hostileBuildTimeout
	r, err := hostileRequest(x, "POST", "/v1/runtimes", body, nil, hostileBuildTimeout*time.Second+hostileGrace)
	if err != nil {
		t.Fatalf("build with timeout %ds: %v", hostileBuildTimeout, err)
	}
	return r
}

// TestHostileBuildArtifact: a build command that leaves something other than
// a regular file of its own at code.tar.gz gets a build error naming the
// refusal; nothing is uploaded.
func TestHostileBuildArtifact(t *testing.T) {
	c := newCanary(t)
	x := startExecutor(t)
	seq := 0
	for _, v := range []struct{ version, image, artifact string }{
		{"v5", "openruntimes/test:v5-1", "/mnt/code/code.tar.gz"},
		{"v2", "openruntimes/test:v2-1", "/usr/code/code.tar.gz"},
	} {
		t.Run(v.version, func(t *testing.T) {
			for _, p := range hostilePlants {
				t.Run(p.name, func(t *testing.T) {
					seq++
					dest := filepath.Join(shared.storage, fmt.Sprintf("hostile-artifact-%d", seq))
					r := hostileBuild(t, x, map[string]any{
						"runtimeId": fmt.Sprintf("artifact-%d", seq), "image": v.image, "version": v.version, "remove": true,
						"destination": dest, "command": c.shell() + "echo building\n" + plantAt(v.artifact, p.sh),
					})
					if leak := c.leak(r.body); leak != "" {
						t.Errorf("the build's answer carries %s: %.2000s", leak, r.body)
					}
					if r.status != 400 {
						t.Fatalf("build: %d %.2000s, want 400 build_failed", r.status, r.body)
					}
					e := r.json(t)
					msg, _ := e["message"].(string)
					if e["type"] != "build_failed" || !strings.Contains(msg, p.refusal) || !strings.Contains(msg, v.artifact) {
						t.Errorf("build error type %v message %q: want build_failed naming %s and %q", e["type"], msg, v.artifact, p.refusal)
					}
					t.Logf("refused: %s", msg)
					if names, leaked := filesUnder(t, c, dest); len(names) > 0 {
						t.Errorf("a refused artifact left files at the destination: %v (canary in: %v)", names, leaked)
					}
					c.intact(t)
				})
			}
		})
	}
	t.Run("v5/swapped between its own file and a link during the upload", func(t *testing.T) {
		for range 3 {
			seq++
			dest := filepath.Join(shared.storage, fmt.Sprintf("hostile-artifact-%d", seq))
			r := hostileBuild(t, x, map[string]any{
				"runtimeId": fmt.Sprintf("artifact-%d", seq), "image": "openruntimes/test:v5-1", "remove": true, "destination": dest,
				"command": c.shell() + plantAt("/mnt/code/code.tar.gz", `echo own-bytes > "$P"; `+swapLoop),
			})
			if leak := c.leak(r.body); leak != "" {
				t.Errorf("the build's answer carries %s: %.2000s", leak, r.body)
			}
			// Either the runtime's own file was uploaded, or the link was
			// refused; never the canary.
			if r.status != 201 && (r.status != 400 || r.json(t)["type"] != "build_failed") {
				t.Errorf("build: %d %.2000s", r.status, r.body)
			}
			if _, leaked := filesUnder(t, c, dest); len(leaked) > 0 {
				t.Errorf("the canary was uploaded: %v", leaked)
			}
		}
		c.intact(t)
	})
}

// TestHostileBuildCache: a build that leaves something other than a regular
// file of its own at /cache/stores.sqfs succeeds with a build-cache warning;
// nothing is saved, and the next build with that cacheKey sees nothing of it.
func TestHostileBuildCache(t *testing.T) {
	c := newCanary(t)
	x := startExecutor(t)
	cases := append([]plant(nil), hostilePlants...)
	cases = append(cases, plant{"swapped between its own file and a link during the save", `echo own-bytes > "$P"; ` + swapLoop, ""})
	for i, p := range cases {
		t.Run(p.name, func(t *testing.T) {
			key := fmt.Sprintf("hostile-%d.cache", i)
			r := hostileBuild(t, x, map[string]any{
				"runtimeId": fmt.Sprintf("cache-plant-%d", i), "image": "openruntimes/test:v5-1", "cacheKey": key, "remove": true,
				"command": c.shell() + "echo building\n" + plantAt("/cache/stores.sqfs", p.sh),
			})
			if leak := c.leak(r.body); leak != "" {
				t.Errorf("the build's answer carries %s: %.2000s", leak, r.body)
			}
			if r.status != 201 {
				t.Fatalf("build: %d %.2000s, want 201 with a build-cache warning", r.status, r.body)
			}
			out := buildOutput(t, r.json(t))
			if p.refusal != "" && (!strings.Contains(out, "[build cache] Warning") || !strings.Contains(out, p.refusal)) {
				t.Errorf("build output %q: want a [build cache] Warning naming %q", out, p.refusal)
			}
			for _, line := range strings.Split(out, "\n") {
				if strings.Contains(line, "[build cache]") {
					t.Logf("%s", line)
				}
			}
			names, leaked := filesUnder(t, c, filepath.Join(x.dataDir, "build-cache", key))
			if len(leaked) > 0 {
				t.Errorf("the canary was saved to the build cache: %v", leaked)
			}
			if p.refusal != "" && len(names) > 0 {
				t.Errorf("a refused cache was saved: %v", names)
			}
			r = hostileBuild(t, x, map[string]any{
				"runtimeId": fmt.Sprintf("cache-next-%d", i), "image": "openruntimes/test:v5-1", "cacheKey": key, "remove": true,
				"command": `ls -la /cache; head -c 65536 /cache/stores.sqfs 2>&1; echo; echo next-build`,
			})
			if leak := c.leak(r.body); leak != "" {
				t.Errorf("the next build with the cacheKey sees %s: %.2000s", leak, r.body)
			}
			if r.status != 201 || !strings.Contains(buildOutput(t, r.json(t)), "next-build") {
				t.Fatalf("next build: %d %.2000s", r.status, r.body)
			}
			c.intact(t)
		})
	}
}

// plantEverywhere leaves links, FIFOs, sockets, sparse files and deep
// directories in every directory of the runtime the daemon may touch at a
// restart, a DELETE or a shutdown, and leaves loops swapping links in the
// background.
func plantEverywhere(c *canary) string {
	var b strings.Builder
	var swaps []string
	b.WriteString(c.shell())
	for _, dir := range []string{"/mnt/logs", "/mnt/code", "/tmp", "/usr/local/server", "/"} {
		fmt.Fprintf(&b, "D=%s; mkdir -p $D\n", dir)
		fmt.Fprintf(&b, "mkdir -p $D/%s\n", strings.Repeat("deep/", 200))
		// In /mnt/logs, under the names a log id makes the daemon read.
		suffixes := []string{""}
		if dir == "/mnt/logs" {
			suffixes = []string{"_logs.log", "_errors.log"}
		}
		for _, s := range suffixes {
			b.WriteString(strings.NewReplacer("{S}", s).Replace(`ln -sfn "$CANARY" $D/link-abs{S}; ln -sfn "$UP$CANARY" $D/link-rel{S}; ln -sfn /proc/self/environ $D/link-environ{S}
ln -sfn "/proc/self/root$CANARY" $D/link-root{S}; ln -sfn /dev/zero $D/link-zero{S}; ln -sfn "$UP$(dirname "$CANARY")" $D/link-dir{S}
busybox mkfifo $D/fifo{S}; "$SERVER" -mksock $D/sock{S}; busybox truncate -s 1099511627776 $D/sparse{S}
`))
			swaps = append(swaps, plantAt(dir+"/swapped"+s, swapLoop))
		}
	}
	// The loops last: they go on while the daemon handles what follows.
	b.WriteString(strings.Join(swaps, ""))
	b.WriteString("echo planted")
	return b.String()
}

// TestHostileRestart: plants in /mnt/logs, /mnt/code and /tmp survive a
// restart of the main process (restartPolicy always); executions after it
// still answer with the runtime's own bytes, never the canary.
func TestHostileRestart(t *testing.T) {
	c := newCanary(t)
	x := startExecutor(t)
	src := source(t, map[string]string{"index.js": "x"})
	r, err := hostileRequest(x, "POST", "/v1/runtimes/restarts/executions", execBody(src, map[string]any{"restartPolicy": "always", "timeout": hostileExecTimeout}),
		jsonAccept, hostileExecTimeout*time.Second+hostileGrace)
	if err != nil || r.status != 200 {
		t.Fatalf("cold start: %v %+v", err, r)
	}
	execResult(t, c, shellExec(t, x, "restarts", "/shell", plantEverywhere(c)), "planted\n")
	// The function kills the runtime's main process; restartPolicy brings it back.
	if r := shellExec(t, x, "restarts", "/exit?code=1", ""); r.status != 500 || c.leak(r.body) != "" {
		t.Fatalf("execution that kills the main process: %d %.2000s", r.status, r.body)
	}
	// The old process may still be on its way out: a request reaching it
	// then gets a reset (a 500), which is not what this test is about. Wait
	// until the restarted one answers (a bounded number of tries).
	for i := 0; ; i++ {
		r := shellExec(t, x, "restarts", "/shell", "echo back")
		if leak := c.leak(r.body); leak != "" {
			t.Fatalf("while waiting for the restart: %s", leak)
		}
		if r.status == 200 {
			break
		}
		if i == 100 {
			t.Fatalf("the runtime did not come back: %d %.2000s", r.status, r.body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, logID := range []string{"link-abs", "link-rel", "link-environ", "link-root", "link-zero", "link-dir", "fifo", "sock", "sparse", "swapped"} {
		t.Run("log id "+logID+" after the restart", func(t *testing.T) {
			logs, errs := execResult(t, c, shellExec(t, x, "restarts", "/shell?logid="+logID, "echo after-restart"), "after-restart\n")
			own := func(s string) bool { return s == "" }
			switch logID {
			case "sparse":
				own = onlyZeros
			case "swapped":
				own = func(s string) bool { return strings.HasPrefix("own-bytes\n", s) }
			}
			if !own(logs) || !own(errs) {
				t.Errorf("logs %.200q errors %.200q: not the runtime's own bytes", logs, errs)
			}
		})
	}
	if logs, _ := execResult(t, c, shellExec(t, x, "restarts", "/logs", ""), "OK"); !strings.Contains(logs, "log line 1") {
		t.Fatalf("the runtime's own logs after the restart: %q", logs)
	}
	c.intact(t)
}

// TestHostilePlantsAtDeleteAndShutdown: with everything planted (and loops
// still swapping links), DELETE and SIGTERM complete and leave nothing.
func TestHostilePlantsAtDeleteAndShutdown(t *testing.T) {
	c := newCanary(t)
	t.Run("DELETE", func(t *testing.T) {
		x := startExecutor(t)
		createIdle(t, x, "planted", nil)
		execResult(t, c, shellExec(t, x, "planted", "/shell", plantEverywhere(c)), "planted\n")
		r, err := hostileRequest(x, "DELETE", "/v1/runtimes/planted", nil, nil, hostileGrace)
		if err != nil || r.status != 200 {
			t.Fatalf("DELETE: %v %+v", err, r)
		}
		x.waitClean(t)
		c.intact(t)
	})
	t.Run("SIGTERM", func(t *testing.T) {
		x := startExecutor(t)
		createIdle(t, x, "planted", nil)
		execResult(t, c, shellExec(t, x, "planted", "/shell", plantEverywhere(c)), "planted\n")
		x.stop() // fails the test when the executor does not exit cleanly in time
		x.assertClean()
		c.intact(t)
	})
}

// hostileDiskLimit is OPR_EXECUTOR_DISK_LIMIT here: small, so that filling
// it costs little.
const (
	hostileDiskLimit  = 64 << 20
	hostileDiskInodes = 4096
	hostileFill       = 16 * hostileDiskLimit // what the runtime tries to write
)

func freeBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize
}

// TestHostileDiskCaps: a runtime filling its root or a mounted directory
// gets ENOSPC at OPR_EXECUTOR_DISK_LIMIT, and the host keeps its space; one
// making many files hits OPR_EXECUTOR_DISK_INODES. Its disk is one of the
// daemon's spares (made ahead of need, with the same caps), and the spare
// is made again once the runtime is created.
func TestHostileDiskCaps(t *testing.T) {
	x := startExecutor(t, "OPR_EXECUTOR_DISK_LIMIT="+strconv.Itoa(hostileDiskLimit), "OPR_EXECUTOR_DISK_INODES="+strconv.Itoa(hostileDiskInodes))
	waitLog(t, x, "spare disk made", 2)
	createIdle(t, x, "filler", nil)
	waitLogLine(t, x, `msg="runtime prepared"`, " runtime=filler ", " spareDisk=true")
	waitLog(t, x, "spare disk made", 3)
	for _, dir := range []string{"/usr/local/server", "/tmp", "/mnt/code", "/mnt/logs"} {
		t.Run("bytes into "+dir, func(t *testing.T) {
			before := freeBytes(t, x.dataDir)
			// Sixteen times the cap: without it the host would lose all of it.
			r := shellExec(t, x, "filler", "/shell", fmt.Sprintf("dd if=/dev/zero of=%s/fill bs=1M count=%d 2>&1; sync; echo filled", dir, hostileFill>>20))
			after := freeBytes(t, x.dataDir)
			out, _ := r.json(t)["body"].(string)
			shellExec(t, x, "filler", "/shell", "rm -f "+dir+"/fill")
			if r.status != 200 || !strings.Contains(out, "No space left on device") {
				t.Errorf("writing %d MiB into %s: %d %q, want dd to report No space left on device", hostileFill>>20, dir, r.status, out)
			}
			// Other processes on the machine write too: allow them a
			// quarter of what the runtime tried.
			t.Logf("%s: %q; the host's free space shrank by %d KiB", dir, out, (before-after)>>10)
			if shrunk := before - after; shrunk > hostileDiskLimit+hostileFill/4 {
				t.Errorf("the host's free space shrank by %d MiB while the runtime's cap is %d MiB", shrunk>>20, hostileDiskLimit>>20)
			}
		})
	}
	t.Run("inodes", func(t *testing.T) {
		const tries = 50000
		// true, not ":": a failed redirection of a special builtin ends
		// the shell before it reports the count.
		r := shellExec(t, x, "filler", "/shell", fmt.Sprintf(`mkdir -p /tmp/many; i=0; while [ $i -lt %d ]; do true > /tmp/many/f$i || break; i=$((i+1)); done; echo created=$i; rm -rf /tmp/many`, tries))
		out, _ := r.json(t)["body"].(string)
		created := -1
		if i := strings.Index(out, "created="); i >= 0 {
			created, _ = strconv.Atoi(strings.Fields(out[i+len("created="):])[0])
		}
		if !strings.Contains(out, "No space left on device") || created < 0 || created > 2*hostileDiskInodes {
			t.Errorf("making %d files with an inode cap of %d: %d %q", tries, hostileDiskInodes, r.status, out)
		}
	})
	// The runtime still works once it has freed its disk.
	if r := shellExec(t, x, "filler", "/logs", ""); r.status != 200 || !strings.Contains(r.json(t)["logs"].(string), "log line 1") {
		t.Fatalf("after filling the disk: %d %.2000s", r.status, r.body)
	}
}

// TestHostilePidsDefault: without OPR_EXECUTOR_PIDS_LIMIT a runtime gets
// 1024 processes, and a fork bomb stops there.
func TestHostilePidsDefault(t *testing.T) {
	x := startExecutor(t)
	createIdle(t, x, "forks", nil)
	if max := strings.TrimSpace(readRuntimeCgroupFiles(t, x, "pids.max")); max != "1024" {
		t.Fatalf("pids.max %q, want 1024", max)
	}
	// The bomb itself may fail once it cannot fork any more: what counts is
	// what the host's cgroup says.
	command(t, x, "forks", `i=0; while [ $i -lt 1200 ]; do sleep 60 >/dev/null 2>&1 & i=$((i+1)); done 2>/dev/null; true`)
	current := readRuntimeCgroupFiles(t, x, "pids.current")
	events := readRuntimeCgroupFiles(t, x, "pids.events")
	if n, err := strconv.Atoi(strings.TrimSpace(current)); err != nil || n > 1024 {
		t.Fatalf("pids.current after the bomb: %q", current)
	}
	if !strings.Contains(events, "max ") || strings.Contains(events, "max 0") {
		t.Fatalf("pids.events shows no refused fork: %q", events)
	}
	if r, err := hostileRequest(x, "DELETE", "/v1/runtimes/forks", nil, nil, hostileGrace); err != nil || r.status != 200 {
		t.Fatalf("DELETE after the bomb: %v %+v", err, r)
	}
	x.waitClean(t)
}

// An image cannot choose where executor-init is mounted: one whose
// /.executor-init is a symbolic link (here to the image's own server, which
// a restart or command would then run trusted to install the seccomp
// filter) or a directory is refused with runtime_failed naming the path,
// leaving nothing behind. Without executor-init (OPR_EXECUTOR_INIT=off)
// nothing is mounted there and the same image runs.
func TestHostileImageAtInitPath(t *testing.T) {
	for _, tc := range []struct {
		tag   string
		entry testenv.OwnedEntry
		is    string
	}{
		{"v5-initlink", testenv.OwnedEntry{Path: oci.InitPath, Mode: 0o777, Link: "/usr/local/bin/runtime-server"}, "a symbolic link"},
		{"v5-initdir", testenv.OwnedEntry{Path: oci.InitPath, Mode: 0o755, Dir: true}, "a directory"},
	} {
		t.Run(tc.tag, func(t *testing.T) {
			image := "openruntimes/test:" + tc.tag
			layout, err := testenv.BuildOwnersImage(context.Background(), testenv.OwnersImageOptions{
				ImageOptions: testenv.ImageOptions{
					Dir: filepath.Join(t.TempDir(), tc.tag), Protocol: testenv.ProtocolV5, WithBash: true, Tag: tc.tag,
					ServerBinary: filepath.Join(shared.work, "runtime-server"),
				},
				Entries: []testenv.OwnedEntry{tc.entry},
			})
			if err != nil {
				t.Fatal(err)
			}
			if err := testenv.PushImage(context.Background(), layout, tc.tag, shared.registry.Addr()+"/"+image, true); err != nil {
				t.Fatal(err)
			}
			src := source(t, map[string]string{"index.js": "x"})
			// With the prewarm pool (the default): it tries the image once
			// for the request's demand, and gives up on it.
			x := startExecutor(t, "OPR_EXECUTOR_PREWARM=4")
			r := x.request(t, "POST", "/v1/runtimes/initpath/executions", execBody(src, map[string]any{"image": image, "path": "/echo"}), jsonAccept)
			want := fmt.Sprintf("Image %s cannot be run: %s in the runtime's root is %s", image, oci.InitPath, tc.is)
			assertAPIError(t, r, 400, want)
			if typ := r.json(t)["type"]; typ != "runtime_failed" {
				t.Errorf("type %v, want runtime_failed: %s", typ, r.body)
			}
			if l := x.request(t, "GET", "/v1/runtimes", nil, nil); l.status != 200 || strings.TrimSpace(string(l.body)) != "[]" {
				t.Errorf("runtimes after the refusal: %d %s", l.status, l.body)
			}
			const prewarmFailed = "prewarming a sandbox failed"
			for deadline := time.Now().Add(30 * time.Second); x.logs.Count(prewarmFailed) == 0; time.Sleep(20 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("the pool never tried the image:\n%s", x.logs.String())
				}
			}
			time.Sleep(2500 * time.Millisecond) // the pool looks again every second
			if n := x.logs.Count(prewarmFailed); n != 1 || x.logs.Count(want) < 2 {
				t.Errorf("%d prewarms of the image failed, want 1, with the same message as the request's:\n%s", n, x.logs.String())
			}
			x.waitClean(t) // a failed cold start's parts are released off the request's path

			off := startExecutor(t, "OPR_EXECUTOR_INIT=off")
			imagesColdStart(t, off, "initpath", image)
		})
	}
}

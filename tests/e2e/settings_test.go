package e2e

// Settings driven through bin/executor: each test starts the daemon with a
// setting and with its default, and checks from inside a runtime (or through
// the API) that the setting changes what it says it changes.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// zombieScript leaves an orphan that exits at once (its parent, the inner
// sh, is gone before it), waits for it to have exited and prints how many
// zombies the runtime's PID namespace holds, and what PID 1 is.
const zombieScript = `sh -c 'sleep 0.2 & exit 0'; sleep 2; ` +
	`z=0; for s in /proc/[0-9]*/stat; do st=$(cut -d' ' -f3 "$s" 2>/dev/null); [ "$st" = Z ] && z=$((z+1)); done; ` +
	`echo "zombies=$z"; echo "pid1=$(tr '\0' ' ' </proc/1/cmdline)"`

// TestInitSetting: by default every runtime's PID 1 is executor-init, which
// reaps the orphans a command leaves; with OPR_EXECUTOR_INIT=off PID 1 is
// the runtime's own command and nothing reaps them (README: "off runs the
// runtime's command as PID 1").
func TestInitSetting(t *testing.T) {
	for _, tc := range []struct {
		name      string
		env       []string
		init      bool // PID 1 is executor-init
		zombiesOK bool // an orphan may stay a zombie
	}{
		{"default", nil, true, false},
		{"off", []string{"OPR_EXECUTOR_INIT=off"}, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := startExecutor(t, tc.env...)
			createIdle(t, x, "init", nil)
			// An execution answers once the server listens: the
			// command chain has reached its last exec by then.
			if r := x.request(t, "POST", "/v1/runtimes/init/executions", map[string]any{"path": "/"}, jsonAccept); r.status != 200 {
				t.Fatalf("execution: %d %s", r.status, r.body)
			}
			out, status := command(t, x, "init", zombieScript)
			if status != 200 {
				t.Fatalf("command: %d %s", status, out)
			}
			t.Logf("inside the runtime:\n%s", out)
			var zombies int
			var pid1 string
			for _, l := range logLines(out) {
				if v, ok := strings.CutPrefix(l, "zombies="); ok {
					fmt.Sscan(v, &zombies)
				}
				if v, ok := strings.CutPrefix(l, "pid1="); ok {
					pid1 = v
				}
			}
			if pid1 == "" {
				t.Fatalf("no PID 1 command line in %q", out)
			}
			if got := strings.Contains(pid1, "executor-init"); got != tc.init {
				t.Errorf("PID 1 is %q: executor-init %v, want %v", pid1, got, tc.init)
			}
			if !tc.init && !strings.Contains(pid1, "sh") && !strings.Contains(pid1, "runtime-server") {
				t.Errorf("PID 1 is %q, want the runtime's own command (its shell or server)", pid1)
			}
			switch {
			case !tc.zombiesOK && zombies != 0:
				t.Errorf("%d zombies under executor-init, want them reaped", zombies)
			case tc.zombiesOK && zombies == 0:
				t.Errorf("no zombie with OPR_EXECUTOR_INIT=off: PID 1 %q reaps orphans, so the README's reason for executor-init does not show", pid1)
			}
		})
	}
}

// attack runs one of the test runtime's /attack probes and says whether it
// worked.
func attack(t *testing.T, x *executor, id, what string) (bool, string) {
	t.Helper()
	r := x.request(t, "POST", "/v1/runtimes/"+id+"/executions", map[string]any{"path": "/attack?what=" + what}, jsonAccept)
	if r.status != 200 {
		t.Fatalf("/attack?what=%s: %d %s", what, r.status, r.body)
	}
	var res struct {
		OK     bool   `json:"ok"`
		Detail string `json:"detail"`
	}
	body, _ := r.json(t)["body"].(string)
	if err := json.Unmarshal([]byte(body), &res); err != nil {
		t.Fatalf("/attack?what=%s: %v: %s", what, err, r.body)
	}
	return res.OK, res.Detail
}

// TestSeccompSetting: the default profile refuses keyctl (moby's profile
// does); OPR_EXECUTOR_SECCOMP=unconfined lets the same call through. Other
// layers (the user namespace) do not refuse it, so only the profile can.
func TestSeccompSetting(t *testing.T) {
	for _, tc := range []struct {
		name  string
		env   []string
		works bool
	}{
		{"default", nil, false},
		{"unconfined", []string{"OPR_EXECUTOR_SECCOMP=unconfined"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := startExecutor(t, tc.env...)
			createIdle(t, x, "sc", nil)
			ok, detail := attack(t, x, "sc", "keyctl")
			t.Logf("keyctl(JOIN_SESSION_KEYRING): ok=%v %s", ok, detail)
			if ok != tc.works {
				t.Errorf("keyctl worked: %v, want %v (%s)", ok, tc.works, detail)
			}
			if !tc.works && !strings.Contains(detail, "operation not permitted") {
				t.Errorf("keyctl refused with %q, want EPERM from the profile", detail)
			}
		})
	}
}

// TestOversizedBody: a request body past the API's limit is refused with 413
// in the API's error format, and the daemon serves on.
func TestOversizedBody(t *testing.T) {
	x := startExecutor(t)
	// 1 MiB past the API's 22 MiB limit (api/params.go): the daemon has
	// read nearly all of it when it refuses, so the client has written it
	// and reads the reply (a body far past it may meet a closed connection).
	body := bytes.Repeat([]byte("a"), 23<<20)
	payload := append([]byte(`{"runtimeId":"big","image":"openruntimes/test:v5-1","command":"`), body...)
	payload = append(payload, `"}`...)
	req, err := http.NewRequestWithContext(context.Background(), "POST", x.url+"/v1/runtimes", bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("23 MiB body: %v", err)
	}
	var reply map[string]any
	decErr := json.NewDecoder(resp.Body).Decode(&reply)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge || decErr != nil {
		t.Fatalf("23 MiB body: status %d (%v), want 413 with a JSON body", resp.StatusCode, decErr)
	}
	if reply["code"] != float64(413) || reply["message"] != "Request body is too large." {
		t.Errorf("413 reply %v, want the API's error format with code 413", reply)
	}
	if _, ok := reply["type"].(string); !ok {
		t.Errorf("413 reply %v has no type", reply)
	}
	if r := x.request(t, "GET", "/v1/runtimes", nil, nil); r.status != 200 {
		t.Fatalf("after the oversized body: %d %s", r.status, r.body)
	}
}

// TestProcSysAndSysWritesRefused: /proc/sys and /sys are read-only inside a
// runtime, namespaced sysctls (its own UTS and network namespace) included,
// which the kernel would otherwise let its root change.
func TestProcSysAndSysWritesRefused(t *testing.T) {
	x := startExecutor(t)
	createIdle(t, x, "rw", nil)
	for _, path := range []string{
		"/proc/sys/kernel/domainname",
		"/proc/sys/kernel/hostname",
		"/proc/sys/net/ipv4/ip_forward",
		"/proc/sys/net/ipv4/conf/lo/forwarding",
		"/proc/sys/vm/drop_caches",
		"/sys/class/net/lo/mtu",
		"/sys/kernel/mm/transparent_hugepage/enabled",
	} {
		t.Run(path, func(t *testing.T) {
			// Read first: the value written back is the current one,
			// so a write that got through changes nothing.
			script := fmt.Sprintf(`p=%s; v=$(cat "$p" 2>/dev/null | head -n1); [ -n "$v" ] || v=1; case "$v" in *'['*) v=$(echo "$v" | sed 's/.*\[\(.*\)\].*/\1/');; esac; echo "$v" > "$p"; echo rc=$?`, path)
			out, status := command(t, x, "rw", script+" 2>&1")
			if status != 200 {
				t.Fatalf("command: %d %s", status, out)
			}
			t.Logf("%s: %q", path, out)
			if strings.Contains(out, "rc=0") {
				t.Fatalf("wrote %s from inside a runtime: %q", path, out)
			}
			if !strings.Contains(out, "Read-only file system") && !strings.Contains(out, "Permission denied") {
				t.Errorf("write to %s refused with %q, want a read-only file system or permission denied", path, out)
			}
		})
	}
}

// syscallProbe writes a line through the write system call; built for 386 it
// makes the 32-bit calls (int 0x80) the profile must refuse.
const syscallProbe = `package main

import "os"

func main() {
	os.Stdout.WriteString("probe-ran\n")
}
`

// buildProbe builds syscallProbe for goarch, statically.
func buildProbe(t *testing.T, goarch string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(syscallProbe), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module probe\n\ngo 1.21\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "probe-"+goarch)
	cmd := exec.Command("go", "build", "-o", out, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOARCH="+goarch, "CGO_ENABLED=0", "GOFLAGS=")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the %s probe: %v\n%s", goarch, err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Test32BitSyscallsRefused: the same static program runs as an amd64 binary
// and fails as a 386 one, whose 32-bit system calls the profile refuses; the
// host runs the 386 build (the kernel has IA-32 emulation), so only the
// profile can be what stops it.
func Test32BitSyscallsRefused(t *testing.T) {
	i386 := buildProbe(t, "386")
	hostDir := t.TempDir()
	p := filepath.Join(hostDir, "probe-386")
	if err := os.WriteFile(p, []byte(i386), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(p).CombinedOutput(); err != nil || string(out) != "probe-ran\n" {
		// Without IA-32 emulation the kernel refuses every 32-bit
		// entry itself (a Firecracker guest's kernel, for one).
		t.Skipf("this kernel does not run 386 binaries (%v %q): nothing for the profile to refuse", err, out)
	}
	amd64 := buildProbe(t, "amd64")
	x := startExecutor(t)
	createIdle(t, x, "abi", map[string]any{"source": source(t, map[string]string{"index.js": "x", "probe-amd64": amd64, "probe-386": i386})})
	// The start script unpacks the source before the server listens.
	if r := x.request(t, "POST", "/v1/runtimes/abi/executions", map[string]any{"path": "/"}, jsonAccept); r.status != 200 {
		t.Fatalf("execution: %d %s", r.status, r.body)
	}
	const dir = "/usr/local/server/src/function"
	for _, tc := range []struct {
		arch  string
		works bool
	}{{"amd64", true}, {"386", false}} {
		out, status := command(t, x, "abi", fmt.Sprintf("chmod 755 %[1]s/probe-%[2]s && %[1]s/probe-%[2]s 2>&1; echo rc=$?", dir, tc.arch))
		if status != 200 {
			t.Fatalf("%s: command: %d %s", tc.arch, status, out)
		}
		t.Logf("%s probe: %q", tc.arch, out)
		ran := strings.Contains(out, "probe-ran") && strings.Contains(out, "rc=0")
		if ran != tc.works {
			t.Errorf("%s probe ran: %v, want %v (%q)", tc.arch, ran, tc.works, out)
		}
	}
}

// detachedStart starts the test runtime's server in the background under a
// main process that outlives it: once the server is killed the runtime
// refuses connections while its main process runs on, as a restarting one
// does, and the daemon retries.
const detachedStart = `cp /tmp/code.tar.gz /mnt/code/code.tar.gz && { nohup helpers/start.sh "sh helpers/server.sh" & } && exec sleep 100000`

// killServer ends the runtime's server process, not its main process.
const killServer = `for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = runtime-server ] && kill -9 ${p#/proc/}; done; echo killed`

// refusedAttempts has a runtime of x refuse an execution's connections until
// the execution's budget (timeout 1 s, plus the daemon's slack for v3+
// runtimes) runs out, and returns how many times the daemon sent it.
func refusedAttempts(t *testing.T, x *executor, id string) int {
	t.Helper()
	createIdle(t, x, id, map[string]any{"runtimeEntrypoint": detachedStart})
	if r := x.request(t, "POST", "/v1/runtimes/"+id+"/executions", map[string]any{"path": "/"}, jsonAccept); r.status != 200 {
		t.Fatalf("execution: %d %s", r.status, r.body)
	}
	if out, status := command(t, x, id, killServer); status != 200 || !strings.Contains(out, "killed") {
		t.Fatalf("kill the server: %d %s", status, out)
	}
	// The daemon's kept-alive connection to the dead server is reset on
	// first use (curl error 56, not retried): this execution spends it.
	if r := x.request(t, "POST", "/v1/runtimes/"+id+"/executions", map[string]any{"path": "/", "timeout": 1}, jsonAccept); r.status != 500 {
		t.Fatalf("first execution after the server's death: %d %s", r.status, r.body)
	}
	// Each send is a SYN the runtime's network namespace answers with a
	// RST (nothing listens): its Tcp OutRsts counter counts them. The
	// daemon logs no attempt count when the budget ends the retries.
	before := outRsts(t, x, id)
	r := x.request(t, "POST", "/v1/runtimes/"+id+"/executions", map[string]any{"path": "/", "timeout": 1}, jsonAccept)
	if r.status != 500 || !strings.Contains(string(r.body), "Error Number: 7") && !strings.Contains(string(r.body), "Error Number: 28") {
		t.Fatalf("execution to a refusing runtime: %d %s, want a 500 curl error (7 or 28)", r.status, r.body)
	}
	attempts := outRsts(t, x, id) - before
	if r := x.request(t, "DELETE", "/v1/runtimes/"+id, nil, nil); r.status != 200 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	return attempts
}

// outRsts reads the Tcp OutRsts counter of the runtime's network namespace.
func outRsts(t *testing.T, x *executor, id string) int {
	t.Helper()
	out, status := command(t, x, id, "grep '^Tcp:' /proc/net/snmp")
	lines := logLines(out)
	if status != 200 || len(lines) != 2 {
		t.Fatalf("/proc/net/snmp: %d %q", status, out)
	}
	names, values := strings.Fields(lines[0]), strings.Fields(lines[1])
	for i, n := range names {
		if n == "OutRsts" && i < len(values) {
			v, err := strconv.Atoi(values[i])
			if err != nil {
				t.Fatalf("OutRsts %q: %v", values[i], err)
			}
			return v
		}
	}
	t.Fatalf("no OutRsts in %q", out)
	return 0
}

// TestRetryDelaySetting: an execution a runtime refuses is sent again every
// OPR_EXECUTOR_RETRY_DELAY_MS while its budget lasts (1 s timeout plus the
// daemon's 5 s slack for v3+ runtimes): a delay of 1000 ms allows at most 7
// sends in those 6 s, one of 100 ms many more. The bounds are counts, loose
// enough for a loaded machine: a delay is never shorter than asked, so the
// upper one is exact.
func TestRetryDelaySetting(t *testing.T) {
	for _, tc := range []struct {
		delay    string
		min, max int
	}{
		{"100", 15, 61},
		{"1000", 2, 7},
	} {
		t.Run(tc.delay+"ms", func(t *testing.T) {
			x := startExecutor(t, "OPR_EXECUTOR_RETRY_DELAY_MS="+tc.delay)
			n := refusedAttempts(t, x, "refuses")
			t.Logf("OPR_EXECUTOR_RETRY_DELAY_MS=%s: sent %d times", tc.delay, n)
			if n < tc.min || n > tc.max {
				t.Errorf("sent %d times, want %d to %d", n, tc.min, tc.max)
			}
			x.waitClean(t)
		})
	}
}

// TestRetryAttemptsSetting: the README has OPR_EXECUTOR_RETRY_ATTEMPTS as the
// minimum number of sends to a refusing runtime, and the spec (6.5) the loop
// going on while fewer were made or the budget lasts. The daemon's budget
// context ends the loop in any case, so the setting changes nothing: 20
// attempts 1000 ms apart are cut at about 7, the same as with the default 5.
func TestRetryAttemptsSetting(t *testing.T) {
	if os.Getenv("E2E_KNOWN_BUGS") == "" {
		t.Skip("known bug: OPR_EXECUTOR_RETRY_ATTEMPTS has no effect, the execution's budget ends the retries first (set E2E_KNOWN_BUGS=1 to run)")
	}
	x := startExecutor(t, "OPR_EXECUTOR_RETRY_DELAY_MS=1000", "OPR_EXECUTOR_RETRY_ATTEMPTS=20")
	n := refusedAttempts(t, x, "refuses")
	t.Logf("OPR_EXECUTOR_RETRY_ATTEMPTS=20, DELAY 1000 ms: sent %d times", n)
	if n < 20 {
		t.Errorf("sent %d times, want at least OPR_EXECUTOR_RETRY_ATTEMPTS=20", n)
	}
	x.waitClean(t)
}

package e2e

// Settings driven through bin/executor: each test starts the daemon with a
// setting and with its default, and checks from inside a runtime (or through
// the API) that the setting changes what it says it changes.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"executor/netns"
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

// buildProbe builds testdata/syscallprobe for goarch, statically, or reads
// it from $E2E_PROBE_DIR/probe-<goarch> where the tests run without Go (the
// cgroup v2 guest, whose Debian kernel has the IA-32 emulation this one
// lacks).
func buildProbe(t *testing.T, goarch string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "probe-"+goarch)
	if dir := os.Getenv("E2E_PROBE_DIR"); dir != "" {
		out = filepath.Join(dir, "probe-"+goarch)
	} else {
		cmd := exec.Command("go", "build", "-o", out, "./testdata/syscallprobe")
		cmd.Env = append(os.Environ(), "GOARCH="+goarch, "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build the %s probe: %v\n%s", goarch, err, b)
		}
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
		// entry itself (a Firecracker guest's kernel, for one, like
		// these machines'); make test-cgroup2 runs this test under
		// Debian's kernel, which has it.
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

// TestRetryAttemptsSetting: OPR_EXECUTOR_RETRY_ATTEMPTS is the minimum
// number of sends to a refusing runtime (spec 6.5: the loop goes on while
// fewer were made or the budget lasts): 10 attempts 1000 ms apart outlast
// the execution's budget (about 6 s for a 1 s timeout: the readiness wait's
// allowance), which alone allows about 6.
func TestRetryAttemptsSetting(t *testing.T) {
	x := startExecutor(t, "OPR_EXECUTOR_RETRY_DELAY_MS=1000", "OPR_EXECUTOR_RETRY_ATTEMPTS=10")
	n := refusedAttempts(t, x, "refuses")
	t.Logf("OPR_EXECUTOR_RETRY_ATTEMPTS=10, DELAY 1000 ms: sent %d times", n)
	if n < 10 {
		t.Errorf("sent %d times, want at least OPR_EXECUTOR_RETRY_ATTEMPTS=10", n)
	}
	x.waitClean(t)
}

func TestRuntimesPrePull(t *testing.T) {
	x := startExecutor(t, "OPR_EXECUTOR_RUNTIMES=test-1", "OPR_EXECUTOR_RUNTIME_VERSIONS=v4,v5")
	want := []string{"openruntimes/test:v5-1", "openruntimes/test:v4-1"}
	for _, ref := range want {
		rec := imagesRecord(x, "docker://docker.io/"+ref)
		imagesWaitFor(t, 60*time.Second, "pre-pull of "+ref, func() bool { return imagesExists(rec) })
	}
	pulled := func() []string {
		var refs []string
		for _, l := range logLines(x.logs.String()) {
			if strings.Contains(l, `msg="image pulled"`) {
				for _, f := range strings.Fields(l) {
					if v, ok := strings.CutPrefix(f, "ref="); ok {
						refs = append(refs, v)
					}
				}
			}
		}
		return refs
	}
	// The records appear when the pulls end; their log lines with them.
	imagesWaitFor(t, 10*time.Second, "the pulls' log lines", func() bool { return len(pulled()) >= len(want) })
	if got := pulled(); len(got) != len(want) {
		t.Fatalf("pulled at start: %v, want %v", got, want)
	}
	if imagesExists(imagesRecord(x, "docker://docker.io/openruntimes/test:v3-1")) {
		t.Error("v3-1 was pulled: v3 is not an accepted version")
	}
	imagesColdStart(t, x, "prepulled", "openruntimes/test:v5-1")
	if got := pulled(); len(got) != len(want) {
		t.Errorf("pulls after the cold start: %v, want only the %d at start", got, len(want))
	}
	if r := x.request(t, "DELETE", "/v1/runtimes/prepulled", nil, nil); r.status != 200 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	x.waitClean(t)
}

// TestSeveralNetworks: with two names in OPR_EXECUTOR_NETWORK the daemon
// makes a bridge for each, on half of OPR_EXECUTOR_SUBNET each, and gives
// runtimes one or the other; both serve, and both go at shutdown.
func TestSeveralNetworks(t *testing.T) {
	names := []string{fmt.Sprintf("e2e-nets-a-%d", os.Getpid()), fmt.Sprintf("e2e-nets-b-%d", os.Getpid())}
	x := startExecutor(t, "OPR_EXECUTOR_NETWORK="+strings.Join(names, ","))
	subnet := x.subnet(t)
	halves := []netip.Prefix{
		netip.PrefixFrom(subnet.Addr(), subnet.Bits()+1),
		netip.PrefixFrom(netip.AddrFrom4(func() [4]byte {
			a := subnet.Addr().As4()
			a[3] |= 1 << (31 - subnet.Bits()) // the /24's upper half
			return a
		}()), subnet.Bits()+1),
	}
	bridges := make([]string, len(names))
	for i, n := range names {
		bridges[i] = netns.BridgeName(n)
		l, err := netlink.LinkByName(bridges[i])
		if err != nil {
			t.Fatalf("bridge %s of network %s: %v", bridges[i], n, err)
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_V4)
		if err != nil || len(addrs) != 1 {
			t.Fatalf("addresses of %s: %v %v", bridges[i], addrs, err)
		}
		got, _ := netip.AddrFromSlice(addrs[0].IP.To4())
		if want := halves[i].Addr().Next(); got != want || addrs[0].Mask.String() != net.CIDRMask(halves[i].Bits(), 32).String() {
			t.Errorf("%s has %v, want %v/%d (its half of %v)", bridges[i], addrs[0].IPNet, want, halves[i].Bits(), subnet)
		}
	}
	t.Cleanup(func() {
		x.stop()
		for _, b := range bridges {
			if _, err := netlink.LinkByName(b); err == nil {
				t.Errorf("bridge %s left behind after shutdown", b)
			}
		}
	})
	// Random placement: 12 runtimes all on one of 2 networks is a 1 in
	// 2048 chance.
	const n = 12
	src := source(t, map[string]string{"index.js": "x"})
	for i := range n {
		id := fmt.Sprintf("net-%d", i)
		if r := x.request(t, "POST", "/v1/runtimes/"+id+"/executions", execBody(src, nil), jsonAccept); r.status != 200 || r.json(t)["statusCode"] != float64(200) {
			t.Fatalf("%s: %d %s", id, r.status, r.body)
		}
	}
	total := 0
	for i, b := range bridges {
		ents, err := os.ReadDir(filepath.Join(x.dataDir, "networks", b, "leases"))
		if err != nil {
			t.Fatal(err)
		}
		k := 0
		for _, e := range ents {
			a, err := netip.ParseAddr(e.Name())
			if err != nil {
				continue
			}
			k++
			if !halves[i].Contains(a) {
				t.Errorf("%s leased %v, outside its half %v", b, a, halves[i])
			}
		}
		t.Logf("network %s (%s): %d runtimes", names[i], b, k)
		if k == 0 {
			t.Errorf("no runtime on network %s", names[i])
		}
		total += k
	}
	if total != n {
		t.Errorf("%d leases for %d runtimes", total, n)
	}
	for i := range n {
		if r := x.request(t, "DELETE", fmt.Sprintf("/v1/runtimes/net-%d", i), nil, nil); r.status != 200 {
			t.Fatalf("delete: %d %s", r.status, r.body)
		}
	}
	x.waitClean(t)
}

// rawCall is one API request from a goroutine: no t.Fatal there.
type rawCall struct {
	status int
	body   string
	err    error
}

func (x *executor) call(method, path string, body any, timeout time.Duration) rawCall {
	var rd *bytes.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return rawCall{err: err}
		}
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, err := http.NewRequest(method, x.url+path, rd)
	if err != nil {
		return rawCall{err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+secret)
	resp, err := (&http.Client{Timeout: timeout}).Do(req)
	if err != nil {
		return rawCall{err: err}
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, err = b.ReadFrom(resp.Body)
	return rawCall{status: resp.StatusCode, body: b.String(), err: err}
}

// TestDefaultTimeoutsOf600s: a command and a build-log stream without a
// `timeout` outlive 65 s, which the same requests with timeout 60 do not:
// their defaults are above every smaller round value a mistake could have
// set (the spec's is 600 s; waiting that out is not worth it). Slow: about
// 70 s, all four requests at once; skipped with -short.
func TestDefaultTimeoutsOf600s(t *testing.T) {
	if testing.Short() {
		t.Skip("waits 65 s")
	}
	x := startExecutor(t)
	createIdle(t, x, "cmds", nil)
	const slow = "echo started-early; sleep 65; echo finished-late"
	type result struct {
		name string
		rawCall
	}
	results := make(chan result, 5)
	run := func(name string, f func() rawCall) {
		go func() { results <- result{name, f()} }()
	}
	run("command default", func() rawCall {
		return x.call("POST", "/v1/runtimes/cmds/commands", map[string]any{"command": slow}, 3*time.Minute)
	})
	run("command timeout 60", func() rawCall {
		return x.call("POST", "/v1/runtimes/cmds/commands", map[string]any{"command": slow, "timeout": 60}, 3*time.Minute)
	})
	run("build", func() rawCall {
		return x.call("POST", "/v1/runtimes", map[string]any{
			"runtimeId": "slow-build", "image": "openruntimes/test:v5-1", "remove": true, "timeout": 150,
			"source": source(t, map[string]string{"index.js": "x"}), "entrypoint": "index.js", "command": slow,
		}, 3*time.Minute)
	})
	// The streams wait for the runtime to appear (the create is on its way).
	run("logs default", func() rawCall { return x.call("GET", "/v1/runtimes/slow-build/logs", nil, 3*time.Minute) })
	run("logs timeout 60", func() rawCall {
		return x.call("GET", "/v1/runtimes/slow-build/logs?timeout=60", nil, 3*time.Minute)
	})
	got := map[string]rawCall{}
	for range 5 {
		r := <-results
		if r.err != nil {
			t.Errorf("%s: %v", r.name, r.err)
		}
		t.Logf("%s: %d %.300q", r.name, r.status, r.body)
		got[r.name] = r.rawCall
	}
	if r := got["command default"]; r.status != 200 || !strings.Contains(r.body, "finished-late") {
		t.Errorf("command without a timeout was cut before 65 s: %d %s", r.status, r.body)
	}
	if r := got["command timeout 60"]; r.status != 500 || !strings.Contains(r.body, "command_timeout") {
		t.Errorf("command with timeout 60 was not cut: %d %s (the default check above would be blind)", r.status, r.body)
	}
	if r := got["build"]; r.status != 201 {
		t.Errorf("build: %d %s", r.status, r.body)
	}
	if r := got["logs default"]; r.status != 200 || !strings.Contains(r.body, "started-early") || !strings.Contains(r.body, "finished-late") {
		t.Errorf("log stream without a timeout ended before the build's last line: %d %q", r.status, r.body)
	}
	if r := got["logs timeout 60"]; r.status != 200 || !strings.Contains(r.body, "started-early") || strings.Contains(r.body, "finished-late") {
		t.Errorf("log stream with timeout 60: %d %q, want the early line only (the default check above would be blind)", r.status, r.body)
	}
	if r := x.request(t, "DELETE", "/v1/runtimes/cmds", nil, nil); r.status != 200 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	x.waitClean(t)
}

// x32Probe makes getpid through the x32 ABI (the syscall number with bit 30
// set), the other non-native ABI an amd64 process reaches, and prints the
// errno: the kernel's own answer without x32 support is ENOSYS (38). A
// profile that kills the calling thread leaves no answer: the probe says so
// after a while instead of hanging with its thread gone.
const x32Probe = `package main

import (
	"fmt"
	"os"
	"runtime"
	"syscall"
	"time"
)

func main() {
	done := make(chan syscall.Errno)
	go func() {
		runtime.LockOSThread()
		_, _, errno := syscall.RawSyscall(0x40000000|39, 0, 0, 0)
		done <- errno
	}()
	select {
	case errno := <-done:
		fmt.Printf("x32 errno=%d\n", int(errno))
	case <-time.After(3 * time.Second):
		fmt.Println("x32 no answer")
	}
	os.Exit(0)
}
`

// TestX32SyscallsRefused: where the kernel cannot run 386 binaries (and
// Test32BitSyscallsRefused skips), an amd64 process can still enter the
// x32 ABI; the default profile refuses it before the kernel answers, which
// the same call unconfined shows.
func TestX32SyscallsRefused(t *testing.T) {
	if runtime.GOARCH != "amd64" {
		t.Skip("x32 is an amd64 ABI")
	}
	dir := t.TempDir()
	for name, data := range map[string]string{"main.go": x32Probe, "go.mod": "module probe\n\ngo 1.21\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("go", "build", "-o", "x32probe", ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build the probe: %v\n%s", err, b)
	}
	probe, err := os.ReadFile(filepath.Join(dir, "x32probe"))
	if err != nil {
		t.Fatal(err)
	}
	host, err := exec.Command(filepath.Join(dir, "x32probe")).CombinedOutput()
	if err != nil {
		t.Fatalf("probe on the host: %v %s", err, host)
	}
	t.Logf("on the host: %s", host)
	results := map[string]string{}
	// No subtests: the comparison needs both.
	for _, tc := range []struct {
		name string
		env  []string
	}{{"default", nil}, {"unconfined", []string{"OPR_EXECUTOR_SECCOMP=unconfined"}}} {
		x := startExecutor(t, tc.env...)
		createIdle(t, x, "x32", map[string]any{"source": source(t, map[string]string{"index.js": "x", "x32probe": string(probe)})})
		if r := x.request(t, "POST", "/v1/runtimes/x32/executions", map[string]any{"path": "/"}, jsonAccept); r.status != 200 {
			t.Fatalf("%s: execution: %d %s", tc.name, r.status, r.body)
		}
		out, status := command(t, x, "x32", "cd /usr/local/server/src/function && chmod 755 x32probe && ./x32probe 2>&1; echo rc=$?")
		if status != 200 {
			t.Fatalf("%s: command: %d %s", tc.name, status, out)
		}
		t.Logf("%s: %q", tc.name, out)
		results[tc.name] = out
		x.stop()
	}
	if !strings.Contains(results["unconfined"], "x32 errno=") {
		t.Fatalf("the probe did not run unconfined: %q", results["unconfined"])
	}
	if results["default"] == results["unconfined"] {
		t.Errorf("the default profile lets the x32 call reach the kernel: %q, as unconfined", results["default"])
	}
	if strings.Contains(results["default"], "x32 errno=0\n") {
		t.Errorf("an x32 system call worked under the default profile: %q", results["default"])
	}
}

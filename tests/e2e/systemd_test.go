package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"executor/netns"
	"executor/tests/testenv"
)

// The daemon as a systemd service: the sd_notify protocol against a
// NOTIFY_SOCKET the test reads (any host), SIGHUP as a reload that never
// kills, and the shipped unit (contrib/executor.service) started by systemd
// itself where systemd is PID 1 (scripts/systemd/run.sh boots such a guest).

// notifyListener is a NOTIFY_SOCKET, read as systemd's manager reads it.
type notifyListener struct {
	path string
	msgs chan string
}

func listenNotify(t *testing.T) *notifyListener {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	l := &notifyListener{path: path, msgs: make(chan string, 4096)}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			l.msgs <- string(buf[:n])
		}
	}()
	return l
}

// next returns the next message that starts with prefix; others are skipped.
func (l *notifyListener) next(t *testing.T, timeout time.Duration, prefix string) string {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case m := <-l.msgs:
			if strings.HasPrefix(m, prefix) {
				return m
			}
		case <-deadline:
			t.Fatalf("no %s message on NOTIFY_SOCKET within %v", prefix, timeout)
		}
	}
}

// waitLog waits until the executor's log holds every one of want.
func (x *executor) waitLog(t *testing.T, timeout time.Duration, want ...string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		missing := ""
		for _, w := range want {
			if !strings.Contains(x.logs.String(), w) {
				missing = w
				break
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the log has no %q within %v:\n%s", missing, timeout, x.logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// alive checks that the daemon process still runs and serves.
func (x *executor) alive(t *testing.T) {
	t.Helper()
	select {
	case <-x.exited:
		t.Fatalf("the daemon exited: %v\n%s", x.exitErr, x.logs.String())
	default:
	}
	resp, err := http.Get(x.url + "/v1/health")
	if err != nil {
		t.Fatalf("health: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("health: %d", resp.StatusCode)
	}
}

// executeEcho runs an execution on runtime id (cold-starting it from src
// when given) and checks that the function's code answered.
func executeEcho(t *testing.T, x *executor, id, src, marker string) {
	t.Helper()
	body := map[string]any{"path": "/echo"}
	if src != "" {
		body = execBody(src, body)
	}
	r := x.request(t, "POST", "/v1/runtimes/"+id+"/executions", body, jsonAccept)
	if r.status != 200 {
		t.Fatalf("execution on %s: %d %s", id, r.status, r.body)
	}
	var echo struct {
		Code string `json:"code"`
	}
	res := r.json(t)
	if err := json.Unmarshal([]byte(fmt.Sprint(res["body"])), &echo); err != nil || echo.Code != marker {
		t.Fatalf("execution on %s answered %v (%v), want the code %q", id, res["body"], err, marker)
	}
}

// healthAt GETs /v1/health at the address a READY message's status names.
func healthAt(readyMsg string) error {
	_, addr, ok := strings.Cut(readyMsg, "STATUS=Serving the API on ")
	if !ok {
		return fmt.Errorf("READY message %q names no address", readyMsg)
	}
	addr, _, _ = strings.Cut(addr, "\n")
	resp, err := http.Get("http://" + addr + "/v1/health")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	return nil
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestNotifySocket: READY=1 once the API answers, WATCHDOG=1 pings at half
// of WATCHDOG_USEC, RELOADING=1 and READY=1 around a SIGHUP that changes the
// log level while the daemon and its runtimes keep serving, STOPPING=1 on
// SIGTERM.
func TestNotifySocket(t *testing.T) {
	sock := listenNotify(t)
	envFile := filepath.Join(t.TempDir(), "executor.env")
	writeFile(t, envFile, "OPR_EXECUTOR_LOG_LEVEL=warn\n")
	// What GET /v1/health gave right when READY=1 came, at the address the
	// READY message's status names.
	readyHealth := make(chan error, 4)
	msgs := make(chan string, 4096)
	go func() {
		for m := range sock.msgs {
			if strings.HasPrefix(m, "READY=1") {
				readyHealth <- healthAt(m)
			}
			msgs <- m
		}
	}()
	notes := &notifyListener{path: sock.path, msgs: msgs}
	x := startExecutor(t, "NOTIFY_SOCKET="+sock.path, "WATCHDOG_USEC=2000000",
		"OPR_EXECUTOR_ENV_FILE="+envFile, "OPR_EXECUTOR_LOG_LEVEL=warn")

	t.Run("READY=1 once the API answers", func(t *testing.T) {
		m := notes.next(t, 30*time.Second, "READY=1")
		if !strings.Contains(m, "STATUS=Serving the API on "+strings.TrimPrefix(x.url, "http://")) {
			t.Errorf("READY message %q lacks the serving status", m)
		}
		if err := <-readyHealth; err != nil {
			t.Fatalf("GET /v1/health right after READY=1: %v", err)
		}
	})
	t.Run("WATCHDOG=1 every second for WATCHDOG_USEC=2s", func(t *testing.T) {
		start := time.Now()
		for range 3 {
			notes.next(t, 2*time.Second, "WATCHDOG=1")
		}
		if d := time.Since(start); d < 1500*time.Millisecond {
			t.Errorf("3 pings in %v: faster than half the watchdog time", d)
		}
	})
	src := source(t, map[string]string{"index.js": "notify-marker"})
	t.Run("SIGHUP reloads the log level; daemon and runtime keep serving", func(t *testing.T) {
		executeEcho(t, x, "before-hup", src, "notify-marker")
		if strings.Contains(x.logs.String(), "runtime prepared") {
			t.Fatalf("a debug line at level warn:\n%s", x.logs.String())
		}
		pid := x.cmd.Process.Pid
		writeFile(t, envFile, "OPR_EXECUTOR_LOG_LEVEL=debug\n")
		if err := x.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		notes.next(t, 10*time.Second, "RELOADING=1")
		notes.next(t, 10*time.Second, "READY=1")
		x.waitLog(t, 10*time.Second, "SIGHUP: log level changed", "to=DEBUG")
		x.alive(t)
		if x.cmd.Process.Pid != pid {
			t.Fatal("the daemon was restarted")
		}
		executeEcho(t, x, "before-hup", "", "notify-marker")
		executeEcho(t, x, "after-hup", src, "notify-marker")
		x.waitLog(t, 10*time.Second, "runtime prepared", "runtime=after-hup")
	})
	t.Run("STOPPING=1 on SIGTERM, then a clean exit", func(t *testing.T) {
		x.stop()
		if m := notes.next(t, 5*time.Second, "STOPPING=1"); !strings.Contains(m, "STATUS=Stopping: draining requests") {
			t.Errorf("STOPPING message %q does not say what the daemon does", m)
		}
		select {
		case <-x.exited:
		default:
			t.Fatal("the daemon still runs after stop")
		}
	})
}

// TestSIGHUPNeverKills: whatever the environment file holds when SIGHUP
// comes, and however many come, the daemon and its runtimes keep serving
// and the log says what happened; a daemon without an environment file
// re-reads registries.conf only.
func TestSIGHUPNeverKills(t *testing.T) {
	envFile := filepath.Join(t.TempDir(), "executor.env")
	writeFile(t, envFile, "OPR_EXECUTOR_SECRET="+secret+"\nOPR_EXECUTOR_LOG_LEVEL=debug\n")
	x := startExecutor(t, "OPR_EXECUTOR_ENV_FILE="+envFile)
	src := source(t, map[string]string{"index.js": "hup-marker"})
	executeEcho(t, x, "hup", src, "hup-marker")
	pid := x.cmd.Process.Pid
	tests := []struct {
		name string
		file string // "" removes the file
		hups int
		want string
	}{
		{"file unchanged", "OPR_EXECUTOR_SECRET=" + secret + "\nOPR_EXECUTOR_LOG_LEVEL=debug\n", 1, "needRestart=[]"},
		{"a setting that needs a restart", "OPR_EXECUTOR_SECRET=new-secret\nOPR_EXECUTOR_LOG_LEVEL=debug\n", 1, "settings=[OPR_EXECUTOR_SECRET]"},
		{"a bad value", "OPR_EXECUTOR_LOG_LEVEL=loud\n", 1, "would not start the daemon; nothing changed"},
		{"not NAME=VALUE", "OPR_EXECUTOR_LOG_LEVEL\n", 1, "environment file not reloaded; nothing changed"},
		{"file removed", "", 1, "no such file or directory"},
		{"a burst of 50", "OPR_EXECUTOR_SECRET=" + secret + "\nOPR_EXECUTOR_LOG_LEVEL=debug\n", 50, "needRestart=[]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.file == "" {
				if err := os.Remove(envFile); err != nil {
					t.Fatal(err)
				}
			} else {
				writeFile(t, envFile, tt.file)
			}
			before := len(x.logs.String())
			for range tt.hups {
				if err := x.cmd.Process.Signal(syscall.SIGHUP); err != nil {
					t.Fatal(err)
				}
			}
			deadline := time.Now().Add(10 * time.Second)
			for !strings.Contains(x.logs.String()[before:], tt.want) {
				if time.Now().After(deadline) {
					t.Fatalf("no %q in the log after SIGHUP:\n%s", tt.want, x.logs.String()[before:])
				}
				time.Sleep(20 * time.Millisecond)
			}
			x.alive(t)
			if x.cmd.Process.Pid != pid {
				t.Fatal("the daemon was restarted")
			}
			// The running secret stays: the request helper's key still works.
			executeEcho(t, x, "hup", "", "hup-marker")
		})
	}

	t.Run("no environment file", func(t *testing.T) {
		y := startExecutor(t)
		if err := y.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		y.waitLog(t, 10*time.Second, "registries.conf is read again at the next pull")
		y.alive(t)
	})
}

// TestSystemdUnit starts contrib/executor.service, as shipped but for its
// paths and a shorter WatchdogSec, under systemd itself: readiness, the
// hardening in effect on the daemon, runtimes' cgroups in the unit's
// delegated subtree (cgroup v2), a cold start, a command, a reload, watchdog
// pings, a crash restarted and cleaned up by the next run, and a clean stop.
// It needs systemd as PID 1 (scripts/systemd/run.sh boots a guest with it);
// elsewhere it is skipped, unless E2E_REQUIRE_SYSTEMD=1.
func TestSystemdUnit(t *testing.T) {
	requireSystemd(t)
	const watchdogSec = 10
	// Short, to see pings within the test; the shipped value only changes
	// how long a wedged daemon lives.
	x, unit, unitText := startUnit(t, "main", map[string]string{"WatchdogSec": strconv.Itoa(watchdogSec)})
	v2 := cgroup2()
	unitCgroup := "/system.slice/" + unit

	x.alive(t)
	props := show(t, unit)
	for k, want := range map[string]string{"ActiveState": "active", "SubState": "running", "NRestarts": "0", "ControlGroup": unitCgroup, "Delegate": "yes"} {
		if props[k] != want {
			t.Errorf("%s=%s, want %s", k, props[k], want)
		}
	}
	if !strings.HasPrefix(props["StatusText"], "Serving the API on 127.0.0.1:") {
		t.Errorf("StatusText=%q", props["StatusText"])
	}
	mainPID := props["MainPID"]
	t.Logf("DevicePolicy=%s DeviceAllow=%s", props["DevicePolicy"], props["DeviceAllow"])

	t.Run("hardening in effect on the daemon", func(t *testing.T) {
		status := procFile(t, mainPID, "status")
		for _, want := range []string{"NoNewPrivs:\t1", "Seccomp:\t2", "CapBnd:\t" + capMask(t, unitText)} {
			if !strings.Contains(status, want) {
				t.Errorf("/proc/%s/status lacks %q:\n%s", mainPID, want, status)
			}
		}
		// The daemon's own filter (LockPersonality=, ...) does not keep it
		// from compiling the runtimes' once.
		if out, _ := exec.Command("journalctl", "-u", unit, "--no-pager", "-o", "cat").CombinedOutput(); !strings.Contains(string(out), filterCompiledOnce) {
			t.Errorf("the journal lacks %q:\n%s", filterCompiledOnce, out)
		}
		if got := strings.TrimSpace(procFile(t, mainPID, "oom_score_adj")); got != directive(t, unitText, "OOMScoreAdjust") {
			t.Errorf("oom_score_adj %s, want the unit's OOMScoreAdjust", got)
		}
		// ProtectHome= and ProtectKernel*= give the daemon a mount namespace of its own.
		own, _ := os.Readlink("/proc/" + mainPID + "/ns/mnt")
		host, _ := os.Readlink("/proc/1/ns/mnt")
		if own == host {
			t.Errorf("the daemon shares PID 1's mount namespace (%s): no sandboxing", own)
		}
		if v2 {
			if cg := procFile(t, mainPID, "cgroup"); strings.TrimSpace(cg) != "0::"+unitCgroup+"/supervisor" {
				t.Errorf("daemon's cgroup %q, want the supervisor leaf of its unit", cg)
			}
		}
	})

	src := source(t, map[string]string{"index.js": "systemd-marker"})
	t.Run("cold start and a command under the unit", func(t *testing.T) {
		executeEcho(t, x, "sd-fn", src, "systemd-marker")
		out, status := command(t, x, "sd-fn", "head -c 16 /dev/urandom | wc -c; echo ok >/dev/null; cat /proc/self/status | grep -E '^(NoNewPrivs|Seccomp):'")
		if status != 200 || !strings.Contains(out, "16") || !strings.Contains(out, "NoNewPrivs:\t1") {
			t.Fatalf("command: %d %q", status, out)
		}
		if v2 {
			rts, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", unitCgroup, "rt-*"))
			if len(rts) != 1 {
				t.Fatalf("runtime cgroups in the unit's subtree: %v, want one", rts)
			}
			procs, _ := os.ReadFile(filepath.Join(rts[0], "cgroup.procs"))
			pids := strings.Fields(string(procs))
			if len(pids) == 0 {
				t.Fatalf("no process in %s", rts[0])
			}
			// The daemon's protection is its own: a runtime is the OOM
			// killer's neutral choice.
			if got := strings.TrimSpace(procFile(t, pids[0], "oom_score_adj")); got != "0" {
				t.Errorf("runtime in %s: its PID 1's oom_score_adj is %s, want 0 (not the daemon's)", rts[0], got)
			}
		}
	})

	t.Run("reload applies the environment file, keeps the daemon and its runtime", func(t *testing.T) {
		envFile := directive(t, unitText, "EnvironmentFile")
		env, err := os.ReadFile(envFile)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, envFile, strings.Replace(string(env), "OPR_EXECUTOR_LOG_LEVEL=debug", "OPR_EXECUTOR_LOG_LEVEL=info", 1))
		if out, err := systemctl("reload", unit); err != nil {
			t.Fatalf("systemctl reload: %v %s", err, out)
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			out, _ := exec.Command("journalctl", "-u", unit, "--no-pager", "-o", "cat").CombinedOutput()
			if strings.Contains(string(out), "SIGHUP: log level changed") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no log level change in the journal after systemctl reload:\n%s", out)
			}
			time.Sleep(500 * time.Millisecond)
		}
		p := show(t, unit)
		if p["MainPID"] != mainPID || p["ActiveState"] != "active" || p["NRestarts"] != "0" {
			t.Fatalf("after reload: MainPID %s (was %s), %s, NRestarts %s", p["MainPID"], mainPID, p["ActiveState"], p["NRestarts"])
		}
		executeEcho(t, x, "sd-fn", "", "systemd-marker")
	})

	t.Run("watchdog pings while the API answers", func(t *testing.T) {
		first := show(t, unit)["WatchdogTimestampMonotonic"]
		var ping uint64 // systemd's monotonic time of a ping, in µs
		deadline := time.Now().Add(2 * watchdogSec * time.Second)
		for {
			p := show(t, unit)
			if p["WatchdogTimestampMonotonic"] != first && p["WatchdogTimestampMonotonic"] != "0" {
				ping, _ = strconv.ParseUint(p["WatchdogTimestampMonotonic"], 10, 64)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no watchdog ping within %ds: WatchdogTimestampMonotonic stays %s", 2*watchdogSec, first)
			}
			time.Sleep(500 * time.Millisecond)
		}
		// Pings go on for longer than WatchdogSec (on systemd's own clock,
		// not a sleep hoping for it): still the same daemon.
		want := ping + (watchdogSec+2)*1e6
		deadline = time.Now().Add(4 * watchdogSec * time.Second)
		for {
			p := show(t, unit)
			if last, _ := strconv.ParseUint(p["WatchdogTimestampMonotonic"], 10, 64); last >= want {
				break
			}
			if time.Now().After(deadline) || p["MainPID"] != mainPID {
				t.Fatalf("pings did not go on for %ds past the first: %v", watchdogSec+2, p)
			}
			time.Sleep(500 * time.Millisecond)
		}
		if p := show(t, unit); p["MainPID"] != mainPID || p["NRestarts"] != "0" {
			t.Fatalf("the watchdog restarted the daemon: MainPID %s (was %s), NRestarts %s", p["MainPID"], mainPID, p["NRestarts"])
		}
	})

	t.Run("a crash is restarted and its leftovers removed", func(t *testing.T) {
		pid, _ := strconv.Atoi(mainPID)
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(120 * time.Second)
		for {
			p := show(t, unit)
			if p["NRestarts"] == "1" && p["ActiveState"] == "active" && p["SubState"] == "running" && p["MainPID"] != mainPID {
				mainPID = p["MainPID"]
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("not restarted: %v", p)
			}
			time.Sleep(500 * time.Millisecond)
		}
		x.alive(t)
		if r := x.request(t, "GET", "/v1/runtimes", nil, nil); r.status != 200 || strings.Contains(string(r.body), "sd-fn") {
			t.Fatalf("runtimes after the restart: %d %s", r.status, r.body)
		}
		if v2 {
			if cg := procFile(t, mainPID, "cgroup"); strings.TrimSpace(cg) != "0::"+unitCgroup+"/supervisor" {
				t.Errorf("restarted daemon's cgroup %q", cg)
			}
		}
		executeEcho(t, x, "sd-fn", src, "systemd-marker")
	})

	t.Run("stop drains and exits 0", func(t *testing.T) {
		if out, err := systemctl("stop", unit); err != nil {
			t.Fatalf("systemctl stop: %v %s", err, out)
		}
		p := show(t, unit)
		if p["Result"] != "success" || p["ExecMainStatus"] != "0" || p["ActiveState"] != "inactive" {
			t.Errorf("after stop: Result=%s ExecMainStatus=%s ActiveState=%s", p["Result"], p["ExecMainStatus"], p["ActiveState"])
		}
		if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", unitCgroup)); err == nil && v2 {
			t.Errorf("the unit's cgroup %s is still there", unitCgroup)
		}
	})
}

// TestSystemdLeftOutDirectives shows, for each hardening directive the unit
// leaves out, the failure its comment gives as the reason: the same probe
// succeeds in a unit without it and fails in one with it. For those the
// daemon's own runtimes would hit, the shipped unit plus the directive is
// started too, and a cold start fails under it (TestSystemdUnit shows it
// working without).
func TestSystemdLeftOutDirectives(t *testing.T) {
	requireSystemd(t)
	tests := []struct {
		directive string
		probe     string // a shell command doing what the daemon or a runtime does
		daemon    bool   // also start the daemon under it and fail a cold start
		// since is the first systemd version under which the directive
		// breaks the probe; under an older one the probe must work with
		// it (0: every version).
		since int
	}{
		// The loop devices runtimes' disks are made on.
		{"PrivateDevices=yes", "exec 3</dev/loop-control", false, 0},
		// libcontainer sets every runtime's hostname in its own UTS namespace.
		{"ProtectHostname=yes", "unshare --uts hostname e2e-probe", true, 0},
		// Image layers keep their setuid files (the test image has none).
		{"RestrictSUIDSGID=yes", "f=$(mktemp) && chmod u+s $f; r=$?; rm -f $f; exit $r", false, 0},
		// The bridges' NAT needs forwarding on.
		{"ProtectKernelTunables=yes", "cat /proc/sys/net/ipv4/ip_forward >/proc/sys/net/ipv4/ip_forward", false, 0},
		// Runtimes' cgroups (on a hybrid host in the v1 hierarchies).
		{"ProtectControlGroups=yes", "d=/sys/fs/cgroup; [ -e $d/cgroup.controllers ] || d=$d/memory; mkdir $d/e2e-probe-$$ && rmdir $d/e2e-probe-$$", false, 0},
		// Every runtime mounts a /proc of its own in its user namespace,
		// which the kernel allows only where some procfs mount of the mount
		// namespace has nothing mounted over its files; this directive
		// mounts over /proc/kmsg. systemd before 253 built the unit's root
		// with MS_MOVE and left the host's tree, with a whole /proc, under
		// it; 253 and newer pivot_root and leave none.
		{"ProtectKernelLogs=yes", "unshare --user --map-root-user --mount --pid --fork --mount-proc true", true, 253},
	}
	seq := 0
	// probe runs tt.probe as a transient service with the directives given
	// and returns its failure, with what it printed. systemd-run builds the
	// service's execution context as a unit file's, without the two
	// daemon-reloads a unit file costs (seconds each under the guests' TCG).
	probe := func(t *testing.T, cmd string, directives ...string) error {
		t.Helper()
		seq++
		args := []string{"--wait", "--pipe", "--quiet", "--collect",
			"--unit", fmt.Sprintf("executor-e2e-probe-%d-%d.service", os.Getpid(), seq)}
		for _, d := range directives {
			args = append(args, "--property", d)
		}
		// systemd expands $ in a command line (a transient one too):
		// doubled, it reaches the shell.
		cmd = strings.ReplaceAll(cmd, "$", "$$")
		out, err := exec.Command("systemd-run", append(args, "/bin/sh", "-c", cmd)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, bytes.TrimSpace(out))
		}
		return nil
	}
	for _, tt := range tests {
		t.Run(tt.directive, func(t *testing.T) {
			if err := probe(t, tt.probe); err != nil {
				t.Fatalf("without %s the probe fails too: %v", tt.directive, err)
			}
			err := probe(t, tt.probe, tt.directive)
			if v := systemdVersion(t); v < tt.since {
				if err != nil {
					t.Fatalf("with %s under systemd %d (before %d) the probe fails: %v", tt.directive, v, tt.since, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("with %s the probe still works: the unit's reason to leave it out is wrong", tt.directive)
			}
			t.Logf("with %s: %v", tt.directive, err)
			if !tt.daemon {
				return
			}
			name := strings.ToLower(strings.TrimSuffix(tt.directive, "=yes"))
			x, _, _ := startUnit(t, name, nil, tt.directive)
			src := source(t, map[string]string{"index.js": "left-out"})
			r := x.request(t, "POST", "/v1/runtimes/left-out/executions", execBody(src, map[string]any{"path": "/echo"}), jsonAccept)
			if r.status == 200 {
				t.Fatalf("the shipped unit with %s cold-started a runtime: %s", tt.directive, r.body)
			}
			t.Logf("the shipped unit with %s: a cold start fails with %d %s", tt.directive, r.status, r.body)
		})
	}
}

// startUnit starts contrib/executor.service under systemd as unit
// executor-e2e-<pid>-<name>.service, its paths pointed at this test's
// binary and environment file, the directives in set replaced and extra
// ones added to [Service]. It returns once systemctl start returned: after
// READY=1 (Type=notify), or with the unit failed. The unit is stopped and
// removed at the end of the test, and must leave no bridge behind.
func startUnit(t *testing.T, name string, set map[string]string, add ...string) (x *executor, unit, unitText string) {
	t.Helper()
	x, unit, unitText, err := startUnitErr(t, name, set, add...)
	if err != nil {
		t.Fatal(err)
	}
	return x, unit, unitText
}

// startUnitErr is startUnit with the error of `systemctl start` returned.
func startUnitErr(t *testing.T, name string, set map[string]string, add ...string) (x *executor, unit, unitText string, err error) {
	t.Helper()
	unit = fmt.Sprintf("executor-e2e-%d-%s.service", os.Getpid(), name)
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	x = &executor{t: t, url: fmt.Sprintf("http://127.0.0.1:%d", port), dataDir: filepath.Join(shared.data, "unit-"+name),
		network: fmt.Sprintf("e2e-sd-%d-%s", os.Getpid(), name), logs: &syncBuffer{}}
	envFile := filepath.Join(t.TempDir(), "executor.env")
	writeFile(t, envFile, strings.Join([]string{
		"OPR_EXECUTOR_ENV=development",
		"OPR_EXECUTOR_SECRET=" + secret,
		fmt.Sprintf("OPR_EXECUTOR_LISTEN=127.0.0.1:%d", port),
		"OPR_EXECUTOR_DATA_DIR=" + x.dataDir,
		"OPR_EXECUTOR_NETWORK=" + x.network,
		"OPR_EXECUTOR_SUBNET=" + freeSubnet(t).String(),
		"OPR_EXECUTOR_RETRY_DELAY_MS=100",
		"OPR_EXECUTOR_STOP_GRACE=1",
		"OPR_EXECUTOR_LOG_LEVEL=debug",
		prewarmOff,
		networkPoolOff,
		"CONTAINERS_REGISTRIES_CONF=" + shared.registriesConf,
	}, "\n")+"\n")
	replace := map[string]string{
		"ExecStart":       shared.bin,
		"EnvironmentFile": envFile,
		"Environment":     "OPR_EXECUTOR_ENV_FILE=" + envFile,
	}
	for k, v := range set {
		replace[k] = v
	}
	unitText = shippedUnit(t, replace)
	if len(add) > 0 {
		unitText = strings.Replace(unitText, "\n[Service]\n", "\n[Service]\n"+strings.Join(add, "\n")+"\n", 1)
	}
	unitPath := filepath.Join("/run/systemd/system", unit)
	writeFile(t, unitPath, unitText)
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := exec.Command("journalctl", "-u", unit, "--no-pager", "-n", "300", "-o", "cat").CombinedOutput()
			t.Logf("journal of %s:\n%s", unit, out)
		}
		// Stopped, reset and its file gone, the unit is unloaded by
		// systemd's own garbage collection: no daemon-reload (seconds each
		// under the guests' TCG).
		_, _ = systemctl("stop", unit)
		_ = os.Remove(unitPath)
		_, _ = systemctl("reset-failed", unit)
		if _, err := netlink.LinkByName(netns.BridgeName(x.network)); err == nil {
			t.Errorf("bridge %s left after the unit stopped", netns.BridgeName(x.network))
		}
	})
	// A unit name systemd has not loaded yet is read from its file when
	// first referenced (systemd 246 and newer see the unit directory's
	// change): no daemon-reload, which costs seconds under the guests' TCG.
	if out, err := systemctl("start", unit); err != nil {
		return x, unit, unitText, fmt.Errorf("systemctl start %s: %v %s", unit, err, out)
	}
	return x, unit, unitText, nil
}

// requireSystemd skips a test where systemd is not PID 1, or fails it where
// the run asks for systemd (the systemd guest).
func requireSystemd(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/run/systemd/system"); err == nil {
		return
	}
	if os.Getenv("E2E_REQUIRE_SYSTEMD") == "1" {
		t.Fatal("systemd is not PID 1 here (no /run/systemd/system), and E2E_REQUIRE_SYSTEMD=1")
	}
	t.Skip("systemd is not PID 1 on this host: scripts/systemd/run.sh runs this test in a guest that boots systemd")
}

func systemctl(args ...string) (string, error) {
	out, err := exec.Command("systemctl", args...).CombinedOutput()
	return string(out), err
}

// show returns a unit's properties.
func show(t *testing.T, unit string) map[string]string {
	t.Helper()
	out, err := systemctl("show", unit)
	if err != nil {
		t.Fatalf("systemctl show %s: %v %s", unit, err, out)
	}
	props := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			props[k] = v
		}
	}
	return props
}

func procFile(t *testing.T, pid, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc", pid, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// shippedUnit is contrib/executor.service (E2E_UNIT_FILE where the tree is
// not at hand) with the directives in set replaced.
func shippedUnit(t *testing.T, set map[string]string) string {
	t.Helper()
	path := os.Getenv("E2E_UNIT_FILE")
	if path == "" {
		root, err := moduleRoot()
		if err != nil {
			t.Fatal(err)
		}
		path = filepath.Join(root, "contrib", "executor.service")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	done := map[string]bool{}
	for _, line := range strings.Split(string(data), "\n") {
		if k, _, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			if v, ok := set[k]; ok {
				if done[k] {
					t.Fatalf("%s: %s is set more than once", path, k)
				}
				done[k] = true
				line = k + "=" + v
			}
		}
		out = append(out, line)
	}
	for k := range set {
		if !done[k] {
			t.Fatalf("%s has no %s", path, k)
		}
	}
	return strings.Join(out, "\n")
}

// directive is the value of a directive set once in a unit's text.
func directive(t *testing.T, unitText, name string) string {
	t.Helper()
	var vals []string
	for _, line := range strings.Split(unitText, "\n") {
		if v, ok := strings.CutPrefix(line, name+"="); ok {
			vals = append(vals, v)
		}
	}
	if len(vals) != 1 {
		t.Fatalf("%s is set %d times in the unit", name, len(vals))
	}
	return vals[0]
}

// capMask is the unit's CapabilityBoundingSet as /proc/<pid>/status writes
// CapBnd.
func capMask(t *testing.T, unitText string) string {
	t.Helper()
	caps := map[string]uint{
		"CAP_CHOWN": unix.CAP_CHOWN, "CAP_DAC_OVERRIDE": unix.CAP_DAC_OVERRIDE, "CAP_DAC_READ_SEARCH": unix.CAP_DAC_READ_SEARCH,
		"CAP_FOWNER": unix.CAP_FOWNER, "CAP_FSETID": unix.CAP_FSETID, "CAP_KILL": unix.CAP_KILL, "CAP_SETGID": unix.CAP_SETGID,
		"CAP_SETUID": unix.CAP_SETUID, "CAP_SETPCAP": unix.CAP_SETPCAP, "CAP_SETFCAP": unix.CAP_SETFCAP,
		"CAP_NET_BIND_SERVICE": unix.CAP_NET_BIND_SERVICE, "CAP_NET_ADMIN": unix.CAP_NET_ADMIN, "CAP_NET_RAW": unix.CAP_NET_RAW,
		"CAP_SYS_ADMIN": unix.CAP_SYS_ADMIN, "CAP_SYS_CHROOT": unix.CAP_SYS_CHROOT, "CAP_SYS_PTRACE": unix.CAP_SYS_PTRACE,
		"CAP_SYS_RESOURCE": unix.CAP_SYS_RESOURCE, "CAP_MKNOD": unix.CAP_MKNOD, "CAP_AUDIT_WRITE": unix.CAP_AUDIT_WRITE,
		"CAP_IPC_LOCK": unix.CAP_IPC_LOCK, "CAP_SYS_NICE": unix.CAP_SYS_NICE, "CAP_BPF": unix.CAP_BPF,
	}
	var mask uint64
	for _, name := range strings.Fields(directive(t, unitText, "CapabilityBoundingSet")) {
		bit, ok := caps[name]
		if !ok {
			t.Fatalf("capability %s: add it to capMask", name)
		}
		mask |= 1 << bit
	}
	return fmt.Sprintf("%016x", mask)
}

// TestSystemdLiveRestore: the shipped unit with the README's drop-in for live
// restore (KillMode=process, no mount namespace of its own, the main process
// in a subgroup) keeps a runtime warm across `systemctl restart`: a new
// daemon, the same runtime. On cgroup v2 before systemd 254 (no
// DelegateSubgroup=) the daemon refuses live restore instead.
func TestSystemdLiveRestore(t *testing.T) {
	requireSystemd(t)
	const liveLine = "Environment=" + liveRestoreOn
	dropIn := map[string]string{"KillMode": "process", "ProtectHome": "no", "ProtectKernelModules": "no"}
	if cgroup2() && systemdVersion(t) < 254 {
		// Started in the unit's cgroup, which the kept runtimes would make
		// unusable to the next start (219/CGROUP): refused, and nothing made.
		_, unit, _, err := startUnitErr(t, "live", dropIn, liveLine, "DelegateSubgroup=supervisor")
		if err == nil {
			t.Fatalf("systemd %d on cgroup v2 started the daemon with live restore in its unit's cgroup", systemdVersion(t))
		}
		out, _ := exec.Command("journalctl", "-u", unit, "--no-pager", "-o", "cat").CombinedOutput()
		if want := "OPR_EXECUTOR_LIVE_RESTORE: the daemon was started in cgroup /system.slice/" + unit; !strings.Contains(string(out), want) {
			t.Errorf("the journal lacks %q:\n%s", want, out)
		}
		return
	}
	x, unit, _ := startUnit(t, "live", dropIn, liveLine, "DelegateSubgroup=supervisor")
	unitPath := filepath.Join("/run/systemd/system", unit)
	// Last, live restore off and a restart remove every runtime; the
	// unit's stop (startUnit's cleanup) then leaves nothing.
	t.Cleanup(func() {
		text, err := os.ReadFile(unitPath)
		if err != nil {
			t.Error(err)
			return
		}
		writeFile(t, unitPath, strings.Replace(string(text), liveLine+"\n", "", 1))
		if out, err := systemctl("daemon-reload"); err != nil {
			t.Errorf("daemon-reload: %v %s", err, out)
		}
		if out, err := systemctl("restart", unit); err != nil {
			t.Errorf("restart without live restore: %v %s", err, out)
		}
	})
	src := source(t, map[string]string{"index.js": "live-marker"})
	executeEcho(t, x, "kept", src, "live-marker")
	before := runtimeInfo(t, x, "kept")
	mainPID := show(t, unit)["MainPID"]
	if out, err := systemctl("restart", unit); err != nil {
		t.Fatalf("systemctl restart: %v %s", err, out)
	}
	if err := x.waitHealthy(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	if pid := show(t, unit)["MainPID"]; pid == mainPID || pid == "0" {
		t.Fatalf("MainPID %s after the restart, %s before: no new daemon", pid, mainPID)
	}
	after := runtimeInfo(t, x, "kept")
	for _, k := range []string{"created", "key", "hostname"} {
		if after[k] != before[k] {
			t.Errorf("%s: %v after the restart, %v before", k, after[k], before[k])
		}
	}
	executeEcho(t, x, "kept", "", "live-marker")
	out, _ := exec.Command("journalctl", "-u", unit, "--no-pager", "-o", "cat").CombinedOutput()
	for _, want := range []string{"runtimes left running for the next start", "runtime restored"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("the journal lacks %q:\n%s", want, out)
		}
	}
}

// systemdVersion is the version `systemctl --version` reports.
func systemdVersion(t *testing.T) int {
	t.Helper()
	out, err := systemctl("--version")
	fields := strings.Fields(out)
	if err != nil || len(fields) < 2 {
		t.Fatalf("systemctl --version: %v %q", err, out)
	}
	v, err := strconv.Atoi(fields[1])
	if err != nil {
		t.Fatalf("systemctl --version: %q", out)
	}
	return v
}

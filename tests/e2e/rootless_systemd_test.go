package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"executor/tests/testenv"
)

// The rootless daemon as an ordinary user runs it in production: the
// shipped contrib/executor-rootless.service installed as that user's
// systemctl --user unit, started by the user's own service manager
// (user@UID.service), its cgroup delegated by that manager. Like
// TestSystemdUnit it needs systemd as PID 1 (scripts/systemd/run.sh boots a
// guest with it, pure cgroup v2 by default).

// limitsWarning is the sentence GET /v1/health carries when runtimes run
// without cgroup limits (sandbox.Manager.Warnings).
const limitsWarning = "runtimes run without CPU, memory and pids limits"

// unitUser is an account made for TestRootlessUserUnit, with its user
// manager running.
type unitUser struct {
	name               string
	uid, gid           int
	home               string
	subStart, subCount int
	lingering          bool
}

func (u *unitUser) runtimeDir() string { return fmt.Sprintf("/run/user/%d", u.uid) }

// managerCgroup is the user manager's cgroup (cgroup v2 path).
func (u *unitUser) managerCgroup() string {
	return fmt.Sprintf("/user.slice/user-%d.slice/user@%d.service", u.uid, u.uid)
}

// asUser runs name args as the user (its uid, gid and groups, a clean
// environment but for XDG_RUNTIME_DIR), as a login shell of the user would.
func (u *unitUser) asUser(name string, args ...string) (string, error) {
	cmd := exec.Command("setpriv", append([]string{"--reuid=" + strconv.Itoa(u.uid), "--regid=" + strconv.Itoa(u.gid), "--init-groups",
		"env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + u.home, "USER=" + u.name,
		"XDG_RUNTIME_DIR=" + u.runtimeDir(), name}, args...)...)
	cmd.Dir = "/"
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// userctl is `systemctl --user args` as the user: it talks to the user
// manager over $XDG_RUNTIME_DIR/systemd/private (no D-Bus in the guest).
func (u *unitUser) userctl(args ...string) (string, error) {
	return u.asUser("systemctl", append([]string{"--user"}, args...)...)
}

// show returns the user unit's properties.
func (u *unitUser) show(t *testing.T, unit string) map[string]string {
	t.Helper()
	out, err := u.userctl("show", unit)
	if err != nil {
		t.Fatalf("systemctl --user show %s: %v %s", unit, err, out)
	}
	props := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			props[k] = v
		}
	}
	return props
}

// journal is what the user's units logged (root reads every journal file;
// journalctl --user-unit would match root's own uid).
func (u *unitUser) journal(unit string) string {
	args := []string{"--no-pager", "-o", "cat", "_UID=" + strconv.Itoa(u.uid)}
	if unit != "" {
		args = append(args, "_SYSTEMD_USER_UNIT="+unit)
	}
	out, _ := exec.Command("journalctl", args...).CombinedOutput()
	return string(out)
}

// waitJournal waits until the unit's journal holds want, after skip bytes.
func (u *unitUser) waitJournal(t *testing.T, unit string, skip int, want string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		j := u.journal(unit)
		if len(j) >= skip && strings.Contains(j[skip:], want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the journal of %s:\n%s", want, unit, j)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// newUnitUser makes an account with useradd -m and a subordinate id range,
// has logind start its user manager (loginctl enable-linger) and, at the end
// of the test, stops that manager and removes the account with its home.
func newUnitUser(t *testing.T) *unitUser {
	t.Helper()
	name := fmt.Sprintf("exunit%d", os.Getpid())
	if out, err := exec.Command("useradd", "-m", "-s", "/bin/sh", name).CombinedOutput(); err != nil {
		t.Fatalf("useradd: %v %s", err, out)
	}
	u := &unitUser{name: name}
	t.Cleanup(func() { u.remove(t) })
	acct, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	u.uid, _ = strconv.Atoi(acct.Uid)
	u.gid, _ = strconv.Atoi(acct.Gid)
	u.home = acct.HomeDir
	// useradd gives a range when /etc/subuid exists; else one is added as
	// the README says.
	if u.subStart, u.subCount = subIDsOf("/etc/subuid", name); u.subCount < 65536 {
		const start = 3 << 20
		if out, err := exec.Command("usermod", "--add-subuids", fmt.Sprintf("%d-%d", start, start+65535),
			"--add-subgids", fmt.Sprintf("%d-%d", start, start+65535), name).CombinedOutput(); err != nil {
			t.Fatalf("usermod --add-subuids: %v %s", err, out)
		}
		u.subStart, u.subCount = subIDsOf("/etc/subuid", name)
	}
	if gs, gc := subIDsOf("/etc/subgid", name); gc < 65536 {
		t.Fatalf("/etc/subgid gives %s %d-%d: fewer than 65536 ids", name, gs, gs+gc)
	}
	st, err := os.Stat(u.home)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("user %s: uid %d, home %s mode %v, subordinate ids %d-%d", name, u.uid, u.home, st.Mode().Perm(), u.subStart, u.subStart+u.subCount-1)
	if st.Mode().Perm()&0o001 == 0 {
		// The README's advice for a home of mode 0700: runtimes' roots
		// live in the default data dir under it.
		if err := os.Chmod(u.home, st.Mode().Perm()|0o001); err != nil {
			t.Fatal(err)
		}
	}
	// As an administrator keeps a user's units running without a login:
	// logind starts user@UID.service (and /run/user/UID) at once.
	if out, err := exec.Command("loginctl", "enable-linger", name).CombinedOutput(); err != nil {
		t.Fatalf("loginctl enable-linger %s: %v %s", name, err, out)
	}
	u.lingering = true
	manager := fmt.Sprintf("user@%d.service", u.uid)
	deadline := time.Now().Add(120 * time.Second)
	for {
		out, _ := systemctl("is-active", manager)
		if strings.TrimSpace(out) == "active" {
			break
		}
		if time.Now().After(deadline) {
			st, _ := systemctl("status", "--no-pager", manager, fmt.Sprintf("user-runtime-dir@%d.service", u.uid))
			t.Fatalf("%s is %s after loginctl enable-linger:\n%s", manager, strings.TrimSpace(out), st)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return u
}

// remove stops the user manager (and with it every process of the user)
// and deletes the account and its home.
func (u *unitUser) remove(t *testing.T) {
	if t.Failed() && u.uid != 0 {
		t.Logf("journal of %s's user manager and units:\n%s", u.name, lastLines(u.journal(""), 300))
	}
	if u.lingering {
		if out, err := exec.Command("loginctl", "disable-linger", u.name).CombinedOutput(); err != nil {
			t.Errorf("loginctl disable-linger %s: %v %s", u.name, err, out)
		}
	}
	if u.uid != 0 {
		if out, err := systemctl("stop", fmt.Sprintf("user@%d.service", u.uid), fmt.Sprintf("user-runtime-dir@%d.service", u.uid)); err != nil {
			t.Errorf("stopping %s's user manager: %v %s", u.name, err, out)
		}
	}
	if out, err := exec.Command("userdel", "-r", u.name).CombinedOutput(); err != nil {
		t.Errorf("userdel -r %s: %v %s", u.name, err, out)
	}
	if u.uid == 0 {
		return
	}
	if pids := pidsWithUID(u.uid, 1); len(pids) > 0 {
		t.Errorf("processes of uid %d left after its user manager stopped: %v", u.uid, pids)
	}
	if _, n := subIDsOf("/etc/subuid", u.name); n > 0 {
		t.Errorf("/etc/subuid still has a range for %s after userdel", u.name)
	}
}

// subIDsOf is name's first range in a subuid(5) file; 0, 0 without one.
func subIDsOf(file, name string) (start, count int) {
	raw, _ := os.ReadFile(file)
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Split(strings.TrimSpace(line), ":")
		if len(f) == 3 && f[0] == name {
			start, _ = strconv.Atoi(f[1])
			count, _ = strconv.Atoi(f[2])
			return start, count
		}
	}
	return 0, 0
}

// pidsWithUID lists the processes whose real uid lies in [uid, uid+n).
func pidsWithUID(uid, n int) []string {
	var out []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		status, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(status), "\n") {
			if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
				if f := strings.Fields(rest); len(f) > 0 {
					if id, err := strconv.Atoi(f[0]); err == nil && id >= uid && id < uid+n {
						comm, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
						out = append(out, e.Name()+" ("+strings.TrimSpace(string(comm))+", uid "+f[0]+")")
					}
				}
				break
			}
		}
	}
	return out
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// rootlessUnitText is contrib/executor-rootless.service
// (E2E_ROOTLESS_UNIT_FILE where the tree is not at hand) with ExecStart
// pointed at bin.
func rootlessUnitText(t *testing.T, bin string) string {
	t.Helper()
	path := os.Getenv("E2E_ROOTLESS_UNIT_FILE")
	if path == "" {
		root, err := moduleRoot()
		if err != nil {
			t.Fatal(err)
		}
		path = filepath.Join(root, "contrib", "executor-rootless.service")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(data), "\n")
	n := 0
	for i, line := range lines {
		if strings.HasPrefix(line, "ExecStart=") {
			lines[i] = "ExecStart=" + bin
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%s sets ExecStart %d times", path, n)
	}
	return strings.Join(lines, "\n")
}

// writeAs writes a file the user owns, its parents made and owned by the
// user too (below its home).
func (u *unitUser) writeAs(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	rel, err := filepath.Rel(u.home, path)
	if err != nil || strings.HasPrefix(rel, "..") {
		t.Fatalf("%s is not under %s", path, u.home)
	}
	dir := u.home
	for _, part := range strings.Split(filepath.Dir(rel), string(filepath.Separator)) {
		if part == "." {
			continue
		}
		dir = filepath.Join(dir, part)
		if err := os.Mkdir(dir, 0o755); err != nil && !os.IsExist(err) {
			t.Fatal(err)
		}
		if err := os.Chown(dir, u.uid, u.gid); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, u.uid, u.gid); err != nil {
		t.Fatal(err)
	}
}

// unitHealthWarnings is GET /v1/health's warnings list.
func unitHealthWarnings(t *testing.T, x *executor) []string {
	t.Helper()
	resp, err := http.Get(x.url + "/v1/health")
	if err != nil {
		t.Fatalf("health: %v", err)
	}
	defer resp.Body.Close()
	var h struct {
		Status   string   `json:"status"`
		Warnings []string `json:"warnings"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil || resp.StatusCode != 200 || h.Status != "pass" {
		t.Fatalf("health: %d %+v (%v)", resp.StatusCode, h, err)
	}
	return h.Warnings
}

func anyContains(list []string, sub string) bool {
	for _, s := range list {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// TestRootlessUserUnit: contrib/executor-rootless.service as shipped (but
// for ExecStart's path) installed for an ordinary user and started with
// systemctl --user: READY=1 reaches the user manager, the user manager's
// delegation (cpu, memory, pids on cgroup v2) gives runtimes their limits in
// the unit's own subtree with no warning, a cold start and executions work,
// a reload keeps it serving, a stop leaves no process and no cgroup behind;
// a cgroup parent the user cannot write turns limits off, never silently.
func TestRootlessUserUnit(t *testing.T) {
	requireSystemd(t)
	v2 := cgroup2()
	u := newUnitUser(t)
	const unit = "executor.service"
	managerProps := show(t, fmt.Sprintf("user@%d.service", u.uid))
	t.Logf("user@%d.service: ActiveState=%s Delegate=%s DelegateControllers=%q", u.uid, managerProps["ActiveState"], managerProps["Delegate"], managerProps["DelegateControllers"])
	if managerProps["ActiveState"] != "active" {
		t.Fatalf("user@%d.service is %s", u.uid, managerProps["ActiveState"])
	}
	if _, err := os.Stat(filepath.Join(u.runtimeDir(), "systemd", "private")); err != nil {
		t.Fatalf("the user manager's private socket: %v", err)
	}
	// No user bus (no dbus-user-session): every systemctl --user below
	// talks to the manager over its private socket.
	if bus := filepath.Join(u.runtimeDir(), "bus"); fileExists(bus) {
		t.Logf("%s exists: systemctl --user may use the user bus", bus)
	} else {
		t.Logf("no user bus (%s): systemctl --user talks to the manager over %s/systemd/private", bus, u.runtimeDir())
	}

	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	_, regPort, err := net.SplitHostPort(shared.registry.Addr())
	if err != nil {
		t.Fatal(err)
	}
	unitCgroup := u.managerCgroup() + "/app.slice/" + unit
	x := &executor{t: t, url: fmt.Sprintf("http://127.0.0.1:%d", port), network: fmt.Sprintf("e2e-uu-%d", os.Getpid()),
		dataDir: filepath.Join(u.home, ".local", "share", "executor"), cgParent: unitCgroup, logs: &syncBuffer{}}
	envFile := filepath.Join(u.home, ".config", "executor", "executor.env")
	baseEnv := []string{
		"OPR_EXECUTOR_ENV=development",
		"OPR_EXECUTOR_SECRET=" + secret,
		fmt.Sprintf("OPR_EXECUTOR_LISTEN=127.0.0.1:%d", port),
		"OPR_EXECUTOR_NETWORK=" + x.network,
		"OPR_EXECUTOR_SUBNET=" + freeSubnet(t).String(),
		"OPR_EXECUTOR_RETRY_DELAY_MS=100",
		"OPR_EXECUTOR_STOP_GRACE=1",
		"OPR_EXECUTOR_LOG_LEVEL=debug",
		prewarmOff,
		networkPoolOff,
		"CONTAINERS_REGISTRIES_CONF=" + shared.registriesConf,
		"OPR_EXECUTOR_ROOTLESS_LOOPBACK_PORTS=" + regPort,
	}
	writeEnv := func(extra ...string) {
		u.writeAs(t, envFile, strings.Join(append(append([]string{}, baseEnv...), extra...), "\n")+"\n", 0o600)
	}
	writeEnv()
	bin, err := filepath.Abs(shared.bin)
	if err != nil {
		t.Fatal(err)
	}
	u.writeAs(t, filepath.Join(u.home, ".config", "systemd", "user", unit), rootlessUnitText(t, bin), 0o644)
	if out, err := u.userctl("daemon-reload"); err != nil {
		t.Fatalf("systemctl --user daemon-reload: %v %s", err, out)
	}
	t.Cleanup(func() { _, _ = u.userctl("stop", unit) })

	// Sources the user's daemon can read.
	storage := filepath.Join(shared.work, "storage-"+u.name)
	if err := os.MkdirAll(storage, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(storage, u.uid, u.gid); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(storage, "code.tar.gz")
	if err := testenv.MakeSourceTarball(src, map[string]string{"index.js": "user-unit-marker"}); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(src, u.uid, u.gid); err != nil {
		t.Fatal(err)
	}

	// Type=notify: systemctl --user start returns once READY=1 came from
	// the daemon, which runs in namespaces of its own (NotifyAccess=all).
	if out, err := u.userctl("start", unit); err != nil {
		t.Fatalf("systemctl --user start %s: %v %s", unit, err, out)
	}
	props := u.show(t, unit)
	for k, want := range map[string]string{"ActiveState": "active", "SubState": "running", "NRestarts": "0", "Delegate": "yes", "ControlGroup": unitCgroup} {
		if props[k] != want {
			t.Errorf("%s=%s, want %s", k, props[k], want)
		}
	}
	if !strings.HasPrefix(props["StatusText"], "Serving the API on 127.0.0.1:") {
		t.Errorf("StatusText=%q: READY=1 did not come with the daemon's status", props["StatusText"])
	}
	mainPID := props["MainPID"]
	if v2 {
		// What the daemon has to tell a delegated unit cgroup by.
		dir := filepath.Join("/sys/fs/cgroup", unitCgroup)
		var marks []string
		for _, attr := range []string{"trusted.delegate", "user.delegate"} {
			buf := make([]byte, 8)
			n, err := unix.Getxattr(dir, attr, buf)
			if err != nil {
				marks = append(marks, attr+": "+err.Error())
			} else {
				marks = append(marks, attr+"="+string(buf[:n]))
			}
		}
		var owner string
		if st, err := os.Stat(dir); err == nil {
			owner = fmt.Sprint(st.Sys().(*syscall.Stat_t).Uid)
		}
		ctl, _ := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
		t.Logf("unit cgroup %s: owner uid %s, controllers %q, %s", unitCgroup, owner, strings.TrimSpace(string(ctl)), strings.Join(marks, ", "))
	}
	x.alive(t)
	if j := u.journal(unit); !strings.Contains(j, "Executor is ready.") || !strings.Contains(j, "rootless=true") {
		t.Errorf("the journal has no ready line saying rootless=true:\n%s", j)
	}
	// Compiled once rootless too, under the unit's own filters.
	if j := u.journal(unit); !strings.Contains(j, filterCompiledOnce) {
		t.Errorf("the journal lacks %q:\n%s", filterCompiledOnce, j)
	}

	t.Run("health: limits on (cgroup v2), off and said on v1", func(t *testing.T) {
		w := unitHealthWarnings(t, x)
		t.Logf("GET /v1/health warnings: %q", w)
		if v2 && anyContains(w, limitsWarning) {
			ctl, _ := os.ReadFile(filepath.Join("/sys/fs/cgroup", unitCgroup, "cgroup.controllers"))
			t.Fatalf("limits are off under a user manager that delegates %q (the unit's cgroup has controllers %q): %q",
				managerProps["DelegateControllers"], strings.TrimSpace(string(ctl)), w)
		}
		if !v2 && !anyContains(w, limitsWarning) {
			t.Fatalf("cgroup v1: nothing delegated, yet no warning about limits: %q", w)
		}
		if v2 {
			if cg := procFile(t, mainPID, "cgroup"); strings.TrimSpace(cg) != "0::"+unitCgroup+"/supervisor" {
				t.Errorf("the daemon's main process is in %q, want the supervisor leaf of its unit", strings.TrimSpace(cg))
			}
		}
	})

	t.Run("cold start with memory and cpus, in the unit's subtree", func(t *testing.T) {
		r := x.request(t, "POST", "/v1/runtimes/uu-fn/executions", execBody(src, map[string]any{
			"path": "/echo", "cpus": 0.5, "memory": 128}), jsonAccept)
		if r.status != 200 {
			t.Fatalf("cold start: %d %s", r.status, r.body)
		}
		executeEcho(t, x, "uu-fn", "", "user-unit-marker")
		if !v2 {
			return
		}
		rts, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", unitCgroup, "rt-*"))
		if len(rts) != 1 {
			all, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", u.managerCgroup(), "*", "*", "*"))
			t.Fatalf("runtime cgroups under %s: %v, want one (the user manager's subtree: %v)", unitCgroup, rts, all)
		}
		for file, want := range map[string]string{"memory.max": "128000000", "cpu.max": "50000 100000"} {
			got, err := os.ReadFile(filepath.Join(rts[0], file))
			if err != nil || strings.TrimSpace(string(got)) != want {
				t.Errorf("%s/%s: %q (%v), want %q", rts[0], file, strings.TrimSpace(string(got)), err, want)
			}
		}
		procs, _ := os.ReadFile(filepath.Join(rts[0], "cgroup.procs"))
		pids := strings.Fields(string(procs))
		if len(pids) == 0 {
			t.Fatalf("no process in %s", rts[0])
		}
		// A runtime's processes are subordinate ids, not the user.
		for _, line := range strings.Split(procFile(t, pids[0], "status"), "\n") {
			if rest, ok := strings.CutPrefix(line, "Uid:"); ok {
				id, _ := strconv.Atoi(strings.Fields(rest)[0])
				if id < u.subStart || id >= u.subStart+u.subCount {
					t.Errorf("runtime process %s runs as uid %d, outside the user's subordinate ids %d-%d", pids[0], id, u.subStart, u.subStart+u.subCount-1)
				}
			}
		}
		// The same limits, seen from inside.
		r = x.request(t, "POST", "/v1/runtimes/uu-fn/executions", map[string]any{"path": "/cgroup"}, jsonAccept)
		var inside struct {
			CgroupVersion int   `json:"cgroupVersion"`
			MemoryBytes   int64 `json:"memoryBytes"`
			CPUQuotaUs    int64 `json:"cpuQuotaUs"`
		}
		if r.status != 200 {
			t.Fatalf("execution /cgroup: %d %s", r.status, r.body)
		}
		if err := json.Unmarshal([]byte(fmt.Sprint(r.json(t)["body"])), &inside); err != nil ||
			inside.CgroupVersion != 2 || inside.MemoryBytes != 128_000_000 || inside.CPUQuotaUs != 50000 {
			t.Errorf("limits seen inside the runtime: %+v (%v)", inside, err)
		}
	})

	t.Run("systemctl --user reload keeps it serving", func(t *testing.T) {
		skip := len(u.journal(unit))
		writeEnv("OPR_EXECUTOR_LOG_LEVEL=info")
		if out, err := u.userctl("reload", unit); err != nil {
			t.Fatalf("systemctl --user reload: %v %s", err, out)
		}
		u.waitJournal(t, unit, skip, "SIGHUP: log level changed")
		p := u.show(t, unit)
		if p["MainPID"] != mainPID || p["ActiveState"] != "active" || p["NRestarts"] != "0" {
			t.Fatalf("after reload: MainPID %s (was %s), %s, NRestarts %s", p["MainPID"], mainPID, p["ActiveState"], p["NRestarts"])
		}
		x.alive(t)
		executeEcho(t, x, "uu-fn", "", "user-unit-marker")
	})

	t.Run("systemctl --user stop: clean exit, nothing left", func(t *testing.T) {
		if out, err := u.userctl("stop", unit); err != nil {
			t.Fatalf("systemctl --user stop: %v %s", err, out)
		}
		p := u.show(t, unit)
		if p["Result"] != "success" || p["ExecMainStatus"] != "0" || p["ActiveState"] != "inactive" {
			t.Errorf("after stop: Result=%s ExecMainStatus=%s ActiveState=%s", p["Result"], p["ExecMainStatus"], p["ActiveState"])
		}
		if pids := pidsWithUID(u.subStart, u.subCount); len(pids) > 0 {
			t.Errorf("processes of the user's subordinate ids left: %v", pids)
		}
		if v2 {
			if rts, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", unitCgroup, "rt-*")); len(rts) > 0 {
				t.Errorf("runtime cgroups left: %v", rts)
			}
			if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", unitCgroup)); err == nil {
				t.Errorf("the unit's cgroup %s is still there", unitCgroup)
			}
		}
		if l := x.leftovers(); len(l) > 0 {
			t.Errorf("left behind after the stop:\n%s", strings.Join(l, "\n"))
		}
		if resp, err := http.Get(x.url + "/v1/health"); err == nil {
			resp.Body.Close()
			t.Errorf("the API still answers after the stop")
		}
	})

	t.Run("a cgroup parent the user cannot write: limits off, and said", func(t *testing.T) {
		parent := "/system.slice"
		if !v2 {
			parent = "/executor-uu-not-the-users"
		}
		writeEnv("OPR_EXECUTOR_CGROUP_PARENT=" + parent)
		skip := len(u.journal(unit))
		if out, err := u.userctl("start", unit); err != nil {
			t.Fatalf("systemctl --user start %s: %v %s", unit, err, out)
		}
		w := unitHealthWarnings(t, x)
		t.Logf("GET /v1/health warnings: %q", w)
		if !anyContains(w, limitsWarning) {
			t.Errorf("OPR_EXECUTOR_CGROUP_PARENT=%s (not the user's): no warning about limits in GET /v1/health: %q", parent, w)
		}
		if j := u.journal(unit); len(j) < skip || !strings.Contains(strings.ToLower(j[skip:]), "limits") {
			t.Errorf("the journal says nothing about limits:\n%s", j[min(skip, len(j)):])
		}
		r := x.request(t, "POST", "/v1/runtimes/uu-nolimits/executions", execBody(src, map[string]any{"path": "/echo"}), jsonAccept)
		if r.status != 200 {
			t.Errorf("cold start without limits: %d %s", r.status, r.body)
		}
		if out, err := u.userctl("stop", unit); err != nil {
			t.Fatalf("systemctl --user stop: %v %s", err, out)
		}
		if p := u.show(t, unit); p["Result"] != "success" || p["ExecMainStatus"] != "0" {
			t.Errorf("after stop: Result=%s ExecMainStatus=%s", p["Result"], p["ExecMainStatus"])
		}
		if pids := pidsWithUID(u.subStart, u.subCount); len(pids) > 0 {
			t.Errorf("processes of the user's subordinate ids left: %v", pids)
		}
		if l := x.leftovers(); len(l) > 0 {
			t.Errorf("left behind after the stop:\n%s", strings.Join(l, "\n"))
		}
	})
}

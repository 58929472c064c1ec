package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"executor/netns"
	"executor/tests/testenv"
)

// The rootless daemon for real: an unprivileged user set up as a distribution
// sets one up (testenv.SetupRootless: subordinate ids, /dev/net/tun 0666, an
// XDG_RUNTIME_DIR and, unless a test asks otherwise, a delegated cgroup
// subtree), bin/executor started as that user, and the API reached from the
// host on 127.0.0.1 as usual.

// rootlessDaemon is an executor started as an unprivileged user. It embeds
// the harness's executor (requests, stop, kill, leftovers); start is its own.
type rootlessDaemon struct {
	*executor
	user    *testenv.Rootless
	storage string // the user's storage root for sources and artifacts (under /tmp, a default root)
	// The host's user-mode network processes (slirp4netns, pasta) before
	// the daemon first started: the daemon's must not outlive it.
	hostSlirps map[int]bool
}

// rootlessUser sets up a user for the test and undoes it all at the end,
// failing the test on anything it had to clean up by force.
func rootlessUser(t testing.TB, delegate bool) *testenv.Rootless {
	t.Helper()
	u, err := testenv.SetupRootless(testenv.RootlessConfig{Delegate: delegate})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := u.Close(); err != nil {
			t.Errorf("undoing the rootless setup: %v", err)
		}
	})
	return u
}

// startRootless starts bin/executor as u with the harness's usual settings
// plus extra, its data dir the default one ($XDG_DATA_HOME/executor, i.e.
// ~/.local/share/executor) and, when u has a delegated subtree, that subtree
// as cgroup parent with the daemon started in it (as systemd starts a unit
// with Delegate=yes). At the end of the test it is stopped and checked to
// have left nothing on the host.
func startRootless(t testing.TB, u *testenv.Rootless, extra ...string) *rootlessDaemon {
	t.Helper()
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	storage := filepath.Join(shared.work, "storage-"+u.Name)
	if err := os.MkdirAll(storage, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := u.Chown(storage); err != nil {
		t.Fatal(err)
	}
	_, regPort, err := net.SplitHostPort(shared.registry.Addr())
	if err != nil {
		t.Fatal(err)
	}
	x := &rootlessDaemon{
		executor: &executor{
			t:        t,
			url:      fmt.Sprintf("http://127.0.0.1:%d", port),
			dataDir:  filepath.Join(u.Home, ".local", "share", "executor"),
			network:  fmt.Sprintf("e2e-rl-%d-%d", os.Getpid(), port),
			cgParent: u.CgroupParent,
			// The delegated subtree is the administrator's (testenv's):
			// assertClean must not ask for it to be gone.
			unit: u.CgroupParent,
			logs: &syncBuffer{},
		},
		user:       u,
		storage:    storage,
		hostSlirps: slirpPids(),
	}
	env := append(u.Env(),
		"OPR_EXECUTOR_ENV=development",
		"OPR_EXECUTOR_SECRET="+secret,
		fmt.Sprintf("OPR_EXECUTOR_LISTEN=127.0.0.1:%d", port),
		"OPR_EXECUTOR_NETWORK="+x.network,
		"OPR_EXECUTOR_SUBNET="+freeSubnet(t).String(),
		"OPR_EXECUTOR_RETRY_DELAY_MS=100",
		"OPR_EXECUTOR_STOP_GRACE=1",
		"OPR_EXECUTOR_LOG_LEVEL=debug",
		prewarmOff,
		networkPoolOff,
		"CONTAINERS_REGISTRIES_CONF="+shared.registriesConf,
		// The test registry listens on the host's loopback only.
		"OPR_EXECUTOR_ROOTLESS_LOOPBACK_PORTS="+regPort,
	)
	if u.CgroupParent != "" {
		env = append(env, "OPR_EXECUTOR_CGROUP_PARENT="+u.CgroupParent)
	} else {
		// Nothing to find under it (leftovers globs below cgParent).
		x.cgParent = "/executor-rl-none-" + u.Name
	}
	x.env = append(env, extra...)
	x.start(t)
	t.Cleanup(func() {
		x.stop()
		if t.Failed() {
			t.Logf("rootless executor log:\n%s", x.logs.String())
		}
		x.assertRootlessClean(t)
	})
	return x
}

// start starts the daemon as the user and waits for its health check. With
// a delegated subtree, a shell of the user's waits on a pipe until the test
// (root) moved it into the subtree, then becomes the daemon.
func (x *rootlessDaemon) start(t testing.TB) {
	t.Helper()
	x.exited = make(chan struct{})
	// The daemon starts in the user's home: a relative EXECUTOR_BIN would
	// not be found from there.
	bin, err := filepath.Abs(shared.bin)
	if err != nil {
		t.Fatal(err)
	}
	x.cmd = exec.Command(bin)
	var release *os.File
	if x.user.CgroupParent != "" {
		pr, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer pr.Close()
		release = pw
		x.cmd = exec.Command("/bin/sh", "-c", `read go <&3 || exit 97; exec "$0" 3<&-`, bin)
		x.cmd.ExtraFiles = []*os.File{pr}
	}
	x.cmd.Env = x.env
	x.cmd.Dir = x.user.Home
	x.cmd.Stdout = x.logs
	x.cmd.Stderr = x.logs
	// As in the harness: the daemon gets SIGTERM if the test binary dies.
	x.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: x.user.Credential(), Pdeathsig: syscall.SIGTERM}
	waited, err := testenv.StartTied(x.cmd)
	if err != nil {
		if release != nil {
			release.Close()
		}
		t.Fatal(err)
	}
	go func() {
		x.exitErr = <-waited
		close(x.exited)
	}()
	if release != nil {
		err := x.user.Enter(x.cmd.Process.Pid)
		if err == nil {
			_, err = release.Write([]byte("go\n"))
		}
		release.Close()
		if err != nil {
			x.kill()
			t.Fatalf("starting the daemon in the delegated cgroup: %v", err)
		}
	}
	if err := x.waitHealthy(60 * time.Second); err != nil {
		_ = syscall.Kill(-x.cmd.Process.Pid, syscall.SIGKILL)
		t.Fatalf("rootless executor %v\n%s", err, x.logs.String())
	}
}

// source writes a code.tar.gz the user's daemon can read, in its storage.
func (x *rootlessDaemon) source(t testing.TB, files map[string]string) string {
	t.Helper()
	dir, err := os.MkdirTemp(x.storage, "fn-")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "code.tar.gz")
	if err := testenv.MakeSourceTarball(p, files); err != nil {
		t.Fatal(err)
	}
	if err := x.user.Chown(dir); err != nil {
		t.Fatal(err)
	}
	return p
}

// inner is the daemon's second process: the one in the user, mount and
// network namespaces it made (the first descendant of the started process
// that runs bin/executor in another user namespace than the test's).
func (x *rootlessDaemon) inner(t testing.TB) int {
	t.Helper()
	self, _ := os.Readlink("/proc/self/ns/user")
	// What the outer daemon runs: shared.bin, or the -race binary a wrapper
	// named shared.bin exec'd (scripts/race.sh).
	bin, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", x.cmd.Process.Pid))
	if err != nil {
		bin, _ = filepath.Abs(shared.bin)
		bin, _ = filepath.EvalSymlinks(bin)
	}
	bin = strings.TrimSuffix(bin, " (deleted)")
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(stat)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		children[ppid] = append(children[ppid], pid)
	}
	queue := []int{x.cmd.Process.Pid}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/user", pid))
		exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if ns != "" && ns != self && strings.TrimSuffix(exe, " (deleted)") == bin {
			return pid
		}
		sort.Ints(children[pid])
		queue = append(queue, children[pid]...)
	}
	t.Fatalf("no process of the daemon (pid %d) runs in a user namespace of its own", x.cmd.Process.Pid)
	return 0
}

// innerLeftovers lists what runtimes hold inside the daemon's namespaces:
// mounts under the data dir (besides the image store's) and veths on its bridge.
func (x *rootlessDaemon) innerLeftovers(t testing.TB) []string {
	t.Helper()
	pid := x.inner(t)
	var out []string
	mounts, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(mounts), "\n") {
		// The image store's own mount (images.Config.OwnMount) is the
		// running daemon's.
		if f := strings.Fields(line); len(f) > 4 && f[4] == x.dataDir+"/images" {
			continue
		}
		if strings.Contains(line, x.dataDir+"/") && !strings.Contains(line, x.dataDir+"/images/") {
			out = append(out, "mount in the daemon's namespace: "+line)
		}
	}
	ns, err := vnetns.GetFromPid(pid)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if br, err := h.LinkByName(netns.BridgeName(x.network)); err == nil {
		links, err := h.LinkList()
		for i := 0; i < 20 && errors.Is(err, netlink.ErrDumpInterrupted); i++ {
			links, err = h.LinkList()
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range links {
			if l.Attrs().MasterIndex == br.Attrs().Index {
				out = append(out, "veth in the daemon's namespace: "+l.Attrs().Name)
			}
		}
	}
	return out
}

// waitCleanInside polls (5 s at most) until neither the host nor the
// daemon's namespaces hold anything of a runtime any more.
func (x *rootlessDaemon) waitCleanInside(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		l := append(x.leftovers(), x.innerLeftovers(t)...)
		for _, c := range x.runtimeCgroups() {
			l = append(l, "cgroup: "+c)
		}
		for _, p := range x.user.Processes() {
			if p.UID != x.user.UID {
				l = append(l, "runtime process: "+p.String())
			}
		}
		if len(l) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("runtime resources left behind:\n%s", strings.Join(l, "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// runtimeCgroups are the cgroups below the delegated parent, less the
// daemon's own leaf on cgroup v2 (it cannot remove the cgroup it is in; the
// service manager does, as for a root daemon in its unit).
func (x *rootlessDaemon) runtimeCgroups() []string {
	var out []string
	for _, c := range x.user.CgroupChildren() {
		if cgroup2() && filepath.Base(c) == "supervisor" && filepath.Dir(c) == filepath.Join("/sys/fs/cgroup", x.user.CgroupParent) {
			continue
		}
		out = append(out, c)
	}
	return out
}

// assertRootlessClean checks, once the daemon stopped, that nothing of it is
// left on the host: no process of the user or of its subordinate ids
// (slirp4netns included), no mount under its home, no new link, no cgroup below the
// delegated parent, nothing in the data dir's runtimes/ and containers/.
func (x *rootlessDaemon) assertRootlessClean(t testing.TB) {
	t.Helper()
	var l []string
	deadline := time.Now().Add(5 * time.Second)
	for {
		l = l[:0]
		for _, p := range x.user.Processes() {
			l = append(l, "process: "+p.String())
		}
		for pid := range slirpPids() {
			if !x.hostSlirps[pid] {
				p, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
				l = append(l, fmt.Sprintf("user-mode network process %d: %s", pid, strings.ReplaceAll(string(p), "\x00", " ")))
			}
		}
		if len(l) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, m := range testenv.MountsUnder(x.user.Home) {
		l = append(l, "mount on the host: "+m)
	}
	for _, n := range x.hostLinks(t) {
		l = append(l, "link on the host: "+n)
	}
	for _, c := range x.runtimeCgroups() {
		l = append(l, "cgroup: "+c)
	}
	l = append(l, x.leftovers()...)
	if len(l) > 0 {
		t.Errorf("the rootless daemon left behind:\n%s", strings.Join(l, "\n"))
	}
}

// hostLinks lists the host's links named as this daemon's network names
// its bridge and veths (netns: the bridge's name, "v" and six characters of
// it): those belong in the daemon's own network namespace only. Other
// tests' daemons and bridges come and go on the host meanwhile (go test
// runs packages in parallel), so no other link counts.
func (x *rootlessDaemon) hostLinks(t testing.TB) []string {
	t.Helper()
	br := netns.BridgeName(x.network)
	var links []netlink.Link
	var err error
	for i := 0; i < 20; i++ {
		// A dump the kernel interrupted (links changing meanwhile) is read again.
		if links, err = netlink.LinkList(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range links {
		if n := l.Attrs().Name; n == br || strings.HasPrefix(n, "v"+br[3:9]) {
			out = append(out, n)
		}
	}
	return out
}

// slirpPids are the host's user-mode network processes: slirp4netns, and
// pasta (passt's binary under either name).
func slirpPids() map[int]bool {
	m := map[int]bool{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		comm, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "comm"))
		if c := strings.TrimSpace(string(comm)); strings.HasPrefix(c, "slirp4netns") || strings.HasPrefix(c, "pasta") || strings.HasPrefix(c, "passt") {
			m[pid] = true
		}
	}
	return m
}

// healthWarnings reads GET /v1/health (no key) and returns its warnings.
func healthWarnings(t testing.TB, x *executor) []string {
	t.Helper()
	req, _ := http.NewRequest("GET", x.url+"/v1/health", nil)
	r := do(t, req)
	if r.status != 200 {
		t.Fatalf("health: %d %s", r.status, r.body)
	}
	var h struct {
		Status   string   `json:"status"`
		Warnings []string `json:"warnings"`
	}
	if err := json.Unmarshal(r.body, &h); err != nil || h.Status != "pass" {
		t.Fatalf("health: %s (%v)", r.body, err)
	}
	return h.Warnings
}

// mentionsLimits says whether s is about runtimes' CPU and memory limits
// (not, say, the disk cap a rootless daemon also warns about).
func mentionsLimits(s string) bool {
	s = strings.ToLower(s)
	return strings.Contains(s, "cpu") && strings.Contains(s, "memory")
}

// limitWarningsInLog are the daemon's log warnings about limits.
func limitWarningsInLog(logs string) []string {
	var out []string
	for _, line := range logLines(logs) {
		if strings.Contains(line, "level=WARN") && mentionsLimits(line) {
			out = append(out, line)
		}
	}
	return out
}

// assertHostSeesNothing checks, while runtimes run, that the daemon's
// network and mounts stay in its own namespaces: no bridge or new link on
// the host, no mount under the user's home in the host's mount table.
func (x *rootlessDaemon) assertHostSeesNothing(t testing.TB) {
	t.Helper()
	if n := x.hostLinks(t); len(n) > 0 {
		t.Errorf("the rootless daemon's links are on the host: %v", n)
	}
	if m := testenv.MountsUnder(x.user.Home); len(m) > 0 {
		t.Errorf("mounts on the host under the user's home: %v", m)
	}
}

// TestRootlessCore is the end-to-end core against a daemon started by an
// unprivileged user with a delegated cgroup subtree: pull, cold start, warm
// execution, limits, build with output (v5 array, v2 string), v2/v4/v5
// executions, delete, restart; no leftovers on the host or in the daemon's
// namespaces.
func TestRootlessCore(t *testing.T) {
	u := rootlessUser(t, true)
	x := startRootless(t, u)

	t.Run("bootstrap", func(t *testing.T) {
		pid := x.inner(t)
		uidMap, _ := os.ReadFile(fmt.Sprintf("/proc/%d/uid_map", pid))
		gidMap, _ := os.ReadFile(fmt.Sprintf("/proc/%d/gid_map", pid))
		wantU := fmt.Sprintf("0 %d 1|1 %d %d", u.UID, u.SubStart, u.SubCount)
		wantG := fmt.Sprintf("0 %d 1|1 %d %d", u.GID, u.SubStart, u.SubCount)
		if got := mapString(uidMap); got != wantU {
			t.Errorf("the daemon's uid_map %q, want %q", got, wantU)
		}
		if got := mapString(gidMap); got != wantG {
			t.Errorf("the daemon's gid_map %q, want %q", got, wantG)
		}
		st, err := os.Stat(x.dataDir)
		if err != nil {
			t.Fatalf("default data dir ~/.local/share/executor: %v", err)
		}
		if s := st.Sys().(*syscall.Stat_t); int(s.Uid) != u.UID {
			t.Errorf("data dir %s is owned by uid %d, not the user's %d", x.dataDir, s.Uid, u.UID)
		}
		for _, w := range healthWarnings(t, x.executor) {
			if mentionsLimits(w) {
				t.Errorf("health warns about limits with a delegated cgroup: %q", w)
			}
		}
		if w := limitWarningsInLog(x.logs.String()); len(w) > 0 {
			t.Errorf("the log warns about limits with a delegated cgroup: %q", w)
		}
		for _, p := range u.Processes() {
			if p.UID != u.UID {
				t.Errorf("a process runs as a subordinate id before any runtime: %v", p)
			}
		}
	})

	src := x.source(t, map[string]string{"index.js": "rootless-marker"})
	t.Run("pull", func(t *testing.T) {
		r := x.request(t, "POST", "/v1/images", map[string]any{"image": "openruntimes/test:v5-1"}, nil)
		if r.status != 200 || r.json(t)["status"] != "pulled" {
			t.Fatalf("pull: %d %s", r.status, r.body)
		}
	})

	t.Run("cold start and warm execution", func(t *testing.T) {
		start := time.Now()
		r := x.request(t, "POST", "/v1/runtimes/fn-1/executions", execBody(src, map[string]any{
			"path": "/echo?x=1", "method": "POST", "body": "hello rootless",
			"variables": map[string]any{"TEST_VAR": "value-1"},
		}), jsonAccept)
		if r.status != 200 || r.json(t)["statusCode"] != float64(200) {
			t.Fatalf("cold execution: %d %s", r.status, r.body)
		}
		t.Logf("rootless cold start + execution took %v", time.Since(start))
		var echo struct {
			Body string            `json:"body"`
			Env  map[string]string `json:"env"`
			Code string            `json:"code"`
		}
		if err := json.Unmarshal([]byte(r.json(t)["body"].(string)), &echo); err != nil {
			t.Fatal(err)
		}
		if echo.Body != "hello rootless" || echo.Code != "rootless-marker" || echo.Env["TEST_VAR"] != "value-1" {
			t.Errorf("echo %+v", echo)
		}
		r = x.request(t, "POST", "/v1/runtimes/fn-1/executions", map[string]any{"path": "/status?code=201"}, jsonAccept)
		if r.status != 200 || r.json(t)["statusCode"] != float64(201) {
			t.Fatalf("warm execution: %d %s", r.status, r.body)
		}
		// The runtime runs as the user's subordinate ids, never as the
		// user itself or as root, and nothing of it shows on the host.
		sub := 0
		for _, p := range u.Processes() {
			if p.UID >= u.SubStart && p.UID < u.SubStart+u.SubCount {
				sub++
			}
		}
		if sub == 0 {
			t.Errorf("no process runs as a subordinate id of %s while a runtime runs: %v", u.Name, u.Processes())
		}
		x.assertHostSeesNothing(t)
		r = x.request(t, "GET", "/v1/runtimes", nil, nil)
		var list []map[string]any
		if err := json.Unmarshal(r.body, &list); err != nil || len(list) != 1 || !strings.HasPrefix(list[0]["status"].(string), "Up ") {
			t.Fatalf("list: %s", r.body)
		}
	})

	t.Run("limits hold", func(t *testing.T) {
		r := x.request(t, "POST", "/v1/runtimes/limits/executions", execBody(src, map[string]any{
			"path": "/cgroup", "cpus": 0.5, "memory": 128,
		}), jsonAccept)
		if r.status != 200 {
			t.Fatalf("%d %s", r.status, r.body)
		}
		cg := readCgroupSeen(t, r)
		if cg.MemoryBytes != 128_000_000 || cg.CPUQuotaUs != 50000 || cg.CPUPeriodUs != 100000 || cg.PidsMax != 1024 {
			t.Errorf("limits seen inside the runtime: %+v", cg)
		}
		// The runtime's cgroup is below the delegated parent.
		if got := memoryLimitsBelow(u); !contains(got, "128000000") {
			t.Errorf("memory limits below %s: %v, want one of 128000000", u.CgroupParent, got)
		}
		// And the kernel enforces it: the runtime that allocates twice its
		// memory is killed and the execution says so.
		r = x.request(t, "POST", "/v1/runtimes/limits/executions", map[string]any{"path": "/alloc?mb=256"}, jsonAccept)
		if r.status != 500 || !strings.Contains(string(r.body), "ran out of memory") {
			t.Fatalf("an execution past the memory limit: %d %s", r.status, r.body)
		}
		deadline := time.Now().Add(5 * time.Second)
		for x.request(t, "GET", "/v1/runtimes/limits", nil, nil).status != 404 {
			if time.Now().After(deadline) {
				t.Fatal("OOM-killed runtime still listed")
			}
			time.Sleep(50 * time.Millisecond)
		}
	})

	t.Run("build with output", func(t *testing.T) {
		bsrc := x.source(t, map[string]string{"index.js": "built-rootless"})
		dest := x.storage + "/builds/app"
		r := x.request(t, "POST", "/v1/runtimes", map[string]any{
			"runtimeId": "build-1", "image": "openruntimes/test:v5-1", "source": bsrc, "entrypoint": "index.js",
			"destination": dest, "remove": true,
			"command": `tar -zxf /tmp/code.tar.gz -C /mnt/code && sh helpers/build.sh "echo installing-rootless"`,
		}, nil)
		if r.status != 201 {
			t.Fatalf("build: %d %s", r.status, r.body)
		}
		res := r.json(t)
		path, _ := res["path"].(string)
		if !strings.HasPrefix(path, dest+"/") || res["size"].(float64) <= 0 {
			t.Fatalf("artifact %v", res)
		}
		var out strings.Builder
		for _, e := range res["output"].([]any) {
			out.WriteString(e.(map[string]any)["content"].(string))
		}
		if !strings.Contains(out.String(), "installing-rootless") {
			t.Errorf("v5 build output %q", out.String())
		}
		if st, err := os.Stat(path); err != nil || int(st.Sys().(*syscall.Stat_t).Uid) != u.UID {
			t.Errorf("artifact %s on the host: %v (want it owned by %s)", path, err, u.Name)
		}
		r = x.request(t, "POST", "/v1/runtimes/from-build/executions", execBody(path, nil), jsonAccept)
		if r.status != 200 {
			t.Fatalf("%d %s", r.status, r.body)
		}
		var echo struct {
			Code string `json:"code"`
		}
		_ = json.Unmarshal([]byte(r.json(t)["body"].(string)), &echo)
		if echo.Code != "built-rootless" {
			t.Errorf("runtime from the built artifact sees code %q", echo.Code)
		}

		r = x.request(t, "POST", "/v1/runtimes", map[string]any{"runtimeId": "legacy-build", "image": "openruntimes/test:v2-1",
			"version": "v2", "command": "echo legacy-out", "remove": true}, nil)
		if r.status != 201 {
			t.Fatalf("v2 build: %d %s", r.status, r.body)
		}
		if s, ok := r.json(t)["output"].(string); !ok || !strings.Contains(s, "legacy-out") {
			t.Errorf("v2 build output is not one string with the command's output: %v", r.json(t)["output"])
		}
	})

	t.Run("protocols", func(t *testing.T) {
		r := x.request(t, "POST", "/v1/runtimes/proto-v2/executions", map[string]any{
			"image": "openruntimes/test:v2-1", "source": src, "entrypoint": "index.js", "version": "v2",
			"body": "payload-2", "variables": map[string]any{"A": "1"},
		}, jsonAccept)
		if r.status != 200 {
			t.Fatalf("v2: %d %s", r.status, r.body)
		}
		if res := r.json(t); res["statusCode"] != float64(200) || !strings.Contains(res["body"].(string), `"payload":"payload-2"`) || res["logs"] != "v2 log" {
			t.Errorf("v2 result %v", res)
		}
		r = x.request(t, "POST", "/v1/runtimes/proto-v4/executions", execBody(src, map[string]any{
			"image": "openruntimes/test:v4-1", "version": "v4", "path": "/logs",
		}), jsonAccept)
		if res := r.json(t); r.status != 200 || res["statusCode"] != float64(200) || !strings.Contains(res["logs"].(string), "log line") {
			t.Errorf("v4: %d %v", r.status, res)
		}
		r = x.request(t, "POST", "/v1/runtimes/proto-v5/executions", execBody(src, map[string]any{"path": "/logs"}), jsonAccept)
		if res := r.json(t); r.status != 200 || res["statusCode"] != float64(200) || !strings.Contains(res["logs"].(string), "log line") ||
			!strings.Contains(res["errors"].(string), "error line") {
			t.Errorf("v5: %d %v", r.status, res)
		}
		x.assertHostSeesNothing(t)
	})

	t.Run("delete", func(t *testing.T) {
		for _, id := range []string{"fn-1", "from-build", "proto-v2", "proto-v4", "proto-v5"} {
			if r := x.request(t, "DELETE", "/v1/runtimes/"+id, nil, nil); r.status != 200 {
				t.Errorf("delete %s: %d %s", id, r.status, r.body)
			}
		}
		x.waitCleanInside(t)
		if r := x.request(t, "GET", "/v1/runtimes", nil, nil); string(r.body) != "[]" {
			t.Fatalf("runtimes after deleting them all: %s", r.body)
		}
	})

	t.Run("restart", func(t *testing.T) {
		if r := x.request(t, "POST", "/v1/runtimes/survivor/executions", execBody(src, nil), jsonAccept); r.status != 200 {
			t.Fatalf("%d %s", r.status, r.body)
		}
		x.stop() // SIGTERM to the first process: forwarded, exit 0, runtimes removed
		if x.exitErr != nil {
			t.Fatalf("stop: %v\n%s", x.exitErr, x.logs.String())
		}
		x.assertRootlessClean(t)
		x.logs = &syncBuffer{}
		x.start(t) // same data dir, image store, network name and cgroup parent
		if r := x.request(t, "GET", "/v1/runtimes", nil, nil); string(r.body) != "[]" {
			t.Fatalf("runtimes after a restart: %s", r.body)
		}
		r := x.request(t, "POST", "/v1/runtimes/again/executions", execBody(src, map[string]any{"path": "/status?code=202"}), jsonAccept)
		if r.status != 200 || r.json(t)["statusCode"] != float64(202) {
			t.Fatalf("cold start after a restart: %d %s", r.status, r.body)
		}
		if strings.Contains(x.logs.String(), "pulling") || strings.Contains(x.logs.String(), "Pulling") {
			t.Logf("the restarted daemon pulled again (the image store should have kept the image)")
		}
		if r := x.request(t, "DELETE", "/v1/runtimes/again", nil, nil); r.status != 200 {
			t.Fatalf("delete: %d %s", r.status, r.body)
		}
		x.waitCleanInside(t)
	})
}

// TestRootlessCrashThenRestart: the process the user started is killed by
// SIGKILL with a runtime running (a crash, an OOM kill): the daemon and the
// runtime end with it (the daemon's pid namespace ends), and starting it
// again finds nothing to remove and serves.
func TestRootlessCrashThenRestart(t *testing.T) {
	u := rootlessUser(t, true)
	x := startRootless(t, u)
	src := x.source(t, map[string]string{"index.js": "x"})
	if r := x.request(t, "POST", "/v1/runtimes/orphan/executions", execBody(src, nil), jsonAccept); r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	x.kill() // SIGKILL to the first process only
	deadline := time.Now().Add(10 * time.Second)
	for ps := u.Processes(); len(ps) > 0; ps = u.Processes() {
		if time.Now().After(deadline) {
			t.Fatalf("processes of %s still running 10 s after the first process was killed: %v", u.Name, ps)
		}
		time.Sleep(50 * time.Millisecond)
	}
	x.logs = &syncBuffer{}
	x.start(t)
	x.waitCleanInside(t)
	if r := x.request(t, "GET", "/v1/runtimes", nil, nil); string(r.body) != "[]" {
		t.Fatalf("runtimes after the restart: %s", r.body)
	}
	if r := x.request(t, "POST", "/v1/runtimes/again/executions", execBody(src, nil), jsonAccept); r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
}

// TestRootlessWithoutCgroups: a user with no delegated cgroup still gets a
// working daemon, with limits off, said in the log and in GET /v1/health.
func TestRootlessWithoutCgroups(t *testing.T) {
	u := rootlessUser(t, false)
	x := startRootless(t, u)
	// The log reaches the test through a pipe: give it a moment.
	warned := false
	for deadline := time.Now().Add(5 * time.Second); !warned && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		warned = len(limitWarningsInLog(x.logs.String())) > 0
	}
	if !warned {
		t.Errorf("no warning about limits being off in the log:\n%s", x.logs.String())
	}
	ws := healthWarnings(t, x.executor)
	found := false
	for _, w := range ws {
		found = found || mentionsLimits(w)
	}
	if !found {
		t.Errorf("GET /v1/health does not say limits are off: warnings %q", ws)
	}
	src := x.source(t, map[string]string{"index.js": "unlimited"})
	r := x.request(t, "POST", "/v1/runtimes/free/executions", execBody(src, map[string]any{"memory": 128}), jsonAccept)
	if r.status != 200 || r.json(t)["statusCode"] != float64(200) {
		t.Fatalf("cold start with limits off: %d %s", r.status, r.body)
	}
	x.assertHostSeesNothing(t)
	if r := x.request(t, "DELETE", "/v1/runtimes/free", nil, nil); r.status != 200 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	x.waitCleanInside(t)
}

func mapString(b []byte) string {
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		lines = append(lines, strings.Join(strings.Fields(l), " "))
	}
	return strings.Join(lines, "|")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// memoryLimitsBelow reads the memory limits of the cgroups below the user's
// delegated parent (memory.max on v2, memory.limit_in_bytes on v1).
func memoryLimitsBelow(u *testenv.Rootless) []string {
	var out []string
	for _, c := range u.CgroupChildren() {
		for _, f := range []string{"memory.max", "memory.limit_in_bytes"} {
			if v, err := os.ReadFile(filepath.Join(c, f)); err == nil {
				out = append(out, strings.TrimSpace(string(v)))
			}
		}
	}
	return out
}

// dialInNetns dials from inside the network namespace of pid (a rootless
// daemon's, where runtimes' addresses are): the socket is made on a thread
// switched into it, then used from anywhere.
func dialInNetns(pid int) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		ch := make(chan result, 1)
		go func() {
			runtime.LockOSThread()
			self, err := os.Open("/proc/thread-self/ns/net")
			if err != nil {
				runtime.UnlockOSThread()
				ch <- result{nil, err}
				return
			}
			defer self.Close()
			target, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
			if err != nil {
				runtime.UnlockOSThread()
				ch <- result{nil, err}
				return
			}
			defer target.Close()
			if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
				runtime.UnlockOSThread()
				ch <- result{nil, err}
				return
			}
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if unix.Setns(int(self.Fd()), unix.CLONE_NEWNET) == nil {
				runtime.UnlockOSThread() // else the thread ends with this goroutine
			}
			ch <- result{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
}

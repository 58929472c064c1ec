// Package e2e drives the real bin/executor over HTTP: a real registry on
// loopback serves our test runtime images, the executor pulls them through a
// registries.conf mirror and runs them in libcontainer containers on a bridge.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

	"executor/netns"
	"executor/netns/nettest"
	"executor/tests/testenv"
)

const secret = "e2e-secret-key"

// env is what every test shares: the registry with the test images, the
// executor binary, and the registries.conf that mirrors docker.io to it.
type env struct {
	work           string
	data           string // parent of the executors' data dirs
	bin            string
	registry       *testenv.Registry
	registriesConf string
	storage        string // directory holding function sources
	server         string // the test runtime server (tests/runtime) in the images
}

var shared *env

func TestMain(m *testing.M) {
	if os.Getuid() != 0 {
		fmt.Fprintln(os.Stderr, "e2e: these tests need root (containers, cgroups, bridges); CI runs them as root")
		os.Exit(1)
	}
	code, err := setup(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e setup:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func setup(m *testing.M) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	work, err := os.MkdirTemp("", "executor-e2e-")
	if err != nil {
		return 1, err
	}
	defer os.RemoveAll(work)
	// The executor's data dirs live here: runtimes' mapped roots must be
	// able to traverse it, as they can /var/lib.
	if err := os.Chmod(work, 0o711); err != nil {
		return 1, err
	}
	e := &env{work: work, storage: filepath.Join(work, "storage")}
	// The executors' data dirs: outside /tmp, which is a default storage
	// root (the daemon refuses a data dir that API clients could reach).
	e.data, err = os.MkdirTemp("/var/tmp", "executor-e2e-data-")
	if err != nil {
		return 1, err
	}
	defer os.RemoveAll(e.data)
	if err := os.Chmod(e.data, 0o711); err != nil {
		return 1, err
	}
	if err := os.MkdirAll(e.storage, 0o755); err != nil {
		return 1, err
	}
	e.bin = filepath.Join(work, "executor")
	if bin := os.Getenv("EXECUTOR_BIN"); bin != "" {
		// The rootless tests run the executor as an unprivileged user, who
		// may not reach a checkout beneath a private directory (a CI
		// clone in a mktemp -d): a copy here (0711) is theirs to run,
		// with the executor-init and executor-spawn it finds beside
		// itself.
		for _, f := range []string{"executor", "executor-init", "executor-spawn"} {
			src := bin
			if f != "executor" {
				src = filepath.Join(filepath.Dir(bin), f)
				if _, err := os.Stat(src); err != nil {
					continue
				}
			}
			if err := testenv.CopyExecutable(src, filepath.Join(work, f)); err != nil {
				return 1, err
			}
		}
	} else {
		root, err := moduleRoot()
		if err != nil {
			return 1, err
		}
		cmd := exec.CommandContext(ctx, "go", "build", "-tags", "containers_image_openpgp containers_image_storage_stub seccomp", "-o", e.bin, "./cmd/executor")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			return 1, fmt.Errorf("build executor: %v\n%s", err, out)
		}
		if err := testenv.BuildInit(ctx, filepath.Join(work, "executor-init")); err != nil {
			return 1, err
		}
		cmd = exec.CommandContext(ctx, "go", "build", "-tags", "seccomp", "-o", filepath.Join(work, "executor-spawn"), "./cmd/executor-spawn")
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			return 1, fmt.Errorf("build executor-spawn: %v\n%s", err, out)
		}
	}
	reg, err := testenv.StartRegistry(ctx, testenv.RegistryConfig{Dir: filepath.Join(work, "registry")})
	if err != nil {
		return 1, err
	}
	defer reg.Stop()
	e.registry = reg
	// E2E_RUNTIME_SERVER names a prebuilt test runtime server (tests/runtime),
	// for hosts without a Go toolchain (the cgroup v2 guest of make test-cgroup2).
	server := os.Getenv("E2E_RUNTIME_SERVER")
	if server == "" {
		server = filepath.Join(work, "runtime-server")
		if err := testenv.BuildRuntimeServer(ctx, server); err != nil {
			return 1, err
		}
	}
	e.server = server
	for _, im := range []struct {
		tag, protocol string
		bash          bool
	}{{"v5-1", "v5", true}, {"v4-1", "v4", true}, {"v3-1", "v3", true}, {"v2-1", "v2", true}, {"v5-nobash", "v5", false}} {
		layout, err := testenv.BuildRuntimeImage(ctx, testenv.ImageOptions{
			Dir: filepath.Join(work, "images", im.tag), Protocol: im.protocol, ServerBinary: server, WithBash: im.bash, Tag: im.tag,
		})
		if err != nil {
			return 1, err
		}
		if err := testenv.PushImage(ctx, layout, im.tag, reg.Addr()+"/openruntimes/test:"+im.tag, true); err != nil {
			return 1, err
		}
	}
	e.registriesConf = filepath.Join(work, "registries.conf")
	if err := testenv.WriteRegistriesConf(e.registriesConf, reg.Addr()); err != nil {
		return 1, err
	}
	shared = e
	return m.Run(), nil
}

func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// executor is one running bin/executor with its own data dir, bridge,
// subnet and cgroup parent.
type executor struct {
	t        testing.TB
	cmd      *exec.Cmd
	url      string
	dataDir  string
	network  string
	cgParent string
	// unit, when set, is the cgroup the daemon is started in, as systemd
	// starts a unit with Delegate=yes; it is also the cgroup parent.
	unit string
	// netns, when set, is the named network namespace (/run/netns) the
	// daemon runs in, as on a host of its own: its bridge, veths and
	// firewall live there, and its API listens on an address of it.
	netns   string
	env     []string
	logs    *syncBuffer
	exited  chan struct{}
	exitErr error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// line is the first whole line (one the daemon finished writing) that
// holds every one of parts.
func (s *syncBuffer) line(parts ...string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	rest := s.b.Bytes()
	for {
		end := bytes.IndexByte(rest, '\n')
		if end < 0 {
			return "", false
		}
		l := rest[:end]
		rest = rest[end+1:]
		all := true
		for _, p := range parts {
			if !bytes.Contains(l, []byte(p)) {
				all = false
				break
			}
		}
		if all {
			return string(l), true
		}
	}
}

// Count is strings.Count(s.String(), sub) without the copy: polled against
// a daemon's log of megabytes (a benchmark's thousand runtimes), each copy
// is garbage the next timed request may pay for.
func (s *syncBuffer) Count(sub string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Count(s.b.Bytes(), []byte(sub))
}

// freeSubnet picks a /24 in 10.0.0.0/8 that no interface or route of the
// host uses.
func freeSubnet(t testing.TB) netip.Prefix {
	t.Helper()
	p, err := nettest.FreeSubnet(24)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// listenAllAddrs, passed to startExecutor, makes the API listen on every
// address (on the port the harness picked) instead of loopback only.
const listenAllAddrs = "OPR_EXECUTOR_LISTEN=0.0.0.0"

// inUnitCgroup, passed to startExecutor, starts the daemon the way systemd
// starts a unit with Delegate=yes: in a cgroup of its own (made here, in
// every hierarchy on cgroup v1), which is also OPR_EXECUTOR_CGROUP_PARENT.
// The harness removes that cgroup after the daemon stopped, as systemd does.
// Such an executor is started once: on cgroup v2 its cgroup hands
// controllers down afterwards and so takes no processes any more.
const inUnitCgroup = "E2E_IN_UNIT_CGROUP"

// inNetns, passed to startExecutor as inNetns+NAME together with an
// OPR_EXECUTOR_LISTEN address of that namespace, runs the daemon in the
// named network namespace (made by the test, under /run/netns): a host of
// its own on this machine. nsenter enters the network namespace only, so
// the daemon's mounts and cgroups are the host's, as the leak checks expect.
const inNetns = "E2E_NETNS="

// cgroup2 says whether the host has the pure cgroup v2 layout.
func cgroup2() bool {
	_, err := os.Stat("/sys/fs/cgroup/cgroup.controllers")
	return err == nil
}

// unitCgroupDirs are the directories of the unit cgroup: one on cgroup v2, one
// per hierarchy that holds runtimes' limits on v1.
func (x *executor) unitCgroupDirs() []string {
	if cgroup2() {
		return []string{filepath.Join("/sys/fs/cgroup", x.unit)}
	}
	var dirs []string
	for _, h := range []string{"memory", "cpu", "pids"} {
		dirs = append(dirs, filepath.Join("/sys/fs/cgroup", h, x.unit))
	}
	return dirs
}

var instanceSeq struct {
	mu sync.Mutex
	n  int
}

// startExecutor starts bin/executor with the shared test settings plus extra
// (NAME=value) and stops it at the end of the test, checking it left nothing.
// prewarmOff keeps the prewarm pool (on by default) out of a test's
// daemon; "OPR_EXECUTOR_PREWARM=" among a test's settings undoes it.
const prewarmOff = "OPR_EXECUTOR_PREWARM=0"

// networkPoolOff keeps the network endpoints made ahead of need (two by
// default) out of a test's daemon, for the reason prewarmOff does;
// networkPoolDefault among a test's settings undoes it (the benchmarks
// measure the defaults; TestNetworkPool and TestLiveRestoreNetworkPool
// test the pool).
const (
	networkPoolOff     = "OPR_EXECUTOR_NETWORK_POOL=0"
	networkPoolDefault = "OPR_EXECUTOR_NETWORK_POOL="
)

func startExecutor(t testing.TB, extra ...string) *executor {
	t.Helper()
	instanceSeq.mu.Lock()
	instanceSeq.n++
	seq := instanceSeq.n
	instanceSeq.mu.Unlock()
	port, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	x := &executor{
		t:        t,
		url:      fmt.Sprintf("http://127.0.0.1:%d", port),
		dataDir:  filepath.Join(shared.data, fmt.Sprintf("data-%d", seq)),
		network:  fmt.Sprintf("e2e-%d-%d", os.Getpid(), seq),
		cgParent: fmt.Sprintf("/executor-e2e-%d-%d", os.Getpid(), seq),
		logs:     &syncBuffer{},
		exited:   make(chan struct{}),
	}
	for i, kv := range extra {
		switch kv {
		case listenAllAddrs:
			extra[i] = fmt.Sprintf("OPR_EXECUTOR_LISTEN=0.0.0.0:%d", port)
		case inUnitCgroup:
			x.unit = fmt.Sprintf("/executor-e2e-unit-%d-%d", os.Getpid(), seq)
			x.cgParent = x.unit
			extra[i] = "OPR_EXECUTOR_CGROUP_PARENT=" + x.unit
			for _, d := range x.unitCgroupDirs() {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
		default:
			if name, ok := strings.CutPrefix(kv, inNetns); ok {
				x.netns = name
			}
		}
	}
	if x.netns != "" {
		// The API is reached at the namespace's address, which the test
		// gives as the listen address.
		for _, kv := range extra {
			if addr, ok := strings.CutPrefix(kv, "OPR_EXECUTOR_LISTEN="); ok {
				x.url = "http://" + addr
			}
		}
	}
	// Later entries win: extra overrides the defaults.
	x.env = append([]string{
		"PATH=" + os.Getenv("PATH"),
		"OPR_EXECUTOR_ENV=development",
		"OPR_EXECUTOR_SECRET=" + secret,
		fmt.Sprintf("OPR_EXECUTOR_LISTEN=127.0.0.1:%d", port),
		"OPR_EXECUTOR_DATA_DIR=" + x.dataDir,
		"OPR_EXECUTOR_NETWORK=" + x.network,
		"OPR_EXECUTOR_SUBNET=" + freeSubnet(t).String(),
		"OPR_EXECUTOR_CGROUP_PARENT=" + x.cgParent,
		"OPR_EXECUTOR_RETRY_DELAY_MS=100",
		"OPR_EXECUTOR_STOP_GRACE=1",
		"OPR_EXECUTOR_LOG_LEVEL=debug",
		// The tests account for every runtime's container, mounts, veth
		// and cgroups while the daemon runs, which sandboxes waiting in
		// the pool would add to; prewarm_test.go runs with the pool (the
		// default) and compares its runtimes with these. The same for
		// the network endpoints kept ready.
		prewarmOff,
		networkPoolOff,
		"CONTAINERS_REGISTRIES_CONF=" + shared.registriesConf,
	}, extra...)
	if x.unit != "" {
		t.Cleanup(x.removeUnit)
	}
	x.start()
	t.Cleanup(func() {
		x.stop()
		if t.Failed() {
			t.Logf("executor log:\n%s", x.logs.String())
		}
		x.assertClean()
	})
	return x
}

// removeUnit removes the unit cgroup and what the daemon made in it (its
// supervisor leaf on cgroup v2), as systemd does once a unit stopped; a
// process still there is an error.
func (x *executor) removeUnit() {
	for _, d := range x.unitCgroupDirs() {
		for _, cg := range []string{filepath.Join(d, "supervisor"), d} {
			if procs, _ := os.ReadFile(filepath.Join(cg, "cgroup.procs")); len(bytes.TrimSpace(procs)) > 0 {
				x.t.Errorf("processes left in %s after the daemon stopped: %s", cg, procs)
			}
			if err := os.Remove(cg); err != nil && !os.IsNotExist(err) {
				x.t.Errorf("remove unit cgroup %s: %v", cg, err)
			}
		}
	}
}

func (x *executor) start() {
	x.t.Helper()
	x.exited = make(chan struct{})
	x.cmd = exec.Command(shared.bin)
	if x.unit != "" {
		// The shell enters the unit's cgroup and becomes the daemon, as
		// systemd's child does: the daemon starts there, threads and all.
		args := []string{"-c", `bin=$1; shift; for f; do echo $$ >"$f" || exit 1; done; exec "$bin"`, "sh", shared.bin}
		for _, d := range x.unitCgroupDirs() {
			args = append(args, filepath.Join(d, "cgroup.procs"))
		}
		x.cmd = exec.Command("/bin/sh", args...)
	}
	if x.netns != "" {
		x.cmd = exec.Command("nsenter", "--net=/run/netns/"+x.netns, "--", shared.bin)
	}
	x.cmd.Env = x.env
	x.cmd.Stdout = x.logs
	x.cmd.Stderr = x.logs
	// A test binary that dies (its -timeout, a panic, a SIGKILL) takes its
	// daemons down with it: they get SIGTERM and remove what they made,
	// rather than hold runtimes and bridges on a shared machine. StartTied:
	// Pdeathsig follows the forking thread.
	x.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	waited, err := testenv.StartTied(x.cmd)
	if err != nil {
		x.t.Fatal(err)
	}
	go func() {
		x.exitErr = <-waited
		close(x.exited)
	}()
	if err := x.waitHealthy(30 * time.Second); err != nil {
		x.t.Fatalf("executor %v\n%s", err, x.logs.String())
	}
}

// waitHealthy waits until GET /v1/health answers 200; it fails at once when
// the daemon exits first.
func (x *executor) waitHealthy(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-x.exited:
			return fmt.Errorf("exited at start: %v", x.exitErr)
		default:
		}
		resp, err := http.Get(x.url + "/v1/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("did not become healthy within %v", timeout)
}

// cgroupSeen is what the test runtime's /cgroup route reports: the limits
// the runtime sees from inside.
type cgroupSeen struct {
	MemoryBytes int64 `json:"memoryBytes"`
	CPUQuotaUs  int64 `json:"cpuQuotaUs"`
	CPUPeriodUs int64 `json:"cpuPeriodUs"`
	PidsMax     int64 `json:"pidsMax"`
}

// readCgroupSeen decodes the body of an execution of /cgroup.
func readCgroupSeen(t testing.TB, r *response) cgroupSeen {
	t.Helper()
	var cg cgroupSeen
	body, _ := r.json(t)["body"].(string)
	if err := json.Unmarshal([]byte(body), &cg); err != nil {
		t.Fatalf("/cgroup reply %q: %v", body, err)
	}
	return cg
}

// stop sends SIGTERM and waits for a clean exit.
func (x *executor) stop() { x.stopWith(syscall.SIGTERM) }

// stopWith sends sig and waits for a clean exit.
func (x *executor) stopWith(sig syscall.Signal) {
	select {
	case <-x.exited:
		return
	default:
	}
	_ = x.cmd.Process.Signal(sig)
	select {
	case <-x.exited:
		if x.exitErr != nil {
			x.t.Errorf("executor exited with %v after %v", x.exitErr, sig)
		}
	case <-time.After(60 * time.Second):
		_ = syscall.Kill(-x.cmd.Process.Pid, syscall.SIGKILL)
		<-x.exited
		x.t.Errorf("executor did not stop within 60s of %v", sig)
	}
}

// kill ends the executor with SIGKILL, as a crash would.
func (x *executor) kill() {
	_ = x.cmd.Process.Signal(syscall.SIGKILL)
	<-x.exited
}

// leftovers lists what this executor's runtimes hold on the host right now.
func (x *executor) leftovers() []string {
	var out []string
	running := true
	select {
	case <-x.exited:
		running = false
	default:
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mounts), "\n") {
		if !strings.Contains(line, x.dataDir+"/") || strings.Contains(line, x.dataDir+"/images/") {
			continue
		}
		// The image store's own mount (images.Config.OwnMount) is the
		// daemon's while it runs, and must be gone once it exited.
		if f := strings.Fields(line); running && len(f) > 4 && f[4] == x.dataDir+"/images" {
			continue
		}
		out = append(out, "mount: "+line)
	}
	for _, d := range []string{"runtimes", "containers"} {
		ents, _ := os.ReadDir(filepath.Join(x.dataDir, d))
		for _, e := range ents {
			out = append(out, "dir: "+filepath.Join(d, e.Name()))
		}
	}
	// Ports of every bridge of the network: the first and its overflow
	// bridges (its name plus a 2-digit index).
	nl, err := x.netlink()
	if err != nil {
		return append(out, "netns: "+err.Error())
	}
	defer nl.Close()
	links, _ := nl.LinkList()
	first := netns.BridgeName(x.network)
	bridges := map[int]bool{}
	for _, l := range links {
		if name := l.Attrs().Name; l.Type() == "bridge" && (name == first || strings.HasPrefix(name, first) && len(name) == len(first)+2) {
			bridges[l.Attrs().Index] = true
		}
	}
	for _, l := range links {
		if bridges[l.Attrs().MasterIndex] {
			out = append(out, "veth: "+l.Attrs().Name)
		}
	}
	cgs, err := x.cgroupsBelowParent()
	if err != nil {
		out = append(out, "cgroup: "+err.Error())
	}
	for _, c := range cgs {
		out = append(out, "cgroup: "+c)
	}
	return out
}

// netlink is a handle on the daemon's network namespace: the test's own, or
// the one it was started in (inNetns).
func (x *executor) netlink() (*netlink.Handle, error) {
	if x.netns == "" {
		return netlink.NewHandle()
	}
	ns, err := vnetns.GetFromName(x.netns)
	if err != nil {
		return nil, fmt.Errorf("network namespace %s: %w", x.netns, err)
	}
	defer ns.Close()
	return netlink.NewHandleAt(ns)
}

// assertClean checks, once the executor is stopped, that nothing of it is
// left: no runtime resources, no bridge, no cgroup parent.
func (x *executor) assertClean() {
	x.t.Helper()
	if l := x.leftovers(); len(l) > 0 {
		x.t.Errorf("left behind after shutdown:\n%s", strings.Join(l, "\n"))
	}
	if nl, err := x.netlink(); err != nil {
		x.t.Error(err)
	} else {
		if _, err := nl.LinkByName(netns.BridgeName(x.network)); err == nil {
			x.t.Errorf("bridge %s left behind after shutdown", netns.BridgeName(x.network))
		}
		nl.Close()
	}
	if x.unit != "" {
		// The unit's cgroup is the service manager's: removeUnit.
		return
	}
	hs, err := cgroupHierarchies()
	if err != nil {
		x.t.Error(err)
	}
	var p []string
	for _, h := range hs {
		if _, err := os.Stat(filepath.Join(h, x.cgParent)); err == nil {
			p = append(p, filepath.Join(h, x.cgParent))
		}
	}
	if len(p) > 0 {
		x.t.Errorf("cgroup parent left behind: %v", p)
	}
}

// cgroupHierarchies lists where cgroup hierarchies are mounted, from
// mountinfo: every v1 one and the unified one (/sys/fs/cgroup/unified) of a
// hybrid host, or the single cgroup2 root of a pure v2 host. Leak checks
// look at all of them: a check tied to one layout cannot fail on the other.
func cgroupHierarchies() ([]string, error) {
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, line := range strings.Split(string(mounts), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		f, fs := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(fs) < 1 || (fs[0] != "cgroup" && fs[0] != "cgroup2") {
			continue
		}
		if mnt := f[4]; strings.HasPrefix(mnt, "/sys/fs/cgroup") && !slices.Contains(out, mnt) {
			out = append(out, mnt)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no cgroup hierarchy mounted under /sys/fs/cgroup")
	}
	return out, nil
}

// cgroupsBelow lists every cgroup (directory) below parent, at any depth, on
// every hierarchy.
func cgroupsBelow(parent string) ([]string, error) {
	hs, err := cgroupHierarchies()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, h := range hs {
		top := filepath.Join(h, parent)
		_ = filepath.WalkDir(top, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() && p != top {
				out = append(out, p)
			}
			return nil
		})
	}
	return out, nil
}

// cgroupsBelowParent is cgroupsBelow the executor's cgroup parent, less the
// daemon's own leaf when it was started in the parent (the unit's cgroup on
// cgroup v2): that one is the service manager's to remove (removeUnit).
func (x *executor) cgroupsBelowParent() ([]string, error) {
	cgs, err := cgroupsBelow(x.cgParent)
	var out []string
	for _, c := range cgs {
		if x.unit != "" && filepath.Base(c) == "supervisor" && filepath.Base(filepath.Dir(c)) == filepath.Base(x.unit) {
			continue
		}
		out = append(out, c)
	}
	return out, err
}

// waitClean polls until the runtime resources are gone (deletion is
// synchronous, so this should hold at once; the poll only absorbs the kernel's
// asynchronous link removal).
func (x *executor) waitClean(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second) // generous: a loaded machine
	for {
		l := x.leftovers()
		if len(l) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("runtime resources left behind:\n%s", strings.Join(l, "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// response is a decoded HTTP answer.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r *response) json(t testing.TB) map[string]any {
	t.Helper()
	v, err := r.decode()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// decode is json for any goroutine: it returns the error instead.
func (r *response) decode() (map[string]any, error) {
	var v map[string]any
	if err := json.Unmarshal(r.body, &v); err != nil {
		return nil, fmt.Errorf("status %d: body is not a JSON object: %w\n%s", r.status, err, r.body)
	}
	return v, nil
}

// request sends method path with a JSON body (nil for none). It ends the
// test on a transport error, so only the test's own goroutine may call it;
// other goroutines call send.
func (x *executor) request(t testing.TB, method, path string, body any, headers map[string]string) *response {
	t.Helper()
	r, err := x.send(method, path, body, headers)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// send is request for any goroutine: failures come back as an error, for
// the test's goroutine to report.
func (x *executor) send(method, path string, body any, headers map[string]string) (*response, error) {
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
		if v == "" {
			req.Header.Del(k)
			continue
		}
		req.Header.Set(k, v)
	}
	return sendRequest(req)
}

// do sends req; like request, only from the test's goroutine.
func do(t testing.TB, req *http.Request) *response {
	t.Helper()
	r, err := sendRequest(req)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// sendRequest is do for any goroutine.
func sendRequest(req *http.Request) (*response, error) {
	client := &http.Client{Timeout: 120 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s %s: read the reply: %w", req.Method, req.URL.Path, err)
	}
	return &response{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

// deleteRuntime deletes runtime id and checks the answer: 200 and no body.
func (x *executor) deleteRuntime(t testing.TB, id string) {
	t.Helper()
	if r := x.request(t, "DELETE", "/v1/runtimes/"+id, nil, nil); r.status != 200 || len(r.body) != 0 {
		t.Fatalf("DELETE %s: %d %q", id, r.status, r.body)
	}
}

// streamRequest is GET path (a log stream) whose sent channel closes once
// the request is written to the connection: a client that must be
// listening before it acts (the stream before the build, as Appwrite's)
// waits for that instead of a fixed pause. The daemon's stream then waits
// up to 10 s for the runtime to appear, and a build takes longer than the
// daemon takes to read a request already in its socket.
func (x *executor) streamRequest(path string) (req *http.Request, sent <-chan struct{}) {
	ch := make(chan struct{})
	var once sync.Once
	trace := &httptrace.ClientTrace{WroteRequest: func(httptrace.WroteRequestInfo) { once.Do(func() { close(ch) }) }}
	req, _ = http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", x.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+secret)
	return req, ch
}

// parseMultipart splits a multipart execution reply into its named parts.
func parseMultipart(t testing.TB, r *response) map[string][]byte {
	t.Helper()
	mt, params, err := mime.ParseMediaType(r.header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" {
		t.Fatalf("content type %q is not multipart (%v); body %q", r.header.Get("Content-Type"), err, r.body)
	}
	mr := multipart.NewReader(bytes.NewReader(r.body), params["boundary"])
	parts := map[string][]byte{}
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("multipart: %v", err)
		}
		b, _ := io.ReadAll(p)
		parts[p.FormName()] = b
	}
	return parts
}

// source writes a code.tar.gz with files into the storage dir and returns
// its path, as a client names it in `source`.
func source(t testing.TB, files map[string]string) string {
	t.Helper()
	dir, err := os.MkdirTemp(shared.storage, "fn-")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "code.tar.gz")
	if err := testenv.MakeSourceTarball(p, files); err != nil {
		t.Fatal(err)
	}
	return p
}

const startCommand = `cp /tmp/code.tar.gz /mnt/code/code.tar.gz && nohup helpers/start.sh "sh helpers/server.sh"`

func logLines(s string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

var _ = net.Dial

package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"executor/oci"
	"executor/sandbox/container"
)

// A daemon started by an ordinary user runs as three processes:
//
//   - the host process, in the host's namespaces as that user: it binds the
//     API listener (so the port is the host's), makes the namespaces, maps
//     ids into them with the distribution's setuid newuidmap/newgidmap, runs
//     slirp4netns for egress, forwards signals and exits with the daemon's
//     status;
//   - the namespace init, pid 1 of a new pid namespace inside new user,
//     mount and network namespaces: it reaps orphans and forwards signals.
//     When it ends, the kernel kills every process of that pid namespace, so
//     no runtime outlives the daemon, however the daemon ended;
//   - the daemon, root in that user namespace: everything else runs there
//     unchanged (overlay roots, the bridge, veths, nftables, libcontainer).
//
// A process in a new user namespace has no capabilities after execve until
// it is mapped to root there, so the init waits for its maps and executes
// itself again before it starts the daemon.

// rootlessStageEnv names the stage a process of a rootless daemon is in. It
// is not an OPR_EXECUTOR_ setting: the host process sets it for its children.
const rootlessStageEnv = "_EXECUTOR_ROOTLESS_STAGE"

const (
	// stageMap: the namespace init waits for its id maps on syncFD.
	stageMap = "map"
	// stageInit: the namespace init, mapped: starts and supervises the daemon.
	stageInit = "init"
	// stageRun: the daemon.
	stageRun = "run"
)

// Descriptors the host process hands down.
const (
	listenerFD = 3 // the API listener, bound in the host's network namespace
	// syncFD gets one byte once ids are mapped and egress is up, and then
	// reads EOF when the host process dies: the namespace init ends then,
	// and with it every process of the daemon (its parent-death signal does
	// not survive the execve that gives it its capabilities).
	syncFD = 4
	// metricsFD is the metrics listener (OPR_EXECUTOR_METRICS_LISTEN), bound
	// in the host's network namespace like the API's; passed only when set.
	metricsFD = 5
)

// hostAddrsEnv carries the host's IPv4 addresses and gateways to the daemon:
// from its own network namespace they are ordinary destinations that
// slirp4netns would connect to from the host, so the firewall treats them
// (and slirp4netns's own network) as the host.
const hostAddrsEnv = "_EXECUTOR_ROOTLESS_HOST_ADDRS"

// hostMetricsEnv says the host process handed down a metrics listener
// (metricsFD).
const hostMetricsEnv = "_EXECUTOR_ROOTLESS_METRICS"

// rootlessStage is the stage of this process; "" for a root daemon or a
// rootless daemon's host process.
func rootlessStage() string { return os.Getenv(rootlessStageEnv) }

// rootless reports whether this daemon runs without real root: as the host
// process of an ordinary user, or in the namespaces it made.
func rootless() bool { return os.Geteuid() != 0 || rootlessStage() != "" }

// subIDRange is a user's range in /etc/subuid or /etc/subgid.
type subIDRange struct {
	Start, Count int64
}

// minSubIDs is the fewest subordinate ids a rootless daemon accepts: the
// 65536 ids base images use (nobody, 65534, among them).
const minSubIDs = 1 << 16

// readSubIDs returns the first range of at least minSubIDs ids that file
// (subuid(5) format) gives the user name or numeric id.
func readSubIDs(file string, name string, id int) (subIDRange, error) {
	f, err := os.Open(file)
	if err != nil {
		return subIDRange{}, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	var small bool
	for sc.Scan() {
		fields := strings.Split(strings.TrimSpace(sc.Text()), ":")
		if len(fields) != 3 || (fields[0] != name && fields[0] != strconv.Itoa(id)) {
			continue
		}
		start, err1 := strconv.ParseInt(fields[1], 10, 64)
		count, err2 := strconv.ParseInt(fields[2], 10, 64)
		if err1 != nil || err2 != nil || start < 0 || count <= 0 {
			continue
		}
		if count < minSubIDs {
			small = true
			continue
		}
		return subIDRange{Start: start, Count: count}, nil
	}
	if err := sc.Err(); err != nil {
		return subIDRange{}, err
	}
	if small {
		return subIDRange{}, fmt.Errorf("%s gives %s fewer than %d ids (base images use 0-65535)", file, name, minSubIDs)
	}
	return subIDRange{}, fmt.Errorf("%s has no range for %s (add one: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 %s)", file, name, name)
}

// rootlessHost is what the host process needs before it makes the namespaces.
type rootlessHost struct {
	uid, gid             int
	uids, gids           subIDRange
	newuidmap, newgidmap string
	slirp                string
}

// checkRootlessHost finds what a rootless daemon needs on the host, and
// says what is missing the way an operator fixes it.
func checkRootlessHost() (*rootlessHost, error) {
	h := &rootlessHost{uid: os.Getuid(), gid: os.Getgid()}
	name := strconv.Itoa(h.uid)
	if u, err := user.LookupId(name); err == nil {
		name = u.Username
	}
	var err error
	if h.uids, err = readSubIDs("/etc/subuid", name, h.uid); err != nil {
		return nil, fmt.Errorf("rootless: %w", err)
	}
	if h.gids, err = readSubIDs("/etc/subgid", name, h.uid); err != nil {
		return nil, fmt.Errorf("rootless: %w", err)
	}
	for _, tool := range []struct {
		dst       *string
		name, pkg string
	}{{&h.newuidmap, "newuidmap", "uidmap"}, {&h.newgidmap, "newgidmap", "uidmap"}, {&h.slirp, "slirp4netns", "slirp4netns"}} {
		if *tool.dst, err = exec.LookPath(tool.name); err != nil {
			return nil, fmt.Errorf("rootless: %s is not on PATH (Debian and Ubuntu package %s)", tool.name, tool.pkg)
		}
	}
	f, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("rootless: slirp4netns needs /dev/net/tun: %w", err)
	}
	f.Close()
	return h, nil
}

// runRootlessHost is the host process: it returns the daemon's exit code.
func runRootlessHost(cfg *config, log *slog.Logger) int {
	h, err := checkRootlessHost()
	if err != nil {
		log.Error("executor stopped", "err", err)
		return 1
	}
	code, err := h.run(cfg, log)
	if err != nil {
		log.Error("executor stopped", "err", err)
		return 1
	}
	return code
}

func (h *rootlessHost) run(cfg *config, log *slog.Logger) (int, error) {
	// The port is the host's: bound here, before the namespaces exist.
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return 0, fmt.Errorf("OPR_EXECUTOR_LISTEN %s: %w", cfg.Listen, err)
	}
	lnAddr := ln.Addr()
	lnFile, err := ln.(*net.TCPListener).File()
	ln.Close()
	if err != nil {
		return 0, fmt.Errorf("OPR_EXECUTOR_LISTEN %s: %w", cfg.Listen, err)
	}
	defer lnFile.Close()
	// The metrics port is the host's too (the daemon's network namespace is
	// reachable from nowhere): bound here, before anything is made.
	var metricsFile *os.File
	if cfg.MetricsListen != "" {
		mln, err := net.Listen("tcp", cfg.MetricsListen)
		if err != nil {
			return 0, fmt.Errorf("OPR_EXECUTOR_METRICS_LISTEN %s: %w", cfg.MetricsListen, err)
		}
		metricsFile, err = mln.(*net.TCPListener).File()
		mln.Close()
		if err != nil {
			return 0, fmt.Errorf("OPR_EXECUTOR_METRICS_LISTEN %s: %w", cfg.MetricsListen, err)
		}
		defer metricsFile.Close()
	}
	syncR, syncW, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer syncW.Close()

	self, err := os.Executable()
	if err != nil {
		syncR.Close()
		return 0, fmt.Errorf("rootless: find this binary: %w", err)
	}
	// On cgroup v2 everything this process starts begins in its cgroup:
	// when that is the cgroup parent (a user unit with Delegate=yes), it
	// steps into a leaf first, or no runtime cgroup could get controllers.
	// Refused (nothing delegated), the daemon finds it cannot write there.
	if leaf, err := container.MoveToSupervisorCgroup(cfg.CgroupParent, os.Getpid()); err != nil {
		log.Debug("rootless: staying in this cgroup", "cgroupParent", cfg.CgroupParent, "err", err)
	} else if leaf != "" {
		log.Info("moved the executor into a leaf cgroup: it was started where runtimes' cgroups go", "cgroup", leaf)
	}
	// The service manager's main process is this one: it says READY=1 once
	// the API answers on the host's port and feeds the watchdog. Made
	// before the daemon starts: it takes WATCHDOG_* out of the
	// environment the daemon inherits.
	notify := newNotifier(log)
	addrs := hostAddrs()
	cmd := exec.Command(self, os.Args[1:]...)
	cmd.Args[0] = os.Args[0]
	// The cgroup parent this process worked out (its own delegated cgroup)
	// is the daemon's, which starts elsewhere (the leaf).
	cmd.Env = append(withoutEnv(os.Environ(), "OPR_EXECUTOR_CGROUP_PARENT"), "OPR_EXECUTOR_CGROUP_PARENT="+cfg.CgroupParent,
		rootlessStageEnv+"="+stageMap, hostAddrsEnv+"="+addrs)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, os.Stdout, os.Stderr
	cmd.ExtraFiles = []*os.File{lnFile, syncR}
	if metricsFile != nil {
		cmd.ExtraFiles = append(cmd.ExtraFiles, metricsFile) // metricsFD
		cmd.Env = append(cmd.Env, hostMetricsEnv+"=1")
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: unix.CLONE_NEWUSER | unix.CLONE_NEWNS | unix.CLONE_NEWNET | unix.CLONE_NEWPID,
		// The namespace init dies with this process, and every runtime
		// with it. Pdeathsig follows the forking thread: startLocked.
		Pdeathsig: syscall.SIGKILL,
	}
	// Signals that arrive while the namespaces are being set up are
	// forwarded once the init runs.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(sigs)

	waited, err := startLocked(cmd)
	syncR.Close()
	if err != nil {
		return 0, fmt.Errorf("rootless: start in new user, mount, network and pid namespaces: %w", err)
	}
	pid := cmd.Process.Pid
	abort := func(err error) (int, error) {
		_ = cmd.Process.Kill()
		<-waited
		return 0, err
	}
	if err := h.mapIDs(pid); err != nil {
		return abort(err)
	}
	slirp, err := h.startSlirp(pid, len(cfg.LoopbackPorts) > 0, log)
	if err != nil {
		return abort(err)
	}
	defer slirp.stop()
	// Egress is up once slirp4netns routed the namespace: the daemon's
	// subnet check reads those routes.
	if err := waitDefaultRoute(pid, slirp.exited, 10*time.Second); err != nil {
		return abort(fmt.Errorf("rootless: slirp4netns: %w%s", err, slirp.output()))
	}
	if _, err := syncW.Write([]byte{1}); err != nil { // go; syncW stays open while this process lives
		return abort(fmt.Errorf("rootless: the namespace init: %w", err))
	}
	readyCtx, stopReady := context.WithCancel(context.Background())
	defer stopReady()
	notify.ready(readyCtx, lnAddr)

	for {
		select {
		case sig := <-sigs:
			if sig != syscall.SIGHUP {
				notify.stopping(cfg.DrainTimeout) // the watchdog ends with the daemon's drain
			}
			_ = cmd.Process.Signal(sig)
		case <-slirp.exited:
			// Without egress the runtimes would fail in confusing ways:
			// the daemon is stopped as for SIGTERM.
			log.Error("rootless: slirp4netns exited: stopping the executor", "output", strings.TrimSpace(slirp.output()))
			_ = cmd.Process.Signal(syscall.SIGTERM)
			slirp.exited = nil
		case err := <-waited:
			var exit *exec.ExitError
			switch {
			case err == nil:
				return 0, nil
			case errors.As(err, &exit) && exit.Exited():
				return exit.ExitCode(), nil
			}
			return 0, fmt.Errorf("rootless: the daemon ended: %w", err)
		}
	}
}

// startLocked starts cmd from an OS thread locked to a goroutine that only
// waits for it: Pdeathsig fires when the forking thread ends, and the Go
// runtime ends threads whose goroutine exits locked.
func startLocked(cmd *exec.Cmd) (<-chan error, error) {
	started, done := make(chan error, 1), make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		done <- cmd.Wait()
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return done, nil
}

// mapIDs maps root in pid's user namespace to this user and ids 1..Count to
// the subordinate ranges.
func (h *rootlessHost) mapIDs(pid int) error {
	for _, m := range []struct {
		tool string
		id   int
		r    subIDRange
	}{{h.newuidmap, h.uid, h.uids}, {h.newgidmap, h.gid, h.gids}} {
		out, err := exec.Command(m.tool, strconv.Itoa(pid), "0", strconv.Itoa(m.id), "1",
			"1", strconv.FormatInt(m.r.Start, 10), strconv.FormatInt(m.r.Count, 10)).CombinedOutput()
		if err != nil {
			return fmt.Errorf("rootless: %s: %w: %s", filepath.Base(m.tool), err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// slirpProc is the running slirp4netns.
type slirpProc struct {
	cmd    *exec.Cmd
	out    *lockedBuffer
	exited chan struct{}
}

// slirpNet is slirp4netns's network in the daemon's namespace: its gateway
// (10.0.2.2, the host's loopback when that is on) and DNS (10.0.2.3) are
// the host, to the firewall.
var slirpNet = netip.MustParsePrefix("10.0.2.0/24")

// slirpHostLoopback is where the daemon reaches the host's loopback through
// slirp4netns when it forwards loopback ports.
const slirpHostLoopback = "10.0.2.2"

// startSlirp connects pid's network namespace to the host's network through
// slirp4netns, Debian 12's podman's default: a tap device routed through a
// user-mode TCP/IP stack, nothing forwarded into the namespace (the API
// listener is the host's own). The host's loopback is reachable from the
// namespace (at slirpHostLoopback, for the loopback ports only, see
// proxyLoopback) only when hostLoopback is set.
//
// pasta (package passt) would be the faster choice, but the version Debian
// 12 ships (2023-03) breaks TCP connections forwarded from the runtimes'
// bridge (measured: it answers the first data segment with a segment that
// has no flags, and the namespace resets the connection).
func (h *rootlessHost) startSlirp(pid int, hostLoopback bool, log *slog.Logger) (*slirpProc, error) {
	p := &slirpProc{out: &lockedBuffer{}, exited: make(chan struct{})}
	args := []string{"--configure", "--mtu=65520", "--netns-type=path",
		fmt.Sprintf("--userns-path=/proc/%d/ns/user", pid)}
	if !hostLoopback {
		args = append(args, "--disable-host-loopback")
	}
	args = append(args, fmt.Sprintf("/proc/%d/ns/net", pid), "tap0")
	p.cmd = exec.Command(h.slirp, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	waited, err := startLocked(p.cmd)
	if err != nil {
		return nil, fmt.Errorf("rootless: start slirp4netns: %w", err)
	}
	go func() {
		if err := <-waited; err != nil {
			log.Debug("slirp4netns ended", "err", err)
		}
		close(p.exited)
	}()
	return p, nil
}

func (p *slirpProc) output() string {
	if s := strings.TrimSpace(p.out.String()); s != "" {
		return ": " + s
	}
	return ""
}

func (p *slirpProc) stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
	}
}

// waitDefaultRoute waits until pid's network namespace has an IPv4 default
// route (slirp4netns's --configure done).
func waitDefaultRoute(pid int, exited <-chan struct{}, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/route", pid))
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(raw), "\n")[1:] {
			if f := strings.Fields(line); len(f) > 2 && f[1] == "00000000" {
				return nil
			}
		}
		select {
		case <-exited:
			return errors.New("exited before it configured the network")
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no default route in the namespace after %v", timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// hostAddrs lists the host's IPv4 addresses and default gateways, as the
// host process sees them, and slirp4netns's network, comma separated.
func hostAddrs() string {
	out := []string{slirpNet.String()}
	if ifaddrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range ifaddrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() && !p.Addr().IsLoopback() {
				out = append(out, p.Addr().String()+"/32")
			}
		}
	}
	if raw, err := os.ReadFile("/proc/net/route"); err == nil {
		for _, line := range strings.Split(string(raw), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 3 || f[1] != "00000000" {
				continue
			}
			if gw, err := strconv.ParseUint(f[2], 16, 32); err == nil && gw != 0 {
				a := netip.AddrFrom4([4]byte{byte(gw), byte(gw >> 8), byte(gw >> 16), byte(gw >> 24)})
				out = append(out, a.String()+"/32")
			}
		}
	}
	return strings.Join(out, ",")
}

// parseHostAddrs reads hostAddrsEnv.
func parseHostAddrs(v string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range strings.Split(v, ",") {
		if p, err := netip.ParsePrefix(strings.TrimSpace(s)); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// waitForMaps is the namespace init before its maps: it waits until the
// host process closes syncFD, then executes itself again, now root in its
// user namespace and so with its capabilities there. It only returns on
// failure.
func waitForMaps() error {
	// Not an *os.File: its finalizer could close the descriptor the
	// namespace init needs after the execve.
	var b [1]byte
	for {
		n, err := unix.Read(syncFD, b[:])
		if err == unix.EINTR {
			continue
		}
		if n != 1 {
			return fmt.Errorf("rootless: the host process went away (%v)", err)
		}
		break
	}
	if os.Getuid() != 0 {
		return errors.New("rootless: the host process did not map this user namespace")
	}
	self, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return err
	}
	env := append(withoutEnv(os.Environ(), rootlessStageEnv), rootlessStageEnv+"="+stageInit)
	return syscall.Exec(self, os.Args, env)
}

// withoutEnv drops name from env.
func withoutEnv(env []string, name string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, name+"=") {
			out = append(out, kv)
		}
	}
	return out
}

// nsInit is pid 1 of the daemon's pid namespace: it makes its mounts
// private, mounts a /proc of the new pid namespace (libcontainer reads
// /proc/<pid> of the runtimes it starts), starts the daemon and reaps every
// process until the daemon ends. Returns the daemon's exit code.
func nsInit() int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "executor: rootless:", err)
		return 1
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fail(fmt.Errorf("make mounts private: %w", err))
	}
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fail(fmt.Errorf("mount /proc for the new pid namespace: %w", err))
	}
	// A new network namespace's loopback starts down.
	if lo, err := netlink.LinkByName("lo"); err != nil {
		return fail(fmt.Errorf("loopback: %w", err))
	} else if err := netlink.LinkSetUp(lo); err != nil {
		return fail(fmt.Errorf("loopback up: %w", err))
	}
	self, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return fail(err)
	}
	// The host process dying (even by SIGKILL) closes its end of syncFD:
	// this process, pid 1, then ends, and the kernel kills every process of
	// its pid namespace, runtimes included.
	hostGone := os.NewFile(syncFD, "sync")
	go func() {
		_, _ = io.Copy(io.Discard, hostGone)
		fmt.Fprintln(os.Stderr, "executor: rootless: the host process is gone: stopping every process of the executor")
		os.Exit(1)
	}()
	// Signals are taken before the daemon starts: none may be lost.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGCHLD)
	env := append(withoutEnv(os.Environ(), rootlessStageEnv), rootlessStageEnv+"="+stageRun)
	listener := os.NewFile(listenerFD, "listener")
	files := []uintptr{0, 1, 2, listener.Fd()}
	if os.Getenv(hostMetricsEnv) != "" {
		// The same number in the daemon; the sync pipe's stays closed there.
		metrics := os.NewFile(metricsFD, "metrics listener")
		defer metrics.Close()
		files = append(files, ^uintptr(0), metrics.Fd())
	}
	pid, err := syscall.ForkExec(self, os.Args, &syscall.ProcAttr{
		Env:   env,
		Files: files,
	})
	listener.Close()
	if err != nil {
		return fail(fmt.Errorf("start the daemon: %w", err))
	}
	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			_ = syscall.Kill(pid, sig.(syscall.Signal))
			continue
		}
		for {
			var ws syscall.WaitStatus
			got, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if err != nil || got <= 0 {
				break
			}
			if got != pid {
				continue
			}
			switch {
			case ws.Exited():
				return ws.ExitStatus()
			case ws.Signaled():
				return 128 + int(ws.Signal())
			}
		}
	}
	return 1
}

// rootlessDataDir is OPR_EXECUTOR_DATA_DIR's default for a rootless daemon:
// $XDG_DATA_HOME/executor, else ~/.local/share/executor.
func rootlessDataDir(getenv func(string) string) string {
	if d := getenv("XDG_DATA_HOME"); filepath.IsAbs(d) {
		return filepath.Join(d, "executor")
	}
	if h := getenv("HOME"); filepath.IsAbs(h) {
		return filepath.Join(h, ".local", "share", "executor")
	}
	return ""
}

// lockDir is where the daemon keeps the locks of what it shares outside its
// data dir: /run/executor, or $XDG_RUNTIME_DIR/executor for a rootless one
// (cleared, like /run, when the user's last session ends).
func lockDir() (string, error) {
	if !rootless() {
		return runLockDir, nil
	}
	d := os.Getenv("XDG_RUNTIME_DIR")
	if !filepath.IsAbs(d) {
		return "", errors.New("rootless: XDG_RUNTIME_DIR is not set: start the executor from a login session or a systemd --user unit (loginctl enable-linger keeps one without a login)")
	}
	return filepath.Join(d, "executor"), nil
}

// nsIDMap is the id range a rootless daemon's runtimes get: every id its
// user namespace maps besides its own root, i.e. the user's subordinate ids.
func nsIDMap() (*oci.IDMap, error) {
	uid, err := mappedRange("/proc/self/uid_map")
	if err != nil {
		return nil, err
	}
	gid, err := mappedRange("/proc/self/gid_map")
	if err != nil {
		return nil, err
	}
	m := &oci.IDMap{HostUID: uid.Start, HostGID: gid.Start, Size: min(uid.Count, gid.Count)}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("the subordinate ids of this user: %w", err)
	}
	return m, nil
}

// mappedRange reads the largest range of a uid_map or gid_map other than
// the one holding root, in the namespace's own ids.
func mappedRange(file string) (subIDRange, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return subIDRange{}, err
	}
	var best subIDRange
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			continue
		}
		inside, err1 := strconv.ParseInt(f[0], 10, 64)
		count, err2 := strconv.ParseInt(f[2], 10, 64)
		if err1 != nil || err2 != nil || inside == 0 {
			continue
		}
		if count > best.Count {
			best = subIDRange{Start: inside, Count: count}
		}
	}
	if best.Count == 0 {
		return subIDRange{}, fmt.Errorf("%s maps no ids besides root", file)
	}
	return best, nil
}

// listen binds the API listener, or takes the one the host process of a
// rootless daemon bound in the host's network namespace.
func listen(addr string) (net.Listener, error) {
	if rootlessStage() != stageRun {
		return net.Listen("tcp", addr)
	}
	f := os.NewFile(listenerFD, "listener")
	defer f.Close()
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("the listener of the host process: %w", err)
	}
	return ln, nil
}

// checkCapabilities is what replaces a root check: the daemon needs to make
// namespaces, mounts, cgroups and links, which takes CAP_SYS_ADMIN and
// CAP_NET_ADMIN (in the user namespace it runs in, real root's or its own).
func checkCapabilities() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("read this process's capabilities: %w", err)
	}
	var missing []string
	for _, c := range []struct {
		bit  uint
		name string
	}{{unix.CAP_SYS_ADMIN, "CAP_SYS_ADMIN"}, {unix.CAP_NET_ADMIN, "CAP_NET_ADMIN"}, {unix.CAP_SETUID, "CAP_SETUID"}, {unix.CAP_CHOWN, "CAP_CHOWN"}} {
		if data[c.bit/32].Effective&(1<<(c.bit%32)) == 0 {
			missing = append(missing, c.name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("the executor lacks %s: run it as root, or as an ordinary user (rootless mode), not as root with capabilities dropped", strings.Join(missing, ", "))
	}
	return nil
}

// lockedBuffer collects slirp4netns's output, written and read concurrently.
type lockedBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len() > 64<<10 {
		return len(p), nil // enough to say why it failed
	}
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// proxyLoopback serves each of ports on the daemon's own 127.0.0.1 and
// passes every connection to the same port of the host's loopback through
// slirp4netns: a local registry that registries.conf names 127.0.0.1:<port>
// then works as it does for a root daemon. Runtimes cannot route to the
// daemon's loopback. The returned function closes the listeners.
func proxyLoopback(ports []uint16, log *slog.Logger) (func(), error) {
	var lns []net.Listener
	stop := func() {
		for _, ln := range lns {
			ln.Close()
		}
	}
	for _, port := range ports {
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
		if err != nil {
			stop()
			return nil, fmt.Errorf("OPR_EXECUTOR_ROOTLESS_LOOPBACK_PORTS: %w", err)
		}
		lns = append(lns, ln)
		target := net.JoinHostPort(slirpHostLoopback, strconv.Itoa(int(port)))
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					up, err := net.DialTimeout("tcp", target, 10*time.Second)
					if err != nil {
						log.Warn("rootless: the host's loopback port is unreachable", "port", port, "err", err)
						return
					}
					defer up.Close()
					done := make(chan struct{})
					go func() {
						_, _ = io.Copy(up, c)
						_ = up.(*net.TCPConn).CloseWrite()
						close(done)
					}()
					_, _ = io.Copy(c, up)
					_ = c.(*net.TCPConn).CloseWrite()
					<-done
				}()
			}
		}()
	}
	return stop, nil
}

package container

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"

	"executor/oci"
)

// loadedFilter is the seccomp program loaded into thread pid, which must
// have exactly one: read through ptrace, which needs CAP_SYS_ADMIN, no
// seccomp filter on this process and a kernel with CONFIG_CHECKPOINT_RESTORE
// (the tests run as root, outside any unit).
func loadedFilter(pid int) ([]unix.SockFilter, error) {
	// Every ptrace request must come from the thread that attached.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.PtraceSeize(pid); err != nil {
		return nil, os.NewSyscallError("ptrace", err)
	}
	defer func() { _ = unix.PtraceDetach(pid) }()
	if err := unix.PtraceInterrupt(pid); err != nil {
		return nil, os.NewSyscallError("ptrace", err)
	}
	var ws unix.WaitStatus
	for {
		_, err := unix.Wait4(pid, &ws, unix.WALL, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, os.NewSyscallError("wait4", err)
		}
		break
	}
	if !ws.Stopped() {
		return nil, fmt.Errorf("process %d ended (%v)", pid, ws)
	}
	get := func(index int, prog []unix.SockFilter) (int, error) {
		var p unsafe.Pointer
		if len(prog) > 0 {
			p = unsafe.Pointer(&prog[0])
		}
		n, _, errno := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SECCOMP_GET_FILTER, uintptr(pid), uintptr(index), uintptr(p), 0, 0)
		if errno != 0 {
			return 0, errno
		}
		return int(n), nil
	}
	n, err := get(0, nil)
	if err != nil {
		return nil, os.NewSyscallError("ptrace", err)
	}
	prog := make([]unix.SockFilter, n)
	if got, err := get(0, prog); err != nil || got != n {
		return nil, fmt.Errorf("%d of %d instructions: %w", got, n, err)
	}
	if _, err := get(1, nil); !errors.Is(err, unix.ENOENT) {
		return nil, fmt.Errorf("process %d has more than one filter (%v)", pid, err)
	}
	return prog, nil
}

// filterOf is the one seccomp program loaded into process pid, once it has
// one: a container's start returns before its init has executed
// executor-init, which then installs it.
func filterOf(t *testing.T, pid int) []unix.SockFilter {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for procStatus(t, pid, "Seccomp") != "2" {
		if time.Now().After(deadline) {
			t.Fatalf("process %d has no seccomp filter after 10 s", pid)
		}
		time.Sleep(time.Millisecond)
	}
	prog, err := loadedFilter(pid)
	if err != nil {
		t.Fatalf("filter of process %d: %v", pid, err)
	}
	return prog
}

// procStatus is field key of process pid's /proc status.
func procStatus(t *testing.T, pid int, key string) string {
	t.Helper()
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	for l := range strings.Lines(string(raw)) {
		if v, ok := strings.CutPrefix(l, key+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// childOf is the one child of process pid, waited for up to 10 s.
func childOf(t *testing.T, pid int) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		raw, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/task/" + strconv.Itoa(pid) + "/children")
		if f := strings.Fields(string(raw)); len(f) == 1 {
			child, err := strconv.Atoi(f[0])
			if err != nil {
				t.Fatal(err)
			}
			return child
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d has children %q, want one", pid, raw)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// processWithArgs is the process whose command line is args, waited for up
// to 10 s.
func processWithArgs(t *testing.T, args ...string) int {
	t.Helper()
	want := strings.Join(args, "\x00") + "\x00"
	deadline := time.Now().Add(10 * time.Second)
	for {
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			if raw, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline")); string(raw) == want {
				return pid
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no process %q", args)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The filter executor-init installs is the one libcontainer loads, to the
// instruction, on every path a runtime's processes start by: a started
// container, a parked one and then its command, a restart, an exec, and
// each again after another runner adopted the container. That runner,
// without a compiled filter, restarts the container with the profile in its
// configuration (libcontainer's filter once more) and refuses an exec into
// it rather than run the command unfiltered.
func TestInitInstallsTheCompiledFilter(t *testing.T) {
	root := busyboxRoot(t)
	spec := testSpec(root)
	spec.Binds = []oci.Bind{{Source: buildInit(t), Destination: oci.InitPath, ReadOnly: true}}
	r := newRunner(t, Config{Spawner: buildSpawner(t)})
	if r.filter == nil {
		t.Fatalf("no compiled filter: %v", r.FilterErr())
	}
	if r.seccomp.rules == nil {
		t.Fatal("no profile")
	}

	// libcontainer's own filter: a main process that is not executor-init.
	lcc := start(t, r, IDPrefix+"libcontainer", spec, shell("exec sleep 60"))
	if filteredByInit(lcc.cfg) || lcc.cfg.Seccomp == nil {
		t.Fatal("a main process other than executor-init is left without libcontainer's filter")
	}
	want := filterOf(t, initPID(t, lcc))
	if len(want) != r.filter.insns {
		t.Errorf("libcontainer's filter has %d instructions, the compiled one %d", len(want), r.filter.insns)
	}
	// The load flags (SPEC_ALLOW) show in the speculation state.
	wantSSB := procStatus(t, initPID(t, lcc), "Speculation_Store_Bypass")
	if wantSSB == "" {
		t.Fatal("no Speculation_Store_Bypass in /proc/pid/status")
	}
	check := func(what string, pid int) {
		t.Helper()
		if got := filterOf(t, pid); !slices.Equal(got, want) {
			t.Errorf("%s: filter of %d instructions is not libcontainer's (%d)", what, len(got), len(want))
		}
		if got := procStatus(t, pid, "Speculation_Store_Bypass"); got != wantSSB {
			t.Errorf("%s: speculation store bypass %q, libcontainer's %q", what, got, wantSSB)
		}
	}

	main := Process{
		Args: oci.WithInit([]string{"sh", "-c", "echo up; exec sleep 61"}), Env: []string{oci.DefaultPATH}, Cwd: "/",
		ReportsExit: true,
	}
	c := start(t, r, IDPrefix+"init", spec, main)
	waitOutput(t, c, "up")
	loaded, err := libcontainer.Load(r.cfg.StateDir, c.ID())
	if err != nil {
		t.Fatal(err)
	}
	if cfg := loaded.Config(); !filteredByInit(&cfg) {
		t.Fatalf("state of a container under executor-init: profile %v, labels %v", cfg.Seccomp != nil, cfg.Labels)
	}
	check("executor-init", initPID(t, c))
	check("its command", childOf(t, initPID(t, c)))
	if !slices.Equal(c.main.Args, main.Args) {
		t.Errorf("recorded main process %q, want it as given %q", c.main.Args, main.Args)
	}

	// An exec: filtered, with its own stdout, stderr and exit code.
	var out, errOut bytes.Buffer
	code, err := c.Exec(t.Context(), []string{"sh", "-c", "grep Seccomp: /proc/self/status; echo err >&2; exit 3"}, &out, &errOut)
	if err != nil || code != 3 || out.String() != "Seccomp:\t2\n" || errOut.String() != "err\n" {
		t.Errorf("exec: code %d, %v, stdout %q, stderr %q", code, err, out.String(), errOut.String())
	}
	execCheck := func(what string, c *Container) {
		t.Helper()
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		done := make(chan error, 1)
		go func() {
			_, err := c.Exec(ctx, []string{"sleep", "6543"}, nil, nil)
			done <- err
		}()
		check(what, processWithArgs(t, "sleep", "6543"))
		cancel()
		<-done
	}
	execCheck("exec", c)

	// Parked: filtered before any command exists.
	p, err := r.StartParked(IDPrefix+"parked", spec, oci.InitPath, Process{Env: []string{oci.DefaultPATH}, Cwd: "/"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { destroy(t, p) })
	check("parked executor-init", initPID(t, p))
	if err := r.Unpark(p, spec, Process{Args: oci.WithInit([]string{"sleep", "62"}), Env: []string{oci.DefaultPATH}, Cwd: "/", ReportsExit: true}); err != nil {
		t.Fatal(err)
	}
	if !filteredByInit(p.cfg) {
		t.Error("unparked: the configuration lost executor-init's filter")
	}
	check("unparked command", childOf(t, initPID(t, p)))
	execCheck("exec into the unparked", p)

	c.Stop(0)
	n, err := c.Restart()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { destroy(t, n) })
	waitOutput(t, n, "up")
	check("restarted executor-init", initPID(t, n))
	check("restarted command", childOf(t, initPID(t, n)))

	// Another runner adopts it.
	r2 := restarted(t, r)
	t.Cleanup(func() { r2.Close() })
	a := adopt(t, r2, n.ID(), main)
	execCheck("exec into the adopted", a)
	a.Stop(0)
	waitDone(t, a)
	a2, err := a.Restart()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { destroy(t, a2) })
	waitOutput(t, a2, "up")
	check("restarted by the adopter", initPID(t, a2))

	// A runner without the compiled filter.
	r3 := restarted(t, r)
	t.Cleanup(func() { r3.Close() })
	r3.filter.close()
	r3.filter, r3.filterErr = nil, errors.New("none, for the test")
	b := adopt(t, r3, a2.ID(), main)
	if _, err := b.Exec(t.Context(), []string{"true"}, nil, nil); err == nil || !strings.Contains(err.Error(), "none compiled") {
		t.Errorf("exec without a compiled filter: %v", err)
	}
	b.Stop(0)
	waitDone(t, b)
	b2, err := b.Restart()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { destroy(t, b2) })
	waitOutput(t, b2, "up")
	if filteredByInit(b2.cfg) || b2.cfg.Seccomp == nil {
		t.Error("restarted without a compiled filter: the profile is not libcontainer's to apply")
	}
	check("restarted with libcontainer's filter", initPID(t, b2))
	var sc bytes.Buffer
	if code, err := b2.Exec(t.Context(), []string{"grep", "Seccomp:", "/proc/self/status"}, &sc, nil); err != nil || code != 0 || sc.String() != "Seccomp:\t2\n" {
		t.Errorf("exec after the restart with libcontainer's filter: %d, %v, %q", code, err, sc.String())
	}
}

// A profile executor-init could not be given as a program alone (a
// listener) is left to libcontainer.
func TestPrecompilable(t *testing.T) {
	profile, err := defaultSeccompProfile()
	if err != nil {
		t.Fatal(err)
	}
	if err := precompilable(profile.rules); err != nil {
		t.Fatalf("the default profile: %v", err)
	}
	notify := *profile.rules
	notify.Syscalls = append(slices.Clip(notify.Syscalls), &configs.Syscall{Name: "mkdir", Action: configs.Notify})
	listener := *profile.rules
	listener.ListenerPath = "/run/agent.sock"
	for name, rules := range map[string]*configs.Seccomp{"none": nil, "notify": &notify, "listener": &listener} {
		if err := precompilable(rules); err == nil {
			t.Errorf("%s: precompilable", name)
		}
	}
}

// executor-init is mounted on a file, or where nothing is: never where a
// symbolic link would take the mount elsewhere and stay behind, the
// runtime's to point at a binary of its own for the next exec or restart,
// nor on a FIFO or anything else. The check opens nothing of the root's but
// directories (O_PATH, no link followed), so a FIFO cannot block it and a
// file's size does not matter.
// A start into such a root is refused and leaves nothing behind.
func TestInitMountPoint(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"dir", "sub/dir"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// A FIFO is never opened (nothing would answer it); a huge file is
	// never read: runc mounts over it.
	if err := unix.Mkfifo(filepath.Join(root, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "huge"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filepath.Join(root, "huge"), 1<<40); err != nil {
		t.Fatal(err)
	}
	for link, target := range map[string]string{"link": "/file", "linkdir": "/sub", "dangling": "/nowhere"} {
		if err := os.Symlink(target, filepath.Join(root, link)); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name   string
		at, is string // what the refusal names; "" when accepted
	}{
		{name: "/nothing"},
		{name: "/file"},
		{name: "/sub/nothing"},
		{name: "/huge"},
		{"/link", "/link", "a symbolic link"},
		{"/dangling", "/dangling", "a symbolic link"},
		{"/dir", "/dir", "a directory"},
		{"/linkdir/dir", "/linkdir", "a symbolic link"},
		{"/file/below", "/file", "a regular file"},
		{"/fifo", "/fifo", "a named pipe"},
		{"sub//./dir", "/sub/dir", "a directory"},
	} {
		err := initMountPoint(root, tc.name)
		var me *InitMountPointError
		switch {
		case tc.at == "" && err != nil:
			t.Errorf("%s: %v, want it accepted", tc.name, err)
		case tc.at != "" && !errors.As(err, &me):
			t.Errorf("%s: %v, want an *InitMountPointError", tc.name, err)
		case tc.at != "" && (me.At != tc.at || me.Is != tc.is):
			t.Errorf("%s: refused as %q being %q, want %q being %q", tc.name, me.At, me.Is, tc.at, tc.is)
		}
	}

	rootfs := busyboxRoot(t)
	if err := os.Symlink("/tmp/init", filepath.Join(rootfs, oci.InitPath)); err != nil {
		t.Fatal(err)
	}
	spec := testSpec(rootfs)
	spec.Binds = []oci.Bind{{Source: buildInit(t), Destination: oci.InitPath, ReadOnly: true}}
	r := newRunner(t, Config{Spawner: buildSpawner(t)})
	id := IDPrefix + "linked-init"
	_, err := r.Start(id, spec, Process{Args: oci.WithInit([]string{"true"}), Env: []string{oci.DefaultPATH}, Cwd: "/", ReportsExit: true})
	var me *InitMountPointError
	if !errors.As(err, &me) || me.At != oci.InitPath || !strings.Contains(err.Error(), oci.InitPath+" in the runtime's root is a symbolic link") {
		t.Fatalf("start with executor-init's mount point a link: %v", err)
	}
	if _, err := os.Stat(filepath.Join(r.cfg.StateDir, id)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("state of the refused start: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(rootfs, "tmp", "init")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the link's target was made: %v", err)
	}
}

// The compile works where a daemon runs: under a seccomp filter of its own
// (systemd's LockPersonality= and RestrictAddressFamilies= make one) and
// without privileges (rootless), and gives the same program and flags.
func TestFilterCompiledUnderAFilterAndUnprivileged(t *testing.T) {
	requireRoot(t)
	// Where another user may run it: the test's own directories are 0700.
	dir, err := os.MkdirTemp("", "filter-test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	spawner := filepath.Join(dir, "executor-spawn")
	if err := os.Rename(buildSpawner(t), spawner); err != nil {
		t.Fatal(err)
	}
	profile, err := defaultSeccompProfile()
	if err != nil {
		t.Fatal(err)
	}
	want, err := compileFilter(spawner, profile)
	if err != nil {
		t.Fatal(err)
	}
	defer want.close()
	wantProg, err := io.ReadAll(io.NewSectionReader(want.file, 0, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	if want.flags != unix.SECCOMP_FILTER_FLAG_SPEC_ALLOW {
		t.Errorf("the default profile's load flags %#x, want SPEC_ALLOW", want.flags)
	}
	allowAll := filepath.Join(t.TempDir(), "allow")
	prog := []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW}}
	if err := os.WriteFile(allowAll, unsafe.Slice((*byte)(unsafe.Pointer(&prog[0])), 8), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(allowAll)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, tc := range []struct {
		name string
		cmd  func() *exec.Cmd
	}{
		{"under a filter", func() *exec.Cmd {
			cmd := exec.Command(buildInit(t), SeccompFDFlag, "3", ExecFlag, "--", spawner, FilterExportArg)
			cmd.ExtraFiles = []*os.File{f}
			return cmd
		}},
		{"unprivileged", func() *exec.Cmd {
			cmd := exec.Command(spawner, FilterExportArg)
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
			return cmd
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			cmd := tc.cmd()
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("%v: %s", err, stderr.String())
			}
			var ex exportedFilter
			if err := json.Unmarshal(out, &ex); err != nil {
				t.Fatal(err)
			}
			if ex.Digest != profile.digest || ex.Flags != want.flags || !bytes.Equal(ex.Program, wantProg) {
				t.Errorf("digest %s, flags %#x, %d bytes of program; want %s, %#x and the same %d bytes",
					ex.Digest, ex.Flags, len(ex.Program), profile.digest, want.flags, len(wantProg))
			}
		})
	}
}

// A signal to the compiling thread while its load waits on the listener
// (the Go runtime preempts with SIGURG) interrupts the call, which is made
// again: the export still ends, with the same program. Without a listener
// that goes on after such an interruption, most of these runs hung.
func TestFilterExportSurvivesSignals(t *testing.T) {
	requireRoot(t)
	spawner := buildSpawner(t)
	want, err := exec.Command(spawner, FilterExportArg).Output()
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		var out bytes.Buffer
		cmd := exec.Command(spawner, FilterExportArg)
		cmd.Stdout = &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		pid := cmd.Process.Pid
		// Generous: an emulated guest (make test-cgroup2) runs these too.
		deadline := time.After(60 * time.Second)
	spam:
		for {
			select {
			case err := <-done:
				if err != nil || !bytes.Equal(out.Bytes(), want) {
					t.Errorf("run %d: %v, %d bytes out, want the same %d as unsignalled", i, err, out.Len(), len(want))
				}
				break spam
			case <-deadline:
				_ = cmd.Process.Kill()
				<-done
				t.Fatalf("run %d: the export still runs after 60 s of SIGURG to its main thread", i)
			default:
				_ = unix.Tgkill(pid, pid, unix.SIGURG)
			}
		}
	}
}

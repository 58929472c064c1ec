package testenv

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// RootlessConfig says what SetupRootless gives the user besides the account.
type RootlessConfig struct {
	// Delegate makes a cgroup subtree the user owns, as systemd's Delegate=
	// does: without it the user has no writable cgroup (limits off).
	Delegate bool
	// Dir is where the user's home is made; /var/tmp when empty (not /tmp,
	// a default storage root the daemon refuses a data dir in).
	Dir string
}

// Rootless is an unprivileged user set up, as root, the way a distribution
// sets one up for rootless containers: an account with a home, a range of
// 65536 subordinate uids and gids, an XDG_RUNTIME_DIR, /dev/net/tun usable by
// everyone and, optionally, a delegated cgroup subtree. Close undoes all of
// it. Names are unique to the process (exrl<pid>-<n>), so a parallel test
// process never collides with this one, and SetupRootless first removes what
// a dead process of an earlier run left.
type Rootless struct {
	Name     string
	UID, GID int
	// SubStart and SubCount are the user's /etc/subuid and /etc/subgid range.
	SubStart, SubCount int
	Home               string // mode 0755, owned by the user
	RuntimeDir         string // XDG_RUNTIME_DIR: mode 0700, owned by the user
	// CgroupParent is the delegated subtree as OPR_EXECUTOR_CGROUP_PARENT
	// names it ("/executor-rl-<pid>-<n>"); empty without delegation.
	CgroupParent string
	// CgroupDirs are CgroupParent's directories: one per mounted hierarchy
	// on cgroup v1 (the unified one of a hybrid host included), one on v2.
	CgroupDirs []string

	undo   []func() error // run last first by Close
	closed bool
}

const (
	rootlessPrefix = "exrl"         // user names: exrl<pid>-<n>
	cgroupPrefix   = "executor-rl-" // cgroups: /executor-rl-<pid>-<n>
	homePrefix     = "executor-rl-" // homes: <Dir>/executor-rl-<pid>-<n>-*
	runPrefix      = "executor-rlrun-"
	subIDCount     = 65536
	subIDBase      = 1 << 20 // above the ids useradd hands out and a root daemon's default range start
)

var rootlessSeq struct {
	mu sync.Mutex
	n  int
}

// SetupRootless creates the user and what it needs. It must run as root. On
// an error everything made so far is undone.
func SetupRootless(cfg RootlessConfig) (*Rootless, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("rootless setup: needs root (useradd, /etc/subuid, /dev/net/tun, cgroups)")
	}
	for _, tool := range []string{"useradd", "usermod", "userdel", "newuidmap", "newgidmap", "slirp4netns"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("rootless setup: %s is not on PATH (packages passwd, uidmap, slirp4netns): %w", tool, err)
		}
	}
	if err := SweepRootless(); err != nil {
		return nil, err
	}
	if cfg.Dir == "" {
		cfg.Dir = "/var/tmp"
	}
	rootlessSeq.mu.Lock()
	rootlessSeq.n++
	seq := rootlessSeq.n
	rootlessSeq.mu.Unlock()
	tag := fmt.Sprintf("%d-%d", os.Getpid(), seq)
	r := &Rootless{Name: rootlessPrefix + tag}
	if err := r.setup(cfg, tag); err != nil {
		if cerr := r.Close(); cerr != nil {
			err = fmt.Errorf("%w (and undoing the setup: %v)", err, cerr)
		}
		return nil, fmt.Errorf("rootless setup: %w", err)
	}
	return r, nil
}

func (r *Rootless) setup(cfg RootlessConfig, tag string) error {
	home, err := os.MkdirTemp(cfg.Dir, homePrefix+tag+"-")
	if err != nil {
		return err
	}
	r.Home = home
	r.undo = append(r.undo, func() error { return removeUnlessMounted(home) })

	// The account: a normal user (uid from useradd), its own group, no
	// automatic subordinate ids (the range is added below, under
	// usermod's lock, one that overlaps nothing).
	if out, err := etcCommand("useradd", "--home-dir", home, "--no-create-home", "--shell", "/usr/sbin/nologin",
		"--user-group", "--comment", "executor rootless e2e", "-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0", r.Name); err != nil {
		return fmt.Errorf("useradd %s: %v: %s", r.Name, err, out)
	}
	r.undo = append(r.undo, r.deleteUser)
	if r.UID, r.GID, err = lookupIDs(r.Name); err != nil {
		return err
	}
	if err := os.Chown(home, r.UID, r.GID); err != nil {
		return err
	}
	if err := os.Chmod(home, 0o755); err != nil {
		return err
	}

	if err := r.addSubIDs(); err != nil {
		return err
	}

	release, err := acquireTun()
	if err != nil {
		return err
	}
	r.undo = append(r.undo, release)

	run, err := os.MkdirTemp("", runPrefix+tag+"-")
	if err != nil {
		return err
	}
	r.RuntimeDir = run
	r.undo = append(r.undo, func() error { return removeUnlessMounted(run) })
	if err := os.Chown(run, r.UID, r.GID); err != nil {
		return err
	}
	if err := os.Chmod(run, 0o700); err != nil {
		return err
	}

	if cfg.Delegate {
		return r.delegate("/" + cgroupPrefix + tag)
	}
	return nil
}

func lookupIDs(name string) (int, int, error) {
	out, err := exec.Command("getent", "passwd", name).Output()
	if err != nil {
		return 0, 0, fmt.Errorf("getent passwd %s: %v", name, err)
	}
	f := strings.Split(strings.TrimSpace(string(out)), ":")
	if len(f) < 4 {
		return 0, 0, fmt.Errorf("getent passwd %s: %q", name, out)
	}
	uid, err1 := strconv.Atoi(f[2])
	gid, err2 := strconv.Atoi(f[3])
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("getent passwd %s: %q", name, out)
	}
	return uid, gid, nil
}

// subIDRanges reads the ranges of an /etc/subuid-style file.
func subIDRanges(path string) ([][2]int, error) {
	data, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	var out [][2]int
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Split(strings.TrimSpace(line), ":")
		if len(f) != 3 {
			continue
		}
		start, err1 := strconv.Atoi(f[1])
		n, err2 := strconv.Atoi(f[2])
		if err1 == nil && err2 == nil {
			out = append(out, [2]int{start, start + n})
		}
	}
	return out, nil
}

// addSubIDs gives the user 65536 subordinate uids and gids that overlap no
// other entry of /etc/subuid or /etc/subgid nor an account's id. The
// candidate depends on the pid so that parallel processes rarely pick the
// same one; usermod locks the files while it writes them.
func (r *Rootless) addSubIDs() error {
	var used [][2]int
	for _, f := range []string{"/etc/subuid", "/etc/subgid"} {
		rs, err := subIDRanges(f)
		if err != nil {
			return err
		}
		used = append(used, rs...)
	}
	overlaps := func(start int) bool {
		for _, u := range used {
			if start < u[1] && u[0] < start+subIDCount {
				return true
			}
		}
		return false
	}
	start := subIDBase + (os.Getpid()%4096)*subIDCount
	for i := 0; overlaps(start); i++ {
		if i > 8192 {
			return errors.New("no free range of 65536 subordinate ids")
		}
		start += subIDCount
		if start+subIDCount > 1<<31 {
			start = subIDBase
		}
	}
	rng := fmt.Sprintf("%d-%d", start, start+subIDCount-1)
	if out, err := etcCommand("usermod", "--add-subuids", rng, "--add-subgids", rng, r.Name); err != nil {
		return fmt.Errorf("usermod --add-subuids %s %s: %v: %s", rng, r.Name, err, out)
	}
	r.SubStart, r.SubCount = start, subIDCount
	return nil
}

// deleteUser removes the account, its group and (userdel does it) its
// /etc/subuid and /etc/subgid lines, and checks that those are gone.
func (r *Rootless) deleteUser() error {
	var errs []error
	if out, err := etcCommand("userdel", r.Name); err != nil {
		errs = append(errs, fmt.Errorf("userdel %s: %v: %s", r.Name, err, out))
	}
	for _, f := range []string{"/etc/subuid", "/etc/subgid"} {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(line, r.Name+":") || (r.UID != 0 && strings.HasPrefix(line, strconv.Itoa(r.UID)+":")) {
				errs = append(errs, fmt.Errorf("%s still has %q after userdel", f, line))
				if r.SubCount > 0 {
					rng := fmt.Sprintf("%d-%d", r.SubStart, r.SubStart+r.SubCount-1)
					_, _ = etcCommand("usermod", "--del-subuids", rng, "--del-subgids", rng, r.Name)
				}
			}
		}
	}
	if _, _, err := lookupIDs(r.Name); err == nil {
		errs = append(errs, fmt.Errorf("user %s still exists after userdel", r.Name))
	}
	return errors.Join(errs...)
}

// /dev/net/tun is 0666 on distributions (slirp4netns opens it as the user); this
// VM has it 0600. Every test process that needs it (go test ./... runs the
// packages' binaries in parallel) holds it through a file named by its pid
// in tunState, under a lock: the first holder saves the old mode
// there and makes it 0666, the last restores it. A holder whose process died
// without releasing it is dropped, so a killed run's change is undone later.
// Within a process, tests share the one hold.
var tun struct {
	mu   sync.Mutex
	refs int
}

const (
	tunPath  = "/dev/net/tun"
	tunState = "/run/executor-e2e-tun"
)

// lockTunState takes the lock on tunState (a flock on the device itself,
// which outlives the state dir) and returns its release.
func lockTunState() (func(), error) {
	f, err := os.Open(tunPath)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}

// liveTunHolders drops the holders whose process is gone and returns how
// many are left.
func liveTunHolders() int {
	ents, _ := os.ReadDir(tunState)
	n := 0
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if syscall.Kill(pid, 0) == syscall.ESRCH {
			_ = os.Remove(filepath.Join(tunState, e.Name()))
			continue
		}
		n++
	}
	return n
}

// restoreTun puts back the mode saved by the first holder, if any.
func restoreTun() error {
	saved, err := os.ReadFile(filepath.Join(tunState, "mode"))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	mode, err := strconv.ParseUint(strings.TrimSpace(string(saved)), 8, 32)
	if err != nil {
		return fmt.Errorf("%s/mode: %q", tunState, saved)
	}
	if err := os.Chmod(tunPath, os.FileMode(mode)); err != nil {
		return err
	}
	return os.Remove(filepath.Join(tunState, "mode"))
}

func acquireTun() (func() error, error) {
	tun.mu.Lock()
	defer tun.mu.Unlock()
	if tun.refs == 0 {
		st, err := os.Stat(tunPath)
		if err != nil {
			return nil, fmt.Errorf("%s (rootless networking needs it): %w", tunPath, err)
		}
		if st.Mode()&os.ModeCharDevice == 0 {
			return nil, fmt.Errorf("%s is not a character device", tunPath)
		}
		unlock, err := lockTunState()
		if err != nil {
			return nil, err
		}
		defer unlock()
		if err := os.MkdirAll(tunState, 0o700); err != nil {
			return nil, err
		}
		if liveTunHolders() == 0 {
			// A dead run's change first, then this one's.
			if err := restoreTun(); err != nil {
				return nil, err
			}
			if st, err = os.Stat(tunPath); err != nil {
				return nil, err
			}
			if err := os.WriteFile(filepath.Join(tunState, "mode"), []byte(fmt.Sprintf("%o\n", st.Mode().Perm())), 0o600); err != nil {
				return nil, err
			}
		}
		if err := os.WriteFile(filepath.Join(tunState, strconv.Itoa(os.Getpid())), nil, 0o600); err != nil {
			return nil, err
		}
		if err := os.Chmod(tunPath, 0o666); err != nil {
			return nil, err
		}
	}
	tun.refs++
	var once sync.Once
	return func() error {
		var err error
		once.Do(func() {
			tun.mu.Lock()
			defer tun.mu.Unlock()
			tun.refs--
			if tun.refs > 0 {
				return
			}
			unlock, lerr := lockTunState()
			if lerr != nil {
				err = lerr
				return
			}
			defer unlock()
			_ = os.Remove(filepath.Join(tunState, strconv.Itoa(os.Getpid())))
			if liveTunHolders() == 0 {
				if err = restoreTun(); err == nil {
					err = os.RemoveAll(tunState)
				}
			}
		})
		return err
	}, nil
}

// cgroupMounts lists the mounted cgroup hierarchies under /sys/fs/cgroup:
// every v1 one and the unified one of a hybrid host, or the single v2 root.
func cgroupMounts() ([]string, bool, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	var mounts []string
	v2only := true
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, x := range fields {
			if x == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+1 >= len(fields) || len(fields) < 5 {
			continue
		}
		fstype, mnt := fields[sep+1], fields[4]
		if (fstype != "cgroup" && fstype != "cgroup2") || !strings.HasPrefix(mnt, "/sys/fs/cgroup") {
			continue
		}
		if fstype == "cgroup" {
			v2only = false
		}
		mounts = append(mounts, mnt)
	}
	if len(mounts) == 0 {
		return nil, false, errors.New("no cgroup hierarchy is mounted under /sys/fs/cgroup")
	}
	sort.Strings(mounts)
	return mounts, v2only && len(mounts) == 1 && mounts[0] == "/sys/fs/cgroup", sc.Err()
}

// delegate makes parent in every hierarchy and hands it to the user as
// systemd's Delegate= does: on cgroup v1 the directory and every file in it,
// on v2 the directory and its cgroup.procs, cgroup.threads and
// cgroup.subtree_control, with cpu, memory and pids enabled above it.
func (r *Rootless) delegate(parent string) error {
	mounts, v2, err := cgroupMounts()
	if err != nil {
		return err
	}
	r.CgroupParent = parent
	r.undo = append(r.undo, r.RemoveCgroups)
	for _, m := range mounts {
		dir := filepath.Join(m, parent)
		if v2 {
			if err := enableControllers(m, "cpu", "memory", "pids"); err != nil {
				return err
			}
		}
		if err := os.Mkdir(dir, 0o755); err != nil {
			return err
		}
		r.CgroupDirs = append(r.CgroupDirs, dir)
		if _, err := os.Stat(filepath.Join(dir, "cpuset.cpus")); err == nil {
			// A new v1 cpuset cgroup has no CPUs or memory nodes and takes
			// no process until it has some: those of the hierarchy's root,
			// and its children (the runtimes') inherit them.
			if err := os.WriteFile(filepath.Join(dir, "cgroup.clone_children"), []byte("1"), 0); err != nil {
				return err
			}
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				if v, err := os.ReadFile(filepath.Join(m, f)); err == nil {
					if err := os.WriteFile(filepath.Join(dir, f), v, 0); err != nil {
						return fmt.Errorf("%s: %w", filepath.Join(dir, f), err)
					}
				}
			}
		}
		files := []string{dir}
		if v2 {
			for _, f := range []string{"cgroup.procs", "cgroup.threads", "cgroup.subtree_control"} {
				files = append(files, filepath.Join(dir, f))
			}
		} else {
			ents, err := os.ReadDir(dir)
			if err != nil {
				return err
			}
			for _, e := range ents {
				files = append(files, filepath.Join(dir, e.Name()))
			}
		}
		for _, f := range files {
			if err := os.Lchown(f, r.UID, r.GID); err != nil {
				return err
			}
		}
	}
	return nil
}

// enableControllers makes sure root's cgroup.subtree_control enables the
// controllers (a distribution's systemd does; they stay enabled).
func enableControllers(root string, names ...string) error {
	data, err := os.ReadFile(filepath.Join(root, "cgroup.subtree_control"))
	if err != nil {
		return err
	}
	have := map[string]bool{}
	for _, c := range strings.Fields(string(data)) {
		have[c] = true
	}
	for _, c := range names {
		if have[c] {
			continue
		}
		if err := os.WriteFile(filepath.Join(root, "cgroup.subtree_control"), []byte("+"+c), 0); err != nil {
			return fmt.Errorf("enable %s in %s: %w", c, root, err)
		}
	}
	return nil
}

// CgroupProcs are the cgroup.procs files of the delegated subtree's top,
// one per hierarchy: writing a pid into each (as root) starts a process in
// the subtree, as systemd starts a unit with Delegate=yes.
func (r *Rootless) CgroupProcs() []string {
	var out []string
	for _, d := range r.CgroupDirs {
		out = append(out, filepath.Join(d, "cgroup.procs"))
	}
	return out
}

// Enter moves pid into the delegated subtree's top in every hierarchy.
func (r *Rootless) Enter(pid int) error {
	if r.CgroupParent == "" {
		return errors.New("no delegated cgroup to enter")
	}
	for _, f := range r.CgroupProcs() {
		if err := os.WriteFile(f, []byte(strconv.Itoa(pid)), 0); err != nil {
			return fmt.Errorf("move %d into %s: %w", pid, f, err)
		}
	}
	return nil
}

// CgroupChildren lists the directories below the delegated parent, in every
// hierarchy (what the daemon made and has not removed).
func (r *Rootless) CgroupChildren() []string {
	var out []string
	for _, d := range r.CgroupDirs {
		_ = filepath.WalkDir(d, func(p string, e os.DirEntry, err error) error {
			if err == nil && e.IsDir() && p != d {
				out = append(out, p)
			}
			return nil
		})
	}
	return out
}

// RemoveCgroups removes the delegated subtree, children first, as systemd
// does once the unit stopped. A process still in it is an error (it is
// killed, so that the removal still happens).
func (r *Rootless) RemoveCgroups() error {
	var errs []error
	for _, top := range r.CgroupDirs {
		var dirs []string
		_ = filepath.WalkDir(top, func(p string, e os.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Slice(dirs, func(i, j int) bool { return strings.Count(dirs[i], "/") > strings.Count(dirs[j], "/") })
		for _, d := range dirs {
			if err := removeCgroup(d); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func removeCgroup(dir string) error {
	var err error
	if pids := cgroupPids(dir); len(pids) > 0 {
		err = fmt.Errorf("processes left in %s: %s", dir, describePids(pids))
		for _, p := range pids {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		rerr := os.Remove(dir)
		if rerr == nil || os.IsNotExist(rerr) {
			return err
		}
		if time.Now().After(deadline) {
			return errors.Join(err, fmt.Errorf("remove cgroup %s: %w", dir, rerr))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func cgroupPids(dir string) []int {
	data, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	var pids []int
	for _, f := range strings.Fields(string(data)) {
		if p, err := strconv.Atoi(f); err == nil {
			pids = append(pids, p)
		}
	}
	return pids
}

// Proc is a process on the host.
type Proc struct {
	Pid  int
	UID  int // real uid
	Comm string
	Cmd  string
}

func (p Proc) String() string { return fmt.Sprintf("%d(uid %d %s: %s)", p.Pid, p.UID, p.Comm, p.Cmd) }

func describePids(pids []int) string {
	var s []string
	for _, p := range pids {
		if pr, ok := readProc(p); ok {
			s = append(s, pr.String())
		} else {
			s = append(s, strconv.Itoa(p))
		}
	}
	return strings.Join(s, ", ")
}

func readProc(pid int) (Proc, bool) {
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Proc{}, false
	}
	p := Proc{Pid: pid, UID: -1}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "Name:"); ok {
			p.Comm = strings.TrimSpace(v)
		}
		if v, ok := strings.CutPrefix(line, "Uid:"); ok {
			if f := strings.Fields(v); len(f) > 0 {
				p.UID, _ = strconv.Atoi(f[0])
			}
		}
	}
	cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	p.Cmd = strings.TrimSpace(strings.ReplaceAll(string(cmd), "\x00", " "))
	return p, true
}

// procsOf lists the processes any of whose uids (real, effective, saved,
// filesystem) is in one of the ranges [lo, hi).
func procsOf(ranges ...[2]int) []Proc {
	ents, _ := os.ReadDir("/proc")
	var out []Proc
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		status, err := os.ReadFile(filepath.Join("/proc", e.Name(), "status"))
		if err != nil {
			continue
		}
		match := false
		for _, line := range strings.Split(string(status), "\n") {
			v, ok := strings.CutPrefix(line, "Uid:")
			if !ok {
				continue
			}
			for _, f := range strings.Fields(v) {
				id, _ := strconv.Atoi(f)
				for _, r := range ranges {
					if id >= r[0] && id < r[1] {
						match = true
					}
				}
			}
		}
		if match {
			if p, ok := readProc(pid); ok {
				out = append(out, p)
			}
		}
	}
	return out
}

// Processes lists the host's processes that run as the user or as one of
// its subordinate uids (the daemon, slirp4netns, runtimes).
func (r *Rootless) Processes() []Proc {
	if r.UID == 0 {
		return nil
	}
	rs := [][2]int{{r.UID, r.UID + 1}}
	if r.SubCount > 0 {
		rs = append(rs, [2]int{r.SubStart, r.SubStart + r.SubCount})
	}
	return procsOf(rs...)
}

// Env is the login environment of the user: HOME, USER, LOGNAME, PATH and
// XDG_RUNTIME_DIR.
func (r *Rootless) Env() []string {
	return []string{"HOME=" + r.Home, "USER=" + r.Name, "LOGNAME=" + r.Name, "PATH=" + os.Getenv("PATH"),
		"XDG_RUNTIME_DIR=" + r.RuntimeDir}
}

// Credential runs a command as the user (exec.Cmd's SysProcAttr).
func (r *Rootless) Credential() *syscall.Credential {
	return &syscall.Credential{Uid: uint32(r.UID), Gid: uint32(r.GID), Groups: []uint32{}}
}

// Chown gives path (and, for a directory, everything beneath) to the user.
func (r *Rootless) Chown(path string) error {
	return filepath.WalkDir(path, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, r.UID, r.GID)
	})
}

// Close undoes the setup, whatever happened in between: processes of the
// user still running are an error (and are killed first, so that the rest
// can be undone), then the cgroups, the runtime dir, /dev/net/tun's mode,
// the subordinate ids, the account and the home go. It returns every
// problem met; a second Close does nothing.
func (r *Rootless) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	var errs []error
	if ps := r.Processes(); len(ps) > 0 {
		errs = append(errs, fmt.Errorf("processes of %s still running: %v", r.Name, ps))
		killAll(r)
	}
	for i := len(r.undo) - 1; i >= 0; i-- {
		if err := r.undo[i](); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// killAll SIGKILLs the user's processes until none is left (10 s at most).
func killAll(r *Rootless) {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		ps := r.Processes()
		if len(ps) == 0 {
			return
		}
		for _, p := range ps {
			_ = syscall.Kill(p.Pid, syscall.SIGKILL)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// removeUnlessMounted removes dir unless something is mounted beneath it
// (which RemoveAll would descend into): that is an error to report.
func removeUnlessMounted(dir string) error {
	if m := MountsUnder(dir); len(m) > 0 {
		return fmt.Errorf("not removing %s: mounts beneath it on the host: %v", dir, m)
	}
	return os.RemoveAll(dir)
}

// MountsUnder lists the mount points at or beneath dir in this process's
// mount namespace.
func MountsUnder(dir string) []string {
	data, _ := os.ReadFile("/proc/self/mountinfo")
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			out = append(out, f[4])
		}
	}
	return out
}

var staleName = regexp.MustCompile(`^` + rootlessPrefix + `([0-9]+)-[0-9]+$`)

// SweepRootless removes what a test process that died without undoing its
// setup left (a test binary killed by its timeout runs no cleanup): users
// exrl<pid>-<n> whose pid is gone, with their processes, cgroups, homes and
// runtime dirs (its hold on /dev/net/tun is dropped by the next acquireTun).
func SweepRootless() error {
	data, err := os.ReadFile("/etc/passwd")
	if err != nil {
		return err
	}
	var errs []error
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Split(line, ":")
		if len(f) < 6 {
			continue
		}
		m := staleName.FindStringSubmatch(f[0])
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		if pid == os.Getpid() || syscall.Kill(pid, 0) != syscall.ESRCH {
			continue
		}
		r := &Rootless{Name: f[0], Home: f[5]}
		r.UID, _ = strconv.Atoi(f[2])
		r.GID, _ = strconv.Atoi(f[3])
		sub, _ := os.ReadFile("/etc/subuid")
		for _, l := range strings.Split(string(sub), "\n") {
			if p := strings.Split(l, ":"); len(p) == 3 && p[0] == r.Name {
				r.SubStart, _ = strconv.Atoi(p[1])
				r.SubCount, _ = strconv.Atoi(p[2])
			}
		}
		killAll(r)
		mounts, _, _ := cgroupMounts()
		for _, mnt := range mounts {
			if dirs, _ := filepath.Glob(filepath.Join(mnt, cgroupPrefix+m[1]+"-*")); len(dirs) > 0 {
				r.CgroupDirs = append(r.CgroupDirs, dirs...)
			}
		}
		_ = r.RemoveCgroups() // processes there were killed above
		if err := r.deleteUser(); err != nil {
			errs = append(errs, err)
		}
		if strings.Contains(filepath.Base(r.Home), homePrefix+m[1]+"-") {
			if err := removeUnlessMounted(r.Home); err != nil {
				errs = append(errs, err)
			}
		}
		runs, _ := filepath.Glob(filepath.Join(os.TempDir(), runPrefix+m[1]+"-*"))
		for _, d := range runs {
			_ = removeUnlessMounted(d)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("removing what an earlier run left: %w", errors.Join(errs...))
	}
	return nil
}

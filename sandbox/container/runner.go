package container

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/opencontainers/cgroups"
	"golang.org/x/sys/unix"
	// Registers the device cgroup managers: without them libcontainer
	// cannot apply the device rules every runtime's configuration has.
	_ "github.com/opencontainers/cgroups/devices"
	"github.com/opencontainers/runc/libcontainer"
	"github.com/opencontainers/runc/libcontainer/configs"

	"executor/oci"
)

// IDPrefix begins the id of every container a Runner starts, and so the name
// of its cgroup: what the leftovers sweep looks for under the cgroup parent.
const IDPrefix = "rt-"

// NewID returns a new random container id: IDPrefix and 48 hex characters.
func NewID() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b) // never fails (crypto/rand panics rather)
	return IDPrefix + hex.EncodeToString(b)
}

// cgroupRoot is where the cgroup hierarchies are mounted: the v2 hierarchy
// itself on a pure v2 host, one directory per v1 hierarchy otherwise.
const cgroupRoot = "/sys/fs/cgroup"

// Config configures a Runner.
type Config struct {
	// StateDir is libcontainer's state root, one directory per container
	// (e.g. <data>/containers). It is made by New.
	StateDir string
	// CgroupParent is the absolute cgroup below which each container gets
	// <CgroupParent>/<id>, on every hierarchy. It is not the root cgroup.
	CgroupParent string
	// Unconfined runs containers without a seccomp filter, an opt-in
	// weakening; otherwise they get oci.DefaultSeccomp().
	Unconfined bool
	// Rootless: the daemon is root only in a user namespace of its own.
	// New then checks that the cgroup parent is the daemon's to write on
	// every hierarchy (an administrator or systemd delegated it); if not,
	// runtimes run without limits (see LimitsOff).
	Rootless bool
	// MountDirs are the absolute directories under which the daemon mounts
	// runtimes' parts (roots, disks, network namespace pins). Containers
	// start from a mount namespace in which these hold no mounts but the
	// starting container's own (see spawn.go), so that a start does not
	// slow down with the number of runtimes. Empty: containers start from
	// the daemon's mount namespace.
	MountDirs []string
	// Needed are the paths outside MountDirs that containers' starts read
	// (the data directory, executor-init): the mounts they are on stay in
	// the spawn namespace, as do the state directory's, the executor's own
	// binary's and the kernel's filesystems (see spawn.go).
	Needed []string
	// Spawner is the path of executor-spawn, which starts the containers
	// (see spawner.go). Empty: this process starts them.
	Spawner string
}

// Runner starts containers and removes what an earlier daemon left behind.
// It is safe for concurrent use.
type Runner struct {
	cfg     Config
	cgroup2 bool
	seccomp seccompProfile // its rules nil when unconfined
	// filter is seccomp compiled, for executor-init to install (see
	// filter.go); nil, with filterErr saying why, when libcontainer
	// compiles it at each start.
	filter    *initFilter
	filterErr error
	// limitsOff says why runtimes get no cgroup (rootless, nothing
	// delegated); nil when they do.
	limitsOff error
	// oomScoreAdj is the daemon's own oom_score_adj when above 0: runtimes
	// get at least that (see oci.Spec.OOMScoreAdj).
	oomScoreAdj int
	// spawn is the namespace containers start from; nil: the daemon's
	// (no MountDirs, or spawnErr says why it could not be made).
	spawn    *spawnNS
	spawnErr error
	// spawner starts containers (see spawner.go); nil: this process
	// does (no Spawner, or spawnerErr says why it could not start).
	spawner    *spawner
	spawnerErr error
}

// New makes a Runner: it detects the cgroup version, compiles the seccomp
// profile and makes the state directory.
func New(cfg Config) (*Runner, error) {
	if cfg.StateDir == "" || !path.IsAbs(cfg.StateDir) {
		return nil, fmt.Errorf("container: state directory %q must be an absolute path", cfg.StateDir)
	}
	if !path.IsAbs(cfg.CgroupParent) || path.Clean(cfg.CgroupParent) == "/" {
		return nil, fmt.Errorf("container: cgroup parent %q must be an absolute cgroup path below the root", cfg.CgroupParent)
	}
	cfg.CgroupParent = path.Clean(cfg.CgroupParent)
	r := &Runner{cfg: cfg, cgroup2: cgroups.IsCgroup2UnifiedMode()}
	if cfg.Rootless {
		r.limitsOff = r.probeCgroupParent()
	}
	if raw, err := os.ReadFile("/proc/self/oom_score_adj"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(raw))); err == nil && n > 0 {
			r.oomScoreAdj = n
		}
	}
	if !cfg.Unconfined {
		sc, err := defaultSeccompProfile()
		if err != nil {
			return nil, fmt.Errorf("container: %w", err)
		}
		r.seccomp = sc
		switch {
		case cfg.Spawner == "":
			r.filterErr = errors.New("no executor-spawn to compile it with")
		default:
			r.filter, r.filterErr = compileFilter(cfg.Spawner, sc)
		}
	} else {
		r.filterErr = errors.New("unconfined")
	}
	// State holds the containers' configurations: root's alone.
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("container: %w", err)
	}
	if len(cfg.MountDirs) > 0 {
		// Without it containers start as before, only slower with many
		// runtimes: not a reason to refuse to run.
		needed := append([]string{cfg.StateDir}, cfg.Needed...)
		if exe, err := os.Executable(); err == nil {
			needed = append(needed, filepath.Dir(exe))
		}
		r.spawn, r.spawnErr = newSpawnNS(cfg.MountDirs, needed)
	}
	if cfg.Spawner != "" {
		// Without it containers start from this process, only slower.
		r.spawner, r.spawnerErr = newSpawner(cfg.Spawner, r.spawn)
	}
	return r, nil
}

// SpawnErr says why containers start from the daemon's own mount namespace
// although MountDirs were given (see spawn.go), or nil.
func (r *Runner) SpawnErr() error { return r.spawnErr }

// FilterErr says why libcontainer compiles the seccomp profile at each
// container start rather than executor-init installing the runner's
// compiled filter (see filter.go), or nil.
func (r *Runner) FilterErr() error { return r.filterErr }

// SpawnerErr says why containers start from this process although a
// Spawner was given (see spawner.go), or nil.
func (r *Runner) SpawnerErr() error { return r.spawnerErr }

// Close releases what New holds, the spawner included. Containers started
// keep running.
func (r *Runner) Close() error {
	var errs []error
	if r.spawner != nil {
		errs = append(errs, r.spawner.close())
	}
	if r.spawn != nil {
		errs = append(errs, r.spawn.close())
	}
	errs = append(errs, r.filter.close())
	return errors.Join(errs...)
}

// LimitsOff says why runtimes run without cgroup limits (a rootless daemon
// without a delegated cgroup parent), or nil when limits hold.
func (r *Runner) LimitsOff() error { return r.limitsOff }

// probeCgroupParent makes the cgroup parent where it is missing and checks
// that this process may create cgroups in it and move processes there, on
// every hierarchy libcontainer uses.
func (r *Runner) probeCgroupParent() error {
	if err := r.MakeCgroupParent(); err != nil {
		r.RemoveCgroupParent() // what it made before it was refused
		return err
	}
	roots, err := r.cgroupMounts()
	if err != nil {
		return err
	}
	for _, root := range roots {
		dir := filepath.Join(root, r.cfg.CgroupParent)
		for _, p := range []string{dir, filepath.Join(dir, "cgroup.procs")} {
			if err := unix.Access(p, unix.W_OK); err != nil {
				return fmt.Errorf("cgroup parent %s is not writable: %w", dir, err)
			}
		}
	}
	return nil
}

// Cgroup2 reports whether the host has the unified cgroup v2 hierarchy only.
func (r *Runner) Cgroup2() bool { return r.cgroup2 }

// Process is a process to run in a container. It is JSON-serialisable, so
// a caller can record a container's main process and hand it to Adopt after
// a restart.
type Process struct {
	Args   []string `json:"args"`
	Env    []string `json:"env,omitempty"`
	Cwd    string   `json:"cwd,omitempty"`
	UID    int      `json:"uid"`
	GID    int      `json:"gid"`
	Groups []int    `json:"groups,omitempty"` // supplementary groups

	// ReportsExit says Args[0] is executor-init: the runner hands it a
	// FIFO to report its command's exit code on as it exits (ExitFDFlag,
	// put after Args[0] when the process starts), which is how a daemon
	// that adopted the container learns the code (see Adopt).
	ReportsExit bool `json:"reportsExit,omitempty"`

	// extraFiles are passed on as fds 3 and up (StartParked's pipe). They
	// do not survive a restart: Adopt drops them.
	extraFiles []*os.File
}

// Start creates container id from spec and runs p as its main process.
//
// The runner decides four fields of spec: Seccomp (the runner's profile)
// and Cgroup2 (the host's) are overwritten, a zero NoFile becomes the
// open files limit runtimes get (see noFileLimit), and CgroupPath, when empty,
// becomes <CgroupParent>/<id>; another CgroupPath is refused, as the
// leftovers sweep would not find its cgroups. For the same reason id must
// begin with IDPrefix.
func (r *Runner) Start(id string, spec oci.Spec, p Process) (*Container, error) {
	if !strings.HasPrefix(id, IDPrefix) {
		return nil, fmt.Errorf("container: id %q does not begin with %q", id, IDPrefix)
	}
	cfg, err := r.config(id, spec)
	if err != nil {
		return nil, err
	}
	if r.filter != nil && p.ReportsExit {
		filterByInit(cfg)
	}
	return r.create(id, cfg, p)
}

// config is container id's libcontainer configuration from spec, with the
// fields the runner decides (see Start) filled in.
func (r *Runner) config(id string, spec oci.Spec) (*configs.Config, error) {
	cg := path.Join(r.cfg.CgroupParent, id)
	if spec.CgroupPath == "" {
		spec.CgroupPath = cg
	} else if spec.CgroupPath != cg {
		return nil, fmt.Errorf("container: cgroup %q of container %s is not %q", spec.CgroupPath, id, cg)
	}
	spec.Seccomp = r.seccomp.rules
	spec.Cgroup2 = r.cgroup2
	spec.Rootless = r.cfg.Rootless
	spec.OOMScoreAdj = r.oomScoreAdj
	spec.NoCgroup = r.limitsOff != nil
	if spec.NoFile == 0 {
		spec.NoFile = noFileLimit()
	}
	return oci.Config(spec)
}

// create creates the container and runs its main process: through the
// spawner when there is one, else from the spawn namespace, when there is
// one, or from this process's own.
func (r *Runner) create(id string, cfg *configs.Config, p Process) (*Container, error) {
	if p.ReportsExit && len(p.Args) > 0 {
		if err := initMountPoint(cfg.Rootfs, p.Args[0]); err != nil {
			return nil, fmt.Errorf("container: %w", err)
		}
	}
	cfg, launch, err := r.launchable(cfg, p)
	if err != nil {
		return nil, err
	}
	var c *Container
	if r.spawner != nil {
		c, err = r.spawner.create(r, id, cfg, launch)
	} else {
		c, err = r.createHere(id, cfg, launch)
	}
	if err != nil {
		return nil, err
	}
	// The process as given, not as launched: a restart hands the
	// filter's descriptor anew. Nothing reads main before create returns.
	c.main = p
	return c, nil
}

// createHere is create from this process.
func (r *Runner) createHere(id string, cfg *configs.Config, p Process) (*Container, error) {
	lc, err := libcontainer.Create(r.cfg.StateDir, id, cfg)
	if err != nil {
		return nil, fmt.Errorf("create container: %w", err)
	}
	c, err := runMain(r, r.spawn, lc, cfg, p)
	if err != nil {
		return nil, errors.Join(err, lc.Destroy())
	}
	return c, nil
}

// noFileLimit is the open files limit of runtimes: generous for servers, but
// never above what the daemon itself may grant.
func noFileLimit() uint64 {
	const want = 1 << 20
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	return min(rl.Max, want)
}

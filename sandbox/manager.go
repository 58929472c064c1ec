package sandbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"time"

	"executor/images"
	"executor/netns"
	"executor/oci"
	"executor/sandbox/build"
	"executor/sandbox/container"
	"executor/sandbox/disk"
	"executor/sandbox/usage"
	"executor/storage"
)

// ImageStore is what the sandbox needs from the image store.
type ImageStore interface {
	Pull(ctx context.Context, ref string) (*images.Image, error)
	MountRoot(ctx context.Context, img *images.Image, dir string) (string, error)
	// UnmountRoot removes a root MountRoot made, also after a restart.
	UnmountRoot(dir string) error
	// AdoptRoot takes over a root an earlier process mounted (live restore).
	AdoptRoot(img *images.Image, dir string) error
}

// DefaultBuildSizeLimit is the cap on sources, artifacts and build caches.
const DefaultBuildSizeLimit = 2 << 30

// DefaultPidsLimit is the processes one runtime may have: the per-function figure of the best-known hosted FaaS.
const DefaultPidsLimit = 1024

// DefaultStopGrace is the time a runtime gets between SIGTERM and SIGKILL
// at shutdown.
const DefaultStopGrace = 2 * time.Second

// DefaultRetryDelay is the wait before re-sending an execution a restarting
// runtime refused.
const DefaultRetryDelay = 500 * time.Millisecond

// Config configures a Manager.
type Config struct {
	// DataDir holds runtime directories and container state.
	DataDir string
	Images  ImageStore
	// Networks are the bridges runtimes are attached to; each runtime gets
	// one of them at random, as the reference does.
	Networks []*netns.Network
	// Storage opens the devices sources are read from and artifacts
	// written to (OPR_EXECUTOR_CONNECTION_STORAGE), and checks their paths.
	Storage *storage.Opener
	// BuildCache is the device build caches are kept on.
	BuildCache storage.Device
	// CgroupParent is the absolute cgroup under which every runtime's cgroup
	// is created, so operators can cap all runtimes at once.
	CgroupParent string
	// Hostname is the executor's hostname (runtime names, INERNAL_EXECUTOR_HOSTNAME).
	Hostname string
	// BuildSizeLimit caps, in bytes, what the daemon copies out of or into
	// a runtime: sources, build artifacts, build caches. Zero means the
	// default, DefaultBuildSizeLimit.
	BuildSizeLimit int64
	// DiskLimit caps, in bytes, everything one runtime writes: its root's
	// upper layer and every directory mounted into it live on a filesystem
	// of this size of its own (sandbox/disk). Zero leaves runtimes on the
	// host's filesystem, uncapped (opt-in weakening).
	DiskLimit int64
	// DiskInodes caps the files one runtime can make; zero means one per
	// 16 KiB of DiskLimit.
	DiskInodes uint64
	// PidsLimit caps the processes of one runtime.
	PidsLimit int64
	// Unconfined turns the default seccomp profile off (opt-in weakening).
	Unconfined bool
	// Rootless: the daemon is root only in a user namespace of its own.
	// Runtimes then run without limits when the cgroup parent is not the
	// daemon's to write (see Warnings).
	Rootless bool
	// Init is the host path of the static executor-init binary, run as each
	// runtime's PID 1; empty runs the runtime's command as PID 1 (no signal
	// forwarding, no zombie reaping).
	Init string
	// Spawner is the host path of executor-spawn, which starts runtimes'
	// containers: a small binary, where the daemon's own, re-executed as
	// each container's init, starts slower (sandbox/container/spawner.go).
	// Empty, or one that cannot start: the daemon starts them, and says so.
	Spawner string
	// UserNS runs every runtime in a user namespace whose root is this host
	// range; nil runs them as host root (opt-in weakening). The image store
	// must shift layer owners into the same range.
	UserNS *oci.IDMap
	// StopGrace is how long a runtime gets between SIGTERM and SIGKILL.
	StopGrace time.Duration
	// RetryAttempts and RetryDelay govern re-sending an execution whose
	// connection was refused (the runtime restarting).
	RetryAttempts int
	RetryDelay    time.Duration
	// InactiveThreshold is the idle time after which maintenance removes a
	// runtime; MaintenanceInterval how often it looks. Zero disables.
	InactiveThreshold   time.Duration
	MaintenanceInterval time.Duration
	// Prewarm is the most prewarmed sandboxes kept per image (see
	// prewarm.go); each image's pool is sized by its cold starts of the
	// last minute, and empties a minute after the last. 0 keeps none.
	Prewarm int
	// LiveRestore keeps runtimes running across a restart of the daemon:
	// Detach leaves them, and Reconcile adopts them (see restore.go). It
	// needs Init: executor-init keeps a runtime's output from failing while
	// no daemon reads it.
	LiveRestore bool
	Logger      *slog.Logger
	// Observer is told what the manager does (metrics, traces); nil: nothing.
	Observer Observer
}

// Manager is the table of runtimes (see the package documentation).
type Manager struct {
	cfg    Config
	runDir string
	log    *slog.Logger
	// runner starts containers and removes what an earlier process left.
	runner *container.Runner
	// sources opens the artifacts' destinations and checks paths;
	// sourceDev reads sources; cacheDev holds build caches.
	sources   *storage.Opener
	sourceDev storage.Device
	cacheDev  storage.Device
	// assemble makes a runtime's parts and starts its container: prepare,
	// or a fake in the table's tests.
	assemble func(ctx context.Context, r *Runtime, spec Spec) error

	mu      sync.Mutex
	table   map[string]*entry
	closing bool
	// teardowns are the deleted runtimes still being torn down in the
	// background (see Delete); added to under mu, so that Close, which
	// sets closing under mu first, waits for every one.
	teardowns sync.WaitGroup
	// teardownSlots bounds the background teardowns running at once
	// (tearDown): half the CPUs, at least one.
	teardownSlots chan struct{}

	names build.Namer // of artifacts

	usage *usage.Sampler
	// pool keeps prewarmed sandboxes (Config.Prewarm); nil keeps none.
	pool *pool
	// spares keeps runtimes' disks made ahead of need (DiskLimit); nil
	// keeps none.
	spares *disk.Spares

	stopMaint chan struct{}
	maintDone chan struct{}
}

// New prepares the data directories, opens the storage devices and starts
// maintenance. Call Reconcile before serving to remove what an earlier
// process left behind.
func New(cfg Config) (*Manager, error) {
	if cfg.DataDir == "" || !filepath.IsAbs(cfg.DataDir) {
		return nil, fmt.Errorf("sandbox: data dir %q must be absolute", cfg.DataDir)
	}
	if cfg.Init != "" {
		if st, err := os.Stat(cfg.Init); err != nil || !st.Mode().IsRegular() || st.Mode()&0o111 == 0 {
			return nil, fmt.Errorf("sandbox: init %s is not an executable file (build it with make build): %v", cfg.Init, err)
		}
	}
	if cfg.LiveRestore && cfg.Init == "" {
		return nil, errors.New("sandbox: live restore (OPR_EXECUTOR_LIVE_RESTORE) needs executor-init, which OPR_EXECUTOR_INIT turned off: without it a runtime's output pipe breaks when the daemon stops")
	}
	if cfg.Prewarm > 0 && cfg.Init == "" {
		return nil, errors.New("sandbox: prewarmed sandboxes (OPR_EXECUTOR_PREWARM) park executor-init, which OPR_EXECUTOR_INIT turned off")
	}
	if cfg.Images == nil || len(cfg.Networks) == 0 {
		return nil, errors.New("sandbox: images and at least one network are required")
	}
	if cfg.CgroupParent == "" || !filepath.IsAbs(cfg.CgroupParent) {
		return nil, fmt.Errorf("sandbox: cgroup parent %q must be absolute", cfg.CgroupParent)
	}
	if cfg.Storage == nil || cfg.BuildCache == nil {
		return nil, errors.New("sandbox: the storage and build-cache devices are required")
	}
	sourceDev, err := cfg.Storage.Open("/")
	if err != nil {
		return nil, err
	}
	// Roots and disks go below the runtimes' directory, network namespace
	// pins below each network's.
	mountDirs := []string{filepath.Join(cfg.DataDir, "runtimes")}
	for _, n := range cfg.Networks {
		mountDirs = append(mountDirs, n.NamespaceDir())
	}
	runner, err := container.New(container.Config{
		StateDir:     filepath.Join(cfg.DataDir, "containers"),
		CgroupParent: cfg.CgroupParent,
		Unconfined:   cfg.Unconfined,
		Rootless:     cfg.Rootless,
		MountDirs:    mountDirs,
		Needed:       slices.DeleteFunc([]string{cfg.DataDir, cfg.Init}, func(p string) bool { return p == "" }),
		Spawner:      cfg.Spawner,
	})
	if err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	m := newManager(cfg)
	if err := runner.SpawnErr(); err != nil {
		m.log.Warn("containers start from the executor's own mount namespace: each start gets slower as runtimes add mounts", "err", err)
	}
	if err := runner.SpawnerErr(); err != nil {
		m.log.Warn("containers start from the executor's own binary, some milliseconds slower each than through executor-spawn: install executor-spawn beside executor", "err", err)
	}
	if err := runner.FilterErr(); err == nil {
		m.log.Info("executor-init installs the seccomp filter, compiled once")
	} else if !cfg.Unconfined {
		level := slog.LevelWarn
		if cfg.Rootless {
			level = slog.LevelInfo // expected there
		}
		m.log.Log(context.Background(), level, "libcontainer compiles the seccomp profile at each container start, 4-5 ms each, rather than executor-init installing it compiled once", "err", err)
	}
	m.runner, m.sources, m.sourceDev, m.cacheDev = runner, cfg.Storage, sourceDev, cfg.BuildCache
	m.assemble = m.prepare
	if cfg.UserNS != nil {
		if err := Traversable(cfg.DataDir); err != nil {
			return nil, err
		}
	}
	if cfg.DiskLimit > 0 {
		if err := disk.Check(); err != nil {
			return nil, fmt.Errorf("sandbox: runtimes' disks (OPR_EXECUTOR_DISK_LIMIT, or 0 to leave runtimes uncapped on the host's filesystem): %w", err)
		}
		if err := m.diskConfig(nil).Validate(); err != nil {
			return nil, fmt.Errorf("sandbox: runtimes' disks (OPR_EXECUTOR_DISK_LIMIT, OPR_EXECUTOR_DISK_INODES): %w", err)
		}
	}
	// Runtime directories hold each runtime's root: traversable (not
	// listable) by a user-namespaced runtime's root.
	if err := os.MkdirAll(m.runDir, 0o711); err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	if err := os.Chmod(m.runDir, 0o711); err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	leaf, err := runner.EnterSupervisorCgroup(os.Getpid())
	if err != nil {
		return nil, fmt.Errorf("sandbox: cgroup parent %s (OPR_EXECUTOR_CGROUP_PARENT): %w", cfg.CgroupParent, err)
	}
	if leaf != "" {
		m.log.Info("moved the executor into a leaf cgroup: it was started where runtimes' cgroups go", "cgroup", leaf)
	}
	if cfg.DiskLimit > 0 {
		m.spares, err = disk.NewSpares(disk.SparesConfig{
			Disk:   m.diskConfig(cfg.UserNS),
			Dir:    m.runDir,
			Count:  diskSpares,
			Grace:  RefillGrace,
			Logger: m.log,
		})
		if err != nil {
			return nil, fmt.Errorf("sandbox: %w", err)
		}
	}
	m.startMaintenance()
	m.pool = newPool(m, cfg.Prewarm)
	return m, nil
}

// diskSpares is how many runtimes' disks are kept made ahead of need
// (disk.Spares): a cold start attaches one instead of making its own, 2-5
// ms of I/O-bound work on its path (more while the host's disk is busy),
// and each is made again once the cold start that took it has answered.
// Two cover a second cold start close behind the first; an idle one holds
// a loop device and the filesystem's metadata (about 150 KiB of the data
// dir's disk), nothing else.
const diskSpares = 2

// newManager is a Manager with cfg's zero values defaulted and nothing
// opened: New wires the real parts into it, the table's tests fakes.
func newManager(cfg Config) *Manager {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.StopGrace <= 0 {
		cfg.StopGrace = DefaultStopGrace
	}
	if cfg.BuildSizeLimit <= 0 {
		cfg.BuildSizeLimit = DefaultBuildSizeLimit
	}
	if cfg.PidsLimit == 0 {
		cfg.PidsLimit = DefaultPidsLimit
	}
	if cfg.RetryDelay <= 0 {
		cfg.RetryDelay = DefaultRetryDelay
	}
	if cfg.Observer == nil {
		cfg.Observer = NopObserver{}
	}
	m := &Manager{
		teardownSlots: make(chan struct{}, max(1, runtime.NumCPU()/2)),
		cfg:           cfg,
		runDir:        filepath.Join(cfg.DataDir, "runtimes"),
		log:           cfg.Logger,
		table:         make(map[string]*entry),
	}
	m.usage = m.newUsageSampler()
	return m
}

// startMaintenance starts the reaper of idle runtimes when it is configured.
func (m *Manager) startMaintenance() {
	if m.cfg.MaintenanceInterval > 0 && m.cfg.InactiveThreshold > 0 {
		m.stopMaint = make(chan struct{})
		m.maintDone = make(chan struct{})
		go m.maintain()
	}
}

// stopMaintenance stops the reaper of idle runtimes, if it runs, and waits
// for a pass in progress.
func (m *Manager) stopMaintenance() {
	if m.stopMaint != nil {
		close(m.stopMaint)
		<-m.maintDone
		m.stopMaint = nil
	}
}

// diskConfig is the disk of a runtime whose root maps to ids (nil: host root).
func (m *Manager) diskConfig(ids *oci.IDMap) disk.Config {
	c := disk.Config{
		Size:        m.cfg.DiskLimit,
		Inodes:      m.cfg.DiskInodes,
		Mode:        0o700,
		TemplateDir: filepath.Join(m.cfg.DataDir, "disk-templates"),
	}
	if ids != nil {
		c.UID, c.GID = int(ids.HostUID), int(ids.HostGID)
	}
	return c
}

// Traversable checks that a user-namespaced runtime's root, an unprivileged
// host uid, can walk down to the data dir: its root file system and mounted
// directories live there, and the kernel checks each parent directory.
func Traversable(dir string) error {
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		st, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("sandbox: data dir %s: %w", dir, err)
		}
		if st.Mode().Perm()&0o001 == 0 {
			return fmt.Errorf("sandbox: runtimes run as an unprivileged host uid (user namespace) and cannot traverse %s (mode %v) on the way to the data dir %s: give it o+x (chmod o+x %s) or choose another data dir",
				d, st.Mode().Perm(), dir, d)
		}
		if d == "/" {
			return nil
		}
	}
}

func (m *Manager) runtimeName(id string) string { return m.cfg.Hostname + "-" + id }

// Close stops maintenance and usage sampling and removes every runtime,
// giving each the stop grace period to exit on SIGTERM.
func (m *Manager) Close(ctx context.Context) error {
	m.usage.Close()
	m.pool.close()
	m.spares.Close()
	m.mu.Lock()
	m.closing = true
	entries := make([]*entry, 0, len(m.table))
	for _, e := range m.table {
		entries = append(entries, e)
		m.dropLocked(e)
	}
	m.mu.Unlock()
	m.stopMaintenance()
	var wg sync.WaitGroup
	errs := make([]error, len(entries))
	for i, e := range entries {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = m.finish(ctx, e, m.cfg.StopGrace)
		}()
	}
	wg.Wait()
	m.teardowns.Wait()
	if m.runner != nil {
		errs = append(errs, m.runner.Close())
	}
	return errors.Join(errs...)
}

// Count is the runtimes in the table: being created (pending) and made
// (ready). It takes the table lock only, for a scrape to read cheaply.
func (m *Manager) Count() (pending, ready int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, e := range m.table {
		if e.pending() {
			pending++
		} else {
			ready++
		}
	}
	return pending, ready
}

func (m *Manager) pickNetwork() *netns.Network {
	return m.cfg.Networks[rand.IntN(len(m.cfg.Networks))]
}

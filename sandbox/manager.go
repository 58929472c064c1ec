// Package sandbox runs the runtimes: it creates each runtime's container from
// an image, network endpoint and directories, keeps the table of runtimes,
// forwards executions to them, and removes them again.
package sandbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/runc/libcontainer/configs"

	"executor/images"
	"executor/netns"
	"executor/oci"
	"executor/sandbox/disk"
	"executor/storage"
)

// ImageStore is what the sandbox needs from the image store.
type ImageStore interface {
	Pull(ctx context.Context, ref string) (*images.Image, error)
	MountRoot(ctx context.Context, img *images.Image, dir string) (string, error)
	// UnmountRoot removes a root MountRoot made, also after a restart.
	UnmountRoot(dir string) error
}

// DefaultBuildSizeLimit is the cap on sources, artifacts and build caches.
const DefaultBuildSizeLimit = 2 << 30

// DefaultPidsLimit is the processes one runtime may have: the per-function figure of the best-known hosted FaaS.
const DefaultPidsLimit = 1024

// Config configures a Manager.
type Config struct {
	// DataDir holds runtime directories and container state.
	DataDir string
	Images  ImageStore
	// Networks are the bridges runtimes are attached to; each runtime gets
	// one of them at random, as the reference does.
	Networks []*netns.Network
	// Storage is the DSN of the device sources are read from and artifacts
	// written to (OPR_EXECUTOR_CONNECTION_STORAGE).
	Storage string
	// BuildCacheStorage is the DSN of the build cache device; empty means Storage.
	BuildCacheStorage string
	// StorageRoots are the directories the local device keeps sources and
	// artifacts to (OPR_EXECUTOR_STORAGE_ROOTS).
	StorageRoots []string
	// DNSServers are the nameservers runtimes get in /etc/resolv.conf; nil
	// means the host's own, without loopback ones they cannot reach.
	DNSServers []netip.Addr
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
	// Init is the host path of the static executor-init binary, run as each
	// runtime's PID 1; empty runs the runtime's command as PID 1 (no signal
	// forwarding, no zombie reaping).
	Init string
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
	Logger              *slog.Logger
}

// Manager is the table of runtimes.
type Manager struct {
	cfg       Config
	stateRoot string
	runDir    string
	cgroup2   bool
	seccomp   *configs.Seccomp
	log       *slog.Logger
	// sources opens the artifacts' destinations and checks paths;
	// sourceDev reads sources; cacheDev holds build caches.
	sources   *storage.Opener
	sourceDev storage.Device
	cacheDev  storage.Device

	mu      sync.Mutex
	table   map[string]*entry
	closing bool

	uniqMu   sync.Mutex
	lastUniq int64

	usageMu   sync.Mutex
	lastUsage *usageSample

	stopMaint chan struct{}
	maintDone chan struct{}
}

// entry is a row of the table. ready is closed when creation ends; then rt is
// set, or err says why creation failed.
type entry struct {
	id      string
	created time.Time
	image   string
	version string
	name    string
	ready   chan struct{}
	cancel  context.CancelFunc
	rt      *Runtime
	err     error
	// log is the build output, followed by log streams while it grows.
	log *outputLog
	// gone is closed when the entry leaves the table.
	gone chan struct{}
	// hostname and secret are chosen before creation so the pending row can
	// show them.
	hostname string
	secret   string
}

func (e *entry) pending() bool {
	select {
	case <-e.ready:
		return false
	default:
		return true
	}
}

// New prepares the data directories. Call Reconcile before serving to remove
// what an earlier process left behind.
func New(cfg Config) (*Manager, error) {
	if cfg.DataDir == "" || !filepath.IsAbs(cfg.DataDir) {
		return nil, fmt.Errorf("sandbox: data dir %q must be absolute", cfg.DataDir)
	}
	if cfg.Init != "" {
		if st, err := os.Stat(cfg.Init); err != nil || !st.Mode().IsRegular() || st.Mode()&0o111 == 0 {
			return nil, fmt.Errorf("sandbox: init %s is not an executable file (build it with make build): %v", cfg.Init, err)
		}
	}
	if cfg.Images == nil || len(cfg.Networks) == 0 {
		return nil, errors.New("sandbox: images and at least one network are required")
	}
	if cfg.CgroupParent == "" || !filepath.IsAbs(cfg.CgroupParent) {
		return nil, fmt.Errorf("sandbox: cgroup parent %q must be absolute", cfg.CgroupParent)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.StopGrace <= 0 {
		cfg.StopGrace = 2 * time.Second
	}
	if cfg.BuildSizeLimit <= 0 {
		cfg.BuildSizeLimit = DefaultBuildSizeLimit
	}
	// The devices are opened once, here: an S3 device is a client, which
	// every source, artifact and cache would otherwise make anew.
	sources, err := storage.NewOpener(storage.Config{DSN: cfg.Storage, LocalRoots: cfg.StorageRoots, MaxSize: cfg.BuildSizeLimit})
	if err != nil {
		return nil, err
	}
	sourceDev, err := sources.Open("/")
	if err != nil {
		return nil, err
	}
	cacheDev, err := openCacheDevice(cfg)
	if err != nil {
		return nil, err
	}
	if cfg.PidsLimit == 0 {
		cfg.PidsLimit = DefaultPidsLimit
	}
	if cfg.RetryDelay <= 0 {
		cfg.RetryDelay = 500 * time.Millisecond
	}
	m := &Manager{
		cfg:       cfg,
		stateRoot: filepath.Join(cfg.DataDir, "containers"),
		runDir:    filepath.Join(cfg.DataDir, "runtimes"),
		cgroup2:   cgroups.IsCgroup2UnifiedMode(),
		log:       cfg.Logger,
		table:     make(map[string]*entry),
		sources:   sources,
		sourceDev: sourceDev,
		cacheDev:  cacheDev,
	}
	if !cfg.Unconfined {
		sc, err := oci.DefaultSeccomp()
		if err != nil {
			return nil, err
		}
		m.seccomp = sc
	}
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
	if err := os.MkdirAll(m.stateRoot, 0o700); err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	// Runtime directories hold each runtime's root: traversable (not
	// listable) by a user-namespaced runtime's root.
	if err := os.MkdirAll(m.runDir, 0o711); err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	if err := os.Chmod(m.runDir, 0o711); err != nil {
		return nil, fmt.Errorf("sandbox: %w", err)
	}
	if m.cgroup2 {
		leaf, err := enterSupervisorCgroup("/sys/fs/cgroup", cfg.CgroupParent, os.Getpid())
		if err != nil {
			return nil, fmt.Errorf("sandbox: cgroup parent %s (OPR_EXECUTOR_CGROUP_PARENT): %w", cfg.CgroupParent, err)
		}
		if leaf != "" {
			m.log.Info("moved the executor into a leaf cgroup: it was started where runtimes' cgroups go", "cgroup", leaf)
		}
	}
	if cfg.MaintenanceInterval > 0 && cfg.InactiveThreshold > 0 {
		m.stopMaint = make(chan struct{})
		m.maintDone = make(chan struct{})
		go m.maintain()
	}
	return m, nil
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

// List returns every runtime, in creation order.
func (m *Manager) List() []Info {
	m.mu.Lock()
	entries := make([]*entry, 0, len(m.table))
	for _, e := range m.table {
		entries = append(entries, e)
	}
	m.mu.Unlock()
	sort.Slice(entries, func(i, j int) bool { return entries[i].created.Before(entries[j].created) })
	out := make([]Info, 0, len(entries))
	for _, e := range entries {
		out = append(out, e.info())
	}
	return out
}

func (e *entry) info() Info {
	if !e.pending() && e.rt != nil {
		return e.rt.Info()
	}
	return Info{
		Version:  e.version,
		Created:  e.created,
		Updated:  e.created,
		Name:     e.name,
		Hostname: e.hostname,
		Status:   "pending",
		Key:      e.secret,
		Image:    e.image,
	}
}

// Get returns one runtime.
func (m *Manager) Get(id string) (Info, error) {
	m.mu.Lock()
	e := m.table[id]
	m.mu.Unlock()
	if e == nil {
		return Info{}, &Error{Type: ErrRuntimeNotFound, Message: "Runtime not found"}
	}
	return e.info(), nil
}

// Delete removes a runtime: it leaves the table at once, then its container
// is stopped and everything it held is released before Delete returns.
func (m *Manager) Delete(ctx context.Context, id string) error {
	m.mu.Lock()
	e := m.table[id]
	if e != nil {
		m.dropLocked(e)
	}
	m.mu.Unlock()
	if e == nil {
		return &Error{Type: ErrRuntimeNotFound, Message: "Runtime not found"}
	}
	return m.finish(ctx, e, 0)
}

// finish ends a removed entry: cancels a creation in progress, waits for it,
// and destroys the runtime if it exists.
func (m *Manager) finish(ctx context.Context, e *entry, grace time.Duration) error {
	e.cancel()
	<-e.ready
	if e.rt == nil {
		return nil
	}
	if err := e.rt.destroy(ctx, m, grace); err != nil {
		m.log.Error("runtime removal incomplete", "runtime", e.id, "err", err)
		return fmt.Errorf("remove runtime %s: %w", e.id, err)
	}
	return nil
}

// dropLocked removes e from the table if it is still there; m.mu is held.
func (m *Manager) dropLocked(e *entry) {
	if m.table[e.id] == e {
		delete(m.table, e.id)
		close(e.gone)
	}
}

// removeDead removes a runtime whose main process ended for good.
func (m *Manager) removeDead(r *Runtime) {
	m.mu.Lock()
	e := m.table[r.ID]
	if e == nil || e.rt != r {
		m.mu.Unlock()
		return // already removed, or the id now belongs to a newer runtime
	}
	m.dropLocked(e)
	m.mu.Unlock()
	if err := m.finish(context.Background(), e, 0); err != nil {
		m.log.Error("remove exited runtime", "runtime", r.ID, "err", err)
	}
}

// lookup returns the ready runtime for id, waiting for a creation in progress
// until ctx ends.
func (m *Manager) lookup(ctx context.Context, id string) (*entry, error) {
	m.mu.Lock()
	e := m.table[id]
	m.mu.Unlock()
	if e == nil {
		return nil, nil
	}
	select {
	case <-e.ready:
	case <-ctx.Done():
		return nil, &Error{Type: ErrRuntimeTimeout, Message: "Timed out waiting for runtime.", Err: ctx.Err()}
	}
	return e, nil
}

// Close stops maintenance and removes every runtime, giving each the stop
// grace period to exit on SIGTERM.
func (m *Manager) Close(ctx context.Context) error {
	m.mu.Lock()
	m.closing = true
	entries := make([]*entry, 0, len(m.table))
	for _, e := range m.table {
		entries = append(entries, e)
		m.dropLocked(e)
	}
	m.mu.Unlock()
	if m.stopMaint != nil {
		close(m.stopMaint)
		<-m.maintDone
		m.stopMaint = nil
	}
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
	return errors.Join(errs...)
}

func (m *Manager) pickNetwork() *netns.Network {
	return m.cfg.Networks[rand.IntN(len(m.cfg.Networks))]
}

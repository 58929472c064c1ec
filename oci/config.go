// Package oci turns an image's configuration and a runtime request into the
// libcontainer configuration and process of a runtime. It is pure: it reads no
// files and changes nothing.
package oci

import (
	"errors"
	"fmt"
	"math"
	"path"
	"slices"

	"github.com/opencontainers/cgroups"
	devconfig "github.com/opencontainers/cgroups/devices/config"
	"github.com/opencontainers/runc/libcontainer/configs"
	"github.com/opencontainers/runc/libcontainer/specconv"
	"golang.org/x/sys/unix"
)

// Bind is a host directory or file mounted into the runtime.
type Bind struct {
	Source      string
	Destination string
	ReadOnly    bool
}

// Spec is everything a runtime's container needs.
type Spec struct {
	Rootfs    string
	Hostname  string
	NetNSPath string // pinned network namespace; empty means a new, unconnected one
	// CgroupPath is absolute (e.g. /executor/<id>): a relative one would be
	// resolved against the daemon's own cgroup per controller.
	CgroupPath string
	CPUs       float64 // fractional cores; 0 means no CPU limit (only when the operator opted out of OPR_EXECUTOR_MAX_CPUS)
	MemoryMB   int64   // megabytes of 1,000,000 bytes, as the reference computes; 0 means no limit (likewise)
	PidsLimit  int64   // 0 means no limit
	Binds      []Bind
	// Cgroup2 selects the cgroup v2 layout (a private cgroup namespace).
	Cgroup2 bool
	// UserNS, when set, runs the runtime in its own user namespace: its root
	// is an unprivileged host id range.
	UserNS *IDMap
	// Seccomp filters the runtime's system calls; nil means unconfined.
	Seccomp *configs.Seccomp
	// NoFile is the open files limit (soft and hard). It cannot exceed the
	// daemon's own hard limit; 0 leaves the inherited limit.
	NoFile uint64
	// OOMScoreAdj is the runtime's oom_score_adj: 0 (the kernel's neutral
	// value) or, when the daemon's own is higher, the daemon's, which a
	// rootless daemon cannot go below (lowering it takes CAP_SYS_RESOURCE on
	// the host; systemd's user@.service sets 100). Clamped to 0..1000.
	OOMScoreAdj int
	// Rootless: the daemon is root only in a user namespace of its own.
	// Device cgroup rules are then left to libcontainer's rootless handling
	// (the kernel refuses them there; /dev holds only the allowed nodes
	// either way).
	Rootless bool
	// NoCgroup runs the runtime in no cgroup the daemon controls (a
	// rootless daemon nobody delegated cgroups to): CPUs, MemoryMB and
	// PidsLimit are ignored, no limit is set, and only the last element of
	// CgroupPath is used, as a name.
	NoCgroup bool
}

const (
	cpuPeriod       = 100000
	defaultMntFlags = unix.MS_NOEXEC | unix.MS_NOSUID | unix.MS_NODEV
)

// DefaultCapabilities is podman's default set: narrower than Docker's (no
// NET_RAW, MKNOD or AUDIT_WRITE). It is always set explicitly: a nil list
// would give the container every capability of the daemon.
var defaultCapabilities = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
	"CAP_NET_BIND_SERVICE", "CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP",
	"CAP_SETUID", "CAP_SYS_CHROOT",
}

// DefaultCapabilities returns a copy of the capability set runtimes get.
func DefaultCapabilities() []string { return append([]string(nil), defaultCapabilities...) }

// IDMap maps container ids [0, Size) onto host ids from HostUID and HostGID.
type IDMap struct {
	HostUID, HostGID, Size int64
}

const (
	// MaxID is the largest id a user namespace can map: the kernel reserves
	// (uid_t)-1 as "no id" (chown's "leave as is"), so it is never mapped.
	MaxID = 1<<32 - 2
	// HostIDs is how many ids at the bottom of the host's id space belong to
	// the host itself (its users, nobody at 65534, systemd's dynamic users)
	// and are never given to runtimes by FullIDMap.
	HostIDs = 1 << 16
	// MinIDs is the smallest range a runtime can have: images use ids up to
	// OverflowID, and owners a smaller range could not hold would have no id
	// to be squashed to.
	MinIDs = 1 << 16
	// OverflowID is the id owners outside a runtime's range are given
	// (nobody, the kernel's overflowuid and overflowgid).
	OverflowID = 65534
)

// FullIDMap maps every id an image can record that leaves the host's own ids
// 0..HostIDs-1 alone: container ids 0..MaxID-HostIDs onto host ids
// HostIDs..MaxID, so owners such as npm's 1516583083 keep their meaning
// inside the runtime. Only ids above MaxID-HostIDs (4294901758) are out of
// its range.
func FullIDMap() *IDMap {
	return &IDMap{HostUID: HostIDs, HostGID: HostIDs, Size: MaxID - HostIDs + 1}
}

// Validate reports whether the kernel can set m up: positive host ids, at
// least MinIDs ids, and no id past MaxID on either side.
func (m IDMap) Validate() error {
	switch {
	case m.HostUID <= 0 || m.HostGID <= 0:
		return fmt.Errorf("the host ids %d and %d must be positive (host root is never mapped)", m.HostUID, m.HostGID)
	case m.Size < MinIDs:
		return fmt.Errorf("the range must hold at least %d ids (images use ids up to %d)", MinIDs, OverflowID)
	case m.Size-1 > MaxID || m.HostUID > MaxID-(m.Size-1) || m.HostGID > MaxID-(m.Size-1):
		return fmt.Errorf("the range goes past the largest id %d", int64(MaxID))
	}
	return nil
}

// Config builds the libcontainer configuration of a runtime.
func Config(s Spec) (*configs.Config, error) {
	if s.Rootfs == "" || !path.IsAbs(s.Rootfs) {
		return nil, fmt.Errorf("oci: rootfs %q must be an absolute path", s.Rootfs)
	}
	cgroupName := path.Base(s.CgroupPath)
	if s.NoCgroup {
		s.CgroupPath, s.CPUs, s.MemoryMB, s.PidsLimit = "", 0, 0, 0
	} else if s.CgroupPath == "" || !path.IsAbs(s.CgroupPath) {
		return nil, fmt.Errorf("oci: cgroup path %q must be absolute", s.CgroupPath)
	}
	// NaN compares false with everything and would pass as "no CPU limit".
	if s.CPUs < 0 || math.IsNaN(s.CPUs) || math.IsInf(s.CPUs, 0) || s.MemoryMB < 0 || s.PidsLimit < 0 {
		return nil, errors.New("oci: resource limits must be finite and not negative")
	}
	res, err := resources(s)
	if err != nil {
		return nil, err
	}
	oomScoreAdj := max(0, min(s.OOMScoreAdj, 1000))
	caps := DefaultCapabilities()
	ns := configs.Namespaces{
		{Type: configs.NEWNS},
		{Type: configs.NEWUTS},
		{Type: configs.NEWIPC},
		{Type: configs.NEWPID},
		{Type: configs.NEWNET, Path: s.NetNSPath},
	}
	if s.Cgroup2 {
		ns = append(ns, configs.Namespace{Type: configs.NEWCGROUP})
	}
	if s.UserNS != nil {
		if err := s.UserNS.Validate(); err != nil {
			return nil, fmt.Errorf("oci: user namespace mapping %+v: %w", *s.UserNS, err)
		}
		ns = append(ns, configs.Namespace{Type: configs.NEWUSER})
	}
	cfg := &configs.Config{
		Rootfs:          s.Rootfs,
		Hostname:        s.Hostname,
		Namespaces:      ns,
		NoNewPrivileges: true,
		Capabilities: &configs.Capabilities{
			Bounding:  caps,
			Effective: caps,
			Permitted: caps,
		},
		Cgroups: &cgroups.Cgroup{
			Path:      s.CgroupPath,
			Resources: res,
		},
		Devices: specconv.AllowedDevices,
		Mounts:  append(standardMounts(s.UserNS != nil), binds(s.Binds)...),
		// A runtime is always the OOM killer's first choice over the daemon:
		// without this it inherits the daemon's own score adjustment (the
		// unit's OOMScoreAdjust=-500), and a runtime over a host-wide
		// shortage would be spared at the daemon's expense. 0 is the kernel's
		// neutral value, or more (see Spec.OOMScoreAdj).
		OomScoreAdj: &oomScoreAdj,
		// No session keyring of its own where the seccomp filter keeps the
		// runtime out of keyrings: see sharesSessionKeyring.
		NoNewKeyring: sharesSessionKeyring(s.Seccomp),
		MaskPaths: []string{
			"/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys",
			"/proc/latency_stats", "/proc/sched_debug", "/proc/scsi", "/proc/timer_list",
			"/proc/timer_stats", "/sys/firmware", "/sys/devices/virtual/powercap",
		},
		ReadonlyPaths: []string{
			"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
			// On cgroup v1 libcontainer mounts a writable tmpfs there to
			// hold the hierarchies (which it mounts read-only).
			"/sys/fs/cgroup",
		},
	}
	if s.Rootless {
		cfg.RootlessCgroups = true
		cfg.Cgroups.Rootless = true
	}
	if s.NoCgroup {
		// No path: libcontainer tries <its own cgroup>/<name> and, being
		// rootless, takes a refusal as "no cgroup"; with no limit asked
		// for, nothing depends on it.
		cfg.Cgroups = &cgroups.Cgroup{Rootless: true, Name: cgroupName, Resources: res}
	}
	if m := s.UserNS; m != nil {
		cfg.UIDMappings = []configs.IDMap{{ContainerID: 0, HostID: m.HostUID, Size: m.Size}}
		cfg.GIDMappings = []configs.IDMap{{ContainerID: 0, HostID: m.HostGID, Size: m.Size}}
	}
	cfg.Seccomp = s.Seccomp
	if s.NoFile > 0 {
		cfg.Rlimits = []configs.Rlimit{{Type: unix.RLIMIT_NOFILE, Hard: s.NoFile, Soft: s.NoFile}}
	}
	return cfg, nil
}

// keyringSyscalls are the system calls that reach keyrings.
var keyringSyscalls = []string{"add_key", "keyctl", "request_key"}

// sharesSessionKeyring says whether a runtime under the seccomp filter sc
// runs with the daemon's session keyring (libcontainer's NoNewKeyring)
// instead of a new one of its own: only when sc refuses every keyring
// system call.
//
// A keyring of its own counts against the key quota of the runtime root's
// host uid (kernel.keys.maxkeys, 200 keys per non-root uid by default),
// which every runtime shares (they all have the same root) with every other
// executor on the host: libcontainer has each container's init join a new
// keyring "_ses.<id>", and the 201st runtime failed with "unable to join
// session keyring: unable to create session key: disk quota exceeded".
//
// With NoNewKeyring a runtime has the daemon's session keyring as its own
// (fork, execve and a new user namespace all keep it). Neither its user
// namespace nor its host uid keeps it out of that keyring: a process
// possesses its session keyring, and possessor permissions apply whatever
// its uid or user namespace. Measured without a filter
// (OPR_EXECUTOR_SECCOMP=unconfined): a runtime searches and reads a key the
// daemon's session keyring holds (add_key gives possessors every right) and
// adds keys to it, which every other runtime could read. The daemon adds no
// keys there itself, but it holds what the daemon was started with: under
// systemd the unit's private keyring (its invocation_id), from a login
// shell that session's keyring, with the user keyring pam_keyinit links
// into it. So an unconfined runtime keeps a keyring of its own, and with it
// the quota limit (a daemon holding an empty session keyring that runtimes
// may only view, made before any runtime, would lift that).
//
// Under moby's default profile (DefaultSeccomp) none of add_key, keyctl
// and request_key is allowed: they fail with EPERM, so a runtime cannot
// name, search, read, write, link or join any keyring, the daemon's
// included, and /proc/keys is masked (tests/e2e/keyring_test.go).
func sharesSessionKeyring(sc *configs.Seccomp) bool {
	if sc == nil {
		return false
	}
	switch sc.DefaultAction {
	case configs.Errno, configs.Kill, configs.KillThread, configs.KillProcess, configs.Trap:
	default:
		return false
	}
	for _, r := range sc.Syscalls {
		if slices.Contains(keyringSyscalls, r.Name) {
			return false
		}
	}
	return true
}

func resources(s Spec) (*cgroups.Resources, error) {
	var rules []*devconfig.Rule
	for _, d := range specconv.AllowedDevices {
		rules = append(rules, &d.Rule)
	}
	res := &cgroups.Resources{Devices: rules}
	if s.MemoryMB > 0 {
		if s.MemoryMB > math.MaxInt64/1_000_000 {
			return nil, fmt.Errorf("oci: memory %d MB is too large", s.MemoryMB)
		}
		res.Memory = s.MemoryMB * 1_000_000
		// Equal memory+swap limit: no swap beyond the memory limit.
		res.MemorySwap = res.Memory
	}
	if s.CPUs > 0 {
		quota := int64(math.Round(s.CPUs * cpuPeriod))
		if quota < 1000 {
			quota = 1000 // the kernel's minimum quota is 1 ms
		}
		res.CpuQuota = quota
		res.CpuPeriod = cpuPeriod
	}
	if s.PidsLimit > 0 {
		p := s.PidsLimit
		res.PidsLimit = &p
	}
	return res, nil
}

func standardMounts(userns bool) []*configs.Mount {
	sys := &configs.Mount{Source: "sysfs", Destination: "/sys", Device: "sysfs", Flags: defaultMntFlags | unix.MS_RDONLY}
	if userns {
		// sysfs can only be mounted by an owner of the network namespace,
		// and the runtime's was made by the daemon outside the runtime's
		// user namespace: bind the host's read-only instead, as rootless
		// runc and podman do (the masked paths still apply).
		//
		// MS_RDONLY on a recursive bind only reaches its top mount: the
		// host's submounts (securityfs, tracefs, the cgroup hierarchies)
		// would stay writable. mount_setattr with AT_RECURSIVE (kernel
		// 5.12+) flags every one of them.
		sys = &configs.Mount{Source: "/sys", Destination: "/sys", Device: "bind",
			Flags:   unix.MS_BIND | unix.MS_REC | unix.MS_RDONLY | defaultMntFlags,
			RecAttr: &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY | unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV | unix.MOUNT_ATTR_NOEXEC}}
	}
	return []*configs.Mount{
		{Source: "proc", Destination: "/proc", Device: "proc", Flags: defaultMntFlags},
		{Source: "tmpfs", Destination: "/dev", Device: "tmpfs", Flags: unix.MS_NOSUID | unix.MS_STRICTATIME, Data: "mode=755,size=65536k"},
		{Source: "devpts", Destination: "/dev/pts", Device: "devpts", Flags: unix.MS_NOSUID | unix.MS_NOEXEC, Data: "newinstance,ptmxmode=0666,mode=0620"},
		{Source: "shm", Destination: "/dev/shm", Device: "tmpfs", Flags: defaultMntFlags, Data: "mode=1777,size=65536k"},
		{Source: "mqueue", Destination: "/dev/mqueue", Device: "mqueue", Flags: defaultMntFlags},
		sys,
		{Source: "cgroup", Destination: "/sys/fs/cgroup", Device: "cgroup", Flags: defaultMntFlags | unix.MS_RDONLY},
	}
}

func binds(bs []Bind) []*configs.Mount {
	out := make([]*configs.Mount, 0, len(bs))
	for _, b := range bs {
		flags := unix.MS_BIND | unix.MS_REC | unix.MS_NOSUID | unix.MS_NODEV
		m := &configs.Mount{Source: b.Source, Destination: b.Destination, Device: "bind", Flags: flags,
			PropagationFlags: []int{unix.MS_PRIVATE | unix.MS_REC}}
		if b.ReadOnly {
			m.Flags |= unix.MS_RDONLY
		}
		out = append(out, m)
	}
	return out
}

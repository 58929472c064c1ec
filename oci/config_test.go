package oci

import (
	"math"
	"runtime"
	"slices"
	"testing"

	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"
)

func TestConfigDefaultsAreTheSafeOnes(t *testing.T) {
	cfg, err := Config(Spec{Rootfs: "/r", CgroupPath: "/executor/x", CPUs: 0.5, MemoryMB: 128, PidsLimit: 64,
		UserNS: &IDMap{HostUID: 100000, HostGID: 200000, Size: 65536}})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Capabilities == nil || slices.Contains(cfg.Capabilities.Bounding, "CAP_SYS_ADMIN") || slices.Contains(cfg.Capabilities.Bounding, "CAP_NET_RAW") {
		t.Fatalf("capabilities %+v", cfg.Capabilities)
	}
	if !cfg.NoNewPrivileges {
		t.Error("no_new_privs off")
	}
	for _, ns := range []configs.NamespaceType{configs.NEWNS, configs.NEWPID, configs.NEWIPC, configs.NEWUTS, configs.NEWNET, configs.NEWUSER} {
		if !cfg.Namespaces.Contains(ns) {
			t.Errorf("namespace %s missing", ns)
		}
	}
	if len(cfg.UIDMappings) != 1 || cfg.UIDMappings[0].HostID != 100000 || cfg.GIDMappings[0].HostID != 200000 {
		t.Errorf("id maps %v %v", cfg.UIDMappings, cfg.GIDMappings)
	}
	r := cfg.Cgroups.Resources
	if r.Memory != 128_000_000 || r.MemorySwap != r.Memory || r.CpuQuota != 50000 || r.CpuPeriod != 100000 || *r.PidsLimit != 64 {
		t.Errorf("resources %+v", r)
	}
	for _, p := range []string{"/proc/kcore", "/sys/firmware"} {
		if !slices.Contains(cfg.MaskPaths, p) {
			t.Errorf("%s not masked", p)
		}
	}
	if !slices.Contains(cfg.ReadonlyPaths, "/proc/sysrq-trigger") {
		t.Error("/proc/sysrq-trigger writable")
	}
}

func TestConfigRejectsBadInput(t *testing.T) {
	for _, s := range []Spec{
		{Rootfs: "rel", CgroupPath: "/e/x"},
		{Rootfs: "/r", CgroupPath: "e/x"},
		{Rootfs: "/r", CgroupPath: "/e/x", MemoryMB: -1},
		{Rootfs: "/r", CgroupPath: "/e/x", CPUs: -0.5},
		{Rootfs: "/r", CgroupPath: "/e/x", CPUs: math.NaN()},
		{Rootfs: "/r", CgroupPath: "/e/x", CPUs: math.Inf(1)},
		{Rootfs: "/r", CgroupPath: "/e/x", PidsLimit: -1},
		{Rootfs: "/r", CgroupPath: "/e/x", MemoryMB: math.MaxInt64},
		{Rootfs: "/r", CgroupPath: "/e/x", UserNS: &IDMap{}},
	} {
		if _, err := Config(s); err == nil {
			t.Errorf("accepted %+v", s)
		}
	}
}

func TestDefaultSeccompIsNativeOnlyAllowlist(t *testing.T) {
	sc, err := DefaultSeccomp()
	if err != nil {
		t.Fatal(err)
	}
	if len(sc.Architectures) != 1 || sc.DefaultAction == configs.Allow || len(sc.Syscalls) < 100 {
		t.Fatalf("profile: arches %v default %v rules %d", sc.Architectures, sc.DefaultAction, len(sc.Syscalls))
	}
}

func TestEnv(t *testing.T) {
	env := Env([]string{"PATH=/bin", "A=image"}, map[string]string{"A": "user", "B": "b", "bad name": "x"})
	if !slices.Equal(env, []string{"PATH=/bin", "A=user", "B=b"}) {
		t.Errorf("env %v", env)
	}
}

// The full range is what libcontainer is given as is: one extent per id
// kind, from container 0 up to the last host id the kernel can map.
func TestConfigFullIDMap(t *testing.T) {
	m := FullIDMap()
	cfg, err := Config(Spec{Rootfs: "/r", CgroupPath: "/executor/x", UserNS: m})
	if err != nil {
		t.Fatal(err)
	}
	want := []configs.IDMap{{ContainerID: 0, HostID: 65536, Size: 4294901759}}
	if !slices.Equal(cfg.UIDMappings, want) || !slices.Equal(cfg.GIDMappings, want) {
		t.Fatalf("id maps %v %v, want %v", cfg.UIDMappings, cfg.GIDMappings, want)
	}
	last := want[0].HostID + want[0].Size - 1
	if last != MaxID || last == math.MaxUint32 {
		t.Errorf("last host id %d, want %d ((uid_t)-1 is never mapped)", last, int64(MaxID))
	}
	// libcontainer's own translation agrees: nobody inside is a host id,
	// and the image owners npm leaves keep their meaning.
	for container, host := range map[int64]int64{0: 65536, OverflowID: 131070, 1516583083: 1516648619, 4294901758: MaxID} {
		got, err := cfg.HostUID(int(container))
		if err != nil || int64(got) != host {
			t.Errorf("HostUID(%d) = %d, %v; want %d", container, got, err, host)
		}
	}
	if _, err := cfg.HostUID(4294901759); err == nil {
		t.Error("a container id past the range was mapped")
	}
}

func TestIDMapValidate(t *testing.T) {
	tests := []struct {
		m  IDMap
		ok bool
	}{
		{*FullIDMap(), true},
		{IDMap{HostUID: 1000000000, HostGID: 1000000000, Size: 65536}, true},
		{IDMap{HostUID: 100000, HostGID: 200000, Size: 65536}, true},
		{IDMap{HostUID: 1, HostGID: 1, Size: MaxID}, true},
		{IDMap{HostUID: 2, HostGID: 1, Size: MaxID}, false},                   // the uid side reaches (uid_t)-1
		{IDMap{HostUID: 1, HostGID: 1, Size: MaxID + 1}, false},               // container id (uid_t)-1
		{IDMap{HostUID: 65536, HostGID: 65536, Size: 4294901760}, false},      // one past the full range
		{IDMap{HostUID: MaxID, HostGID: MaxID, Size: MinIDs}, false},          // starts near the top
		{IDMap{HostUID: 1000000000, HostGID: 1000000000, Size: 65535}, false}, // cannot hold nobody's 65534 and more
		{IDMap{HostUID: 0, HostGID: 100000, Size: 65536}, false},              // host root
		{IDMap{HostUID: 100000, HostGID: -1, Size: 65536}, false},
		{IDMap{}, false},
	}
	for _, tt := range tests {
		if err := tt.m.Validate(); (err == nil) != tt.ok {
			t.Errorf("%+v: Validate() = %v, want ok=%v", tt.m, err, tt.ok)
		}
	}
}

// Everything under /sys is read-only in the runtime, not only its top mount:
// the bind of the host's /sys in a user namespace carries the host's
// submounts, which MS_RDONLY alone leaves writable.
func TestSysIsReadOnlyThroughout(t *testing.T) {
	for _, tc := range []struct {
		name   string
		userns *IDMap
	}{
		{"user namespace", &IDMap{HostUID: 100000, HostGID: 100000, Size: 65536}},
		{"host ids", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Config(Spec{Rootfs: "/r", CgroupPath: "/executor/x", UserNS: tc.userns})
			if err != nil {
				t.Fatal(err)
			}
			var sys, cg *configs.Mount
			for _, m := range cfg.Mounts {
				switch m.Destination {
				case "/sys":
					sys = m
				case "/sys/fs/cgroup":
					cg = m
				}
			}
			if sys == nil || sys.Flags&unix.MS_RDONLY == 0 {
				t.Fatalf("/sys mount %+v is not read-only", sys)
			}
			if sys.IsBind() {
				// A bind brings the host's submounts: only the recursive
				// attribute reaches them.
				if sys.RecAttr == nil || sys.RecAttr.Attr_set&unix.MOUNT_ATTR_RDONLY == 0 || sys.RecAttr.Attr_clr != 0 {
					t.Errorf("/sys bind %+v: its submounts stay writable", sys)
				}
			} else if sys.Device != "sysfs" || sys.Flags&unix.MS_REC != 0 {
				t.Errorf("/sys mount %+v: a fresh sysfs has no submounts of its own", sys)
			}
			if cg == nil || cg.Flags&unix.MS_RDONLY == 0 {
				t.Errorf("cgroup mount %+v is not read-only", cg)
			}
			// The v1 cgroup mount's tmpfs is writable whatever its flags.
			if !slices.Contains(cfg.ReadonlyPaths, "/sys/fs/cgroup") {
				t.Errorf("/sys/fs/cgroup is not among the read-only paths %v", cfg.ReadonlyPaths)
			}
		})
	}
}

// Runtimes never inherit the daemon's OOM protection.
func TestConfigOOMScoreAdjIsNeutral(t *testing.T) {
	cfg, err := Config(Spec{Rootfs: "/r", CgroupPath: "/executor/x"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.OomScoreAdj == nil || *cfg.OomScoreAdj != 0 {
		t.Fatalf("oom_score_adj %v, want an explicit 0", cfg.OomScoreAdj)
	}
	// A daemon that cannot lower its children's (rootless under
	// user@.service's 100) passes its own; out of range values are clamped.
	for _, tt := range []struct{ in, want int }{{100, 100}, {-500, 0}, {5000, 1000}} {
		cfg, err := Config(Spec{Rootfs: "/r", CgroupPath: "/executor/x", OOMScoreAdj: tt.in})
		if err != nil {
			t.Fatal(err)
		}
		if cfg.OomScoreAdj == nil || *cfg.OomScoreAdj != tt.want {
			t.Errorf("OOMScoreAdj %d: oom_score_adj %v, want %d", tt.in, cfg.OomScoreAdj, tt.want)
		}
	}
}

// Under the default seccomp profile no runtime makes a keyring of its own:
// each one would count against its root's host uid's key quota
// (kernel.keys.maxkeys, 200 by default), which every runtime and every
// executor on the host shares. Without a filter that refuses keyring system
// calls it does: the daemon's session keyring, which it would have instead,
// is open to a process that has it.
func TestConfigSharesTheSessionKeyringOnlyUnderSeccomp(t *testing.T) {
	sc, err := DefaultSeccomp()
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range []Spec{
		{Rootfs: "/r", CgroupPath: "/executor/x", UserNS: FullIDMap()},
		{Rootfs: "/r", CgroupPath: "/executor/x", UserNS: &IDMap{HostUID: 100000, HostGID: 100000, Size: 65536}, Cgroup2: true},
		{Rootfs: "/r", CgroupPath: "/executor/x"},
		{Rootfs: "/r", CgroupPath: "/executor/x", UserNS: FullIDMap(), Rootless: true},
		{Rootfs: "/r", CgroupPath: "/executor/x", UserNS: FullIDMap(), Rootless: true, NoCgroup: true},
	} {
		s.Seccomp = sc
		cfg, err := Config(s)
		if err != nil {
			t.Fatal(err)
		}
		if !cfg.NoNewKeyring {
			t.Errorf("spec %d: the runtime makes a session keyring of its own", i)
		}
	}
	allowKeyctl := *sc
	allowKeyctl.Syscalls = append(slices.Clone(sc.Syscalls), &configs.Syscall{Name: "keyctl", Action: configs.Allow})
	logAll := *sc
	logAll.DefaultAction = configs.Log
	for name, f := range map[string]*configs.Seccomp{"unconfined": nil, "keyctl allowed": &allowKeyctl, "default action log": &logAll} {
		cfg, err := Config(Spec{Rootfs: "/r", CgroupPath: "/executor/x", UserNS: FullIDMap(), Seccomp: f})
		if err != nil {
			t.Fatal(err)
		}
		if cfg.NoNewKeyring {
			t.Errorf("%s: the runtime has the daemon's session keyring", name)
		}
	}
}

// The default profile refuses every keyring system call: no rule admits one.
func TestDefaultSeccompRefusesKeyrings(t *testing.T) {
	sc, err := DefaultSeccomp()
	if err != nil {
		t.Fatal(err)
	}
	if sc.DefaultAction != configs.Errno {
		t.Fatalf("default action %v, want Errno", sc.DefaultAction)
	}
	for _, r := range sc.Syscalls {
		if slices.Contains(keyringSyscalls, r.Name) {
			t.Errorf("the profile has a rule for %s: %+v", r.Name, r)
		}
	}
}

// The whole safety profile every runtime gets, pinned entry by entry: a
// masked path, a read-only path, a capability, a device or a mount flag that
// goes missing (or one that is added) fails here, whatever the spec's other
// settings.
func TestConfigPinsTheSafetyProfile(t *testing.T) {
	sc, err := DefaultSeccomp()
	if err != nil {
		t.Fatal(err)
	}
	wantMasked := []string{
		"/proc/acpi", "/proc/asound", "/proc/interrupts", "/proc/kcore", "/proc/keys",
		"/proc/latency_stats", "/proc/sched_debug", "/proc/scsi", "/proc/timer_list",
		"/proc/timer_stats", "/sys/devices/virtual/powercap", "/sys/firmware",
	}
	wantReadonly := []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger", "/sys/fs/cgroup"}
	wantCaps := []string{
		"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_NET_BIND_SERVICE",
		"CAP_SETFCAP", "CAP_SETGID", "CAP_SETPCAP", "CAP_SETUID", "CAP_SYS_CHROOT",
	}
	// The device nodes in the runtime's /dev, and what the device cgroup
	// admits: libcontainer's default allowlist (mknod of any node, none
	// usable but these; /dev/pts/*, /dev/ptmx and /dev/net/tun by number).
	type dev struct {
		typ          rune
		major, minor int64
		perms, path  string
	}
	wantDevices := []dev{
		{'c', -1, -1, "m", ""}, {'b', -1, -1, "m", ""},
		{'c', 1, 3, "rwm", "/dev/null"}, {'c', 1, 8, "rwm", "/dev/random"}, {'c', 1, 7, "rwm", "/dev/full"},
		{'c', 5, 0, "rwm", "/dev/tty"}, {'c', 1, 5, "rwm", "/dev/zero"}, {'c', 1, 9, "rwm", "/dev/urandom"},
		{'c', 136, -1, "rwm", ""}, {'c', 5, 2, "rwm", ""}, {'c', 10, 200, "rwm", ""},
	}
	const noexec = unix.MS_NOSUID | unix.MS_NOEXEC | unix.MS_NODEV
	wantMounts := map[string]struct {
		device     string
		set, unset uintptr
	}{
		"/proc":          {"proc", noexec, unix.MS_RDONLY},
		"/dev":           {"tmpfs", unix.MS_NOSUID, unix.MS_RDONLY},
		"/dev/pts":       {"devpts", unix.MS_NOSUID | unix.MS_NOEXEC, unix.MS_RDONLY},
		"/dev/shm":       {"tmpfs", noexec, unix.MS_RDONLY},
		"/dev/mqueue":    {"mqueue", noexec, unix.MS_RDONLY},
		"/sys":           {"", noexec | unix.MS_RDONLY, 0},
		"/sys/fs/cgroup": {"cgroup", noexec | unix.MS_RDONLY, 0},
	}
	for _, tc := range []struct {
		name string
		spec Spec
	}{
		{"root, host ids", Spec{Rootfs: "/r", CgroupPath: "/executor/x"}},
		{"user namespace", Spec{Rootfs: "/r", CgroupPath: "/executor/x", UserNS: FullIDMap()}},
		{"user namespace, cgroup v2", Spec{Rootfs: "/r", CgroupPath: "/executor/x", UserNS: FullIDMap(), Cgroup2: true}},
		{"rootless", Spec{Rootfs: "/r", CgroupPath: "/executor/x", UserNS: FullIDMap(), Rootless: true}},
		{"rootless without cgroups", Spec{Rootfs: "/r", CgroupPath: "/executor/x", UserNS: FullIDMap(), Rootless: true, NoCgroup: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.spec
			s.Seccomp = sc
			cfg, err := Config(s)
			if err != nil {
				t.Fatal(err)
			}
			if got := slices.Sorted(slices.Values(cfg.MaskPaths)); !slices.Equal(got, wantMasked) {
				t.Errorf("masked paths %v, want %v", got, wantMasked)
			}
			if got := slices.Sorted(slices.Values(cfg.ReadonlyPaths)); !slices.Equal(got, wantReadonly) {
				t.Errorf("read-only paths %v, want %v", got, wantReadonly)
			}
			c := cfg.Capabilities
			if c == nil {
				t.Fatal("no capability set: the runtime would get all of the daemon's")
			}
			for name, set := range map[string][]string{"bounding": c.Bounding, "effective": c.Effective, "permitted": c.Permitted} {
				if got := slices.Sorted(slices.Values(set)); !slices.Equal(got, wantCaps) {
					t.Errorf("%s capabilities %v, want %v", name, got, wantCaps)
				}
			}
			if len(c.Inheritable) != 0 || len(c.Ambient) != 0 {
				t.Errorf("inheritable %v ambient %v, want none", c.Inheritable, c.Ambient)
			}
			if !cfg.NoNewPrivileges {
				t.Error("no_new_privs is off")
			}
			if cfg.Seccomp != sc {
				t.Errorf("seccomp %p, want the spec's filter %p", cfg.Seccomp, sc)
			}
			wantNS := []configs.NamespaceType{configs.NEWNS, configs.NEWUTS, configs.NEWIPC, configs.NEWPID, configs.NEWNET}
			if s.Cgroup2 {
				wantNS = append(wantNS, configs.NEWCGROUP)
			}
			if s.UserNS != nil {
				wantNS = append(wantNS, configs.NEWUSER)
			}
			var gotNS []configs.NamespaceType
			for _, n := range cfg.Namespaces {
				gotNS = append(gotNS, n.Type)
				if n.Type != configs.NEWNET && n.Path != "" {
					t.Errorf("namespace %s joins %s: a runtime's namespaces are its own", n.Type, n.Path)
				}
			}
			if !slices.Equal(gotNS, wantNS) {
				t.Errorf("namespaces %v, want %v", gotNS, wantNS)
			}
			var gotDevs []dev
			for _, d := range cfg.Devices {
				if !d.Allow {
					t.Errorf("device entry %+v is a deny rule", d)
				}
				gotDevs = append(gotDevs, dev{rune(d.Type), d.Major, d.Minor, string(d.Permissions), d.Path})
			}
			if !slices.Equal(gotDevs, wantDevices) {
				t.Errorf("devices %v, want %v", gotDevs, wantDevices)
			}
			var gotRules []dev
			for _, r := range cfg.Cgroups.Resources.Devices {
				if !r.Allow {
					t.Errorf("device rule %+v is a deny rule", r)
				}
				gotRules = append(gotRules, dev{rune(r.Type), r.Major, r.Minor, string(r.Permissions), ""})
			}
			var wantRules []dev
			for _, d := range wantDevices {
				d.path = ""
				wantRules = append(wantRules, d)
			}
			if !slices.Equal(gotRules, wantRules) {
				t.Errorf("device cgroup rules %v, want %v", gotRules, wantRules)
			}
			seen := map[string]bool{}
			for _, m := range cfg.Mounts {
				want, ok := wantMounts[m.Destination]
				if !ok {
					t.Errorf("unexpected mount %+v", m)
					continue
				}
				seen[m.Destination] = true
				if want.device != "" && m.Device != want.device {
					t.Errorf("%s: device %q, want %q", m.Destination, m.Device, want.device)
				}
				if uintptr(m.Flags)&want.set != want.set || uintptr(m.Flags)&want.unset != 0 {
					t.Errorf("%s: flags %#x, want %#x set and %#x clear", m.Destination, m.Flags, want.set, want.unset)
				}
			}
			if len(seen) != len(wantMounts) {
				t.Errorf("mounts %v, want all of %v", seen, wantMounts)
			}
		})
	}
}

// The default filter, pinned: refuse with EPERM whatever no rule admits,
// only the native ABI, and no rule that admits the system calls that reach
// the host's kernel state (modules, mounts, keyrings, clocks, reboot, bpf)
// without an argument filter or a capability runtimes do not have.
func TestDefaultSeccompPinned(t *testing.T) {
	sc, err := DefaultSeccomp()
	if err != nil {
		t.Fatal(err)
	}
	if sc.DefaultAction != configs.Errno || sc.DefaultErrnoRet == nil || *sc.DefaultErrnoRet != uint(unix.EPERM) {
		t.Errorf("default action %v errno %v, want Errno EPERM", sc.DefaultAction, sc.DefaultErrnoRet)
	}
	if want := nativeArch[runtime.GOARCH]; !slices.Equal(sc.Architectures, []string{want}) {
		t.Errorf("architectures %v, want only %s", sc.Architectures, want)
	}
	allowed := map[string]bool{}
	for _, r := range sc.Syscalls {
		if r.Action == configs.Allow && len(r.Args) == 0 {
			allowed[r.Name] = true
		}
	}
	for _, name := range []string{"read", "write", "openat", "execve", "mmap", "exit_group", "connect", "accept4", "futex", "epoll_pwait"} {
		if !allowed[name] {
			t.Errorf("%s is not allowed: runtimes need it", name)
		}
	}
	for _, name := range []string{
		"mount", "umount2", "pivot_root", "unshare", "setns", "reboot", "kexec_load", "init_module", "finit_module",
		"delete_module", "bpf", "add_key", "keyctl", "request_key", "swapon", "swapoff", "acct", "settimeofday",
		"clock_settime", "open_by_handle_at", "iopl", "ioperm", "quotactl", "lookup_dcookie", "perf_event_open",
		"fsopen", "fsmount", "move_mount", "open_tree", "userfaultfd", "syslog", "vhangup", "nfsservctl",
	} {
		if allowed[name] {
			t.Errorf("%s is allowed without a condition", name)
		}
	}
}

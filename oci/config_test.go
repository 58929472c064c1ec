package oci

import (
	"math"
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

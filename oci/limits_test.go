package oci

import (
	"math"
	"testing"

	"github.com/opencontainers/runc/libcontainer/configs"
	"golang.org/x/sys/unix"
)

// TestConfigLimits: each limit a Spec asks for reaches the cgroup or the
// rlimits as asked, and a zero asks for none (Spec's "0 means no limit"): a
// CPU quota set from CPUs 0 would give the runtime 1% of a core.
func TestConfigLimits(t *testing.T) {
	tests := []struct {
		name  string
		spec  Spec
		check func(t *testing.T, cfg *configs.Config)
	}{
		{
			name: "no limits",
			spec: Spec{},
			check: func(t *testing.T, cfg *configs.Config) {
				r := cfg.Cgroups.Resources
				if r.CpuQuota != 0 || r.CpuPeriod != 0 {
					t.Errorf("CPU quota %d/%d, want none", r.CpuQuota, r.CpuPeriod)
				}
				if r.Memory != 0 || r.MemorySwap != 0 {
					t.Errorf("memory %d (swap %d), want none", r.Memory, r.MemorySwap)
				}
				if r.PidsLimit != nil {
					t.Errorf("pids limit %d, want none", *r.PidsLimit)
				}
				if len(cfg.Rlimits) != 0 {
					t.Errorf("rlimits %+v, want the inherited ones", cfg.Rlimits)
				}
			},
		},
		{
			name: "smallest CPU share is the kernel's 1 ms quota",
			spec: Spec{CPUs: 0.001},
			check: func(t *testing.T, cfg *configs.Config) {
				if r := cfg.Cgroups.Resources; r.CpuQuota != 1000 || r.CpuPeriod != cpuPeriod {
					t.Errorf("CPU quota %d/%d, want 1000/%d", r.CpuQuota, r.CpuPeriod, cpuPeriod)
				}
			},
		},
		{
			name: "two CPUs",
			spec: Spec{CPUs: 2},
			check: func(t *testing.T, cfg *configs.Config) {
				if r := cfg.Cgroups.Resources; r.CpuQuota != 2*cpuPeriod || r.CpuPeriod != cpuPeriod {
					t.Errorf("CPU quota %d/%d, want %d/%d", r.CpuQuota, r.CpuPeriod, 2*cpuPeriod, cpuPeriod)
				}
			},
		},
		{
			name: "largest memory that fits in bytes",
			spec: Spec{MemoryMB: math.MaxInt64 / 1_000_000},
			check: func(t *testing.T, cfg *configs.Config) {
				want := int64(math.MaxInt64/1_000_000) * 1_000_000
				if r := cfg.Cgroups.Resources; r.Memory != want || r.MemorySwap != want {
					t.Errorf("memory %d (swap %d), want %d", r.Memory, r.MemorySwap, want)
				}
			},
		},
		{
			name: "one process",
			spec: Spec{PidsLimit: 1},
			check: func(t *testing.T, cfg *configs.Config) {
				if r := cfg.Cgroups.Resources; r.PidsLimit == nil || *r.PidsLimit != 1 {
					t.Errorf("pids limit %v, want 1", r.PidsLimit)
				}
			},
		},
		{
			name: "open files",
			spec: Spec{NoFile: 1024},
			check: func(t *testing.T, cfg *configs.Config) {
				want := []configs.Rlimit{{Type: unix.RLIMIT_NOFILE, Hard: 1024, Soft: 1024}}
				if len(cfg.Rlimits) != 1 || cfg.Rlimits[0] != want[0] {
					t.Errorf("rlimits %+v, want %+v", cfg.Rlimits, want)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.spec
			s.Rootfs, s.CgroupPath = "/r", "/executor/x"
			cfg, err := Config(s)
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, cfg)
		})
	}
}

// TestConfigRefusesMemoryPastInt64: one megabyte more than the largest that
// fits is refused, not wrapped into a negative (or tiny) byte count.
func TestConfigRefusesMemoryPastInt64(t *testing.T) {
	_, err := Config(Spec{Rootfs: "/r", CgroupPath: "/executor/x", MemoryMB: math.MaxInt64/1_000_000 + 1})
	if err == nil {
		t.Fatal("accepted a memory limit past the largest int64 byte count")
	}
}

// TestSysMountFollowsTheUserNamespace: a fresh sysfs needs an owner of the
// network namespace, which a runtime in a user namespace is not (its
// container would fail to start), so there /sys is the host's, bound; with
// host ids it is a sysfs of the runtime's own (a bind would show the host's
// submounts).
func TestSysMountFollowsTheUserNamespace(t *testing.T) {
	for _, tc := range []struct {
		name   string
		userns *IDMap
		device string
	}{
		{"user namespace", FullIDMap(), "bind"},
		{"host ids", nil, "sysfs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Config(Spec{Rootfs: "/r", CgroupPath: "/executor/x", UserNS: tc.userns})
			if err != nil {
				t.Fatal(err)
			}
			var sys *configs.Mount
			for _, m := range cfg.Mounts {
				if m.Destination == "/sys" {
					sys = m
				}
			}
			if sys == nil || sys.Device != tc.device {
				t.Fatalf("/sys mount %+v, want device %q", sys, tc.device)
			}
		})
	}
}

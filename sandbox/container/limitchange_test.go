package container

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/devices/config"
	"github.com/opencontainers/runc/libcontainer/configs"

	"executor/oci"
)

func TestChangedLimits(t *testing.T) {
	pids := func(n int64) *int64 { return &n }
	burst := uint64(5000)
	rules := []*config.Rule{{Type: config.CharDevice, Major: 1, Minor: 3, Permissions: "rwm", Allow: true}}
	parked := cgroups.Resources{Devices: rules, Memory: 256e6, MemorySwap: 256e6, CpuQuota: 100000, CpuPeriod: 100000, PidsLimit: pids(64)}
	with := func(f func(r *cgroups.Resources)) *cgroups.Resources {
		r := parked
		r.PidsLimit = pids(*parked.PidsLimit)
		f(&r)
		return &r
	}
	for _, tc := range []struct {
		name string
		now  *cgroups.Resources
		want *cgroups.Resources // nil: the whole of now is to be set
	}{
		{"the same limits", with(func(*cgroups.Resources) {}), &cgroups.Resources{SkipDevices: true}},
		{"memory", with(func(r *cgroups.Resources) { r.Memory, r.MemorySwap = 64e6, 64e6 }),
			&cgroups.Resources{SkipDevices: true, Memory: 64e6, MemorySwap: 64e6}},
		{"swap alone goes with the memory", with(func(r *cgroups.Resources) { r.MemorySwap = 512e6 }),
			&cgroups.Resources{SkipDevices: true, Memory: 256e6, MemorySwap: 512e6}},
		{"quota goes with the period", with(func(r *cgroups.Resources) { r.CpuQuota = 50000 }),
			&cgroups.Resources{SkipDevices: true, CpuQuota: 50000, CpuPeriod: 100000}},
		{"burst", with(func(r *cgroups.Resources) { r.CpuBurst = &burst }),
			&cgroups.Resources{SkipDevices: true, CpuQuota: 100000, CpuPeriod: 100000, CpuBurst: &burst}},
		{"pids", with(func(r *cgroups.Resources) { r.PidsLimit = pids(32) }),
			&cgroups.Resources{SkipDevices: true, PidsLimit: pids(32)}},
		{"devices", with(func(r *cgroups.Resources) { r.Devices = rules[:0] }),
			&cgroups.Resources{Devices: rules[:0]}},
		{"memory and cpu", with(func(r *cgroups.Resources) { r.Memory, r.MemorySwap, r.CpuQuota = 64e6, 64e6, 200000 }),
			&cgroups.Resources{SkipDevices: true, Memory: 64e6, MemorySwap: 64e6, CpuQuota: 200000, CpuPeriod: 100000}},
		// A limit lifted is not a subset Set can write.
		{"memory lifted", with(func(r *cgroups.Resources) { r.Memory, r.MemorySwap = 0, 0 }), nil},
		{"swap lifted", with(func(r *cgroups.Resources) { r.MemorySwap = 0 }), nil},
		{"cpu lifted", with(func(r *cgroups.Resources) { r.CpuQuota, r.CpuPeriod = 0, 0 }), nil},
		{"pids lifted", with(func(r *cgroups.Resources) { r.PidsLimit = nil }), nil},
		// Limits it does not know go whole.
		{"shares", with(func(r *cgroups.Resources) { r.CpuShares = 512 }), nil},
		{"cpuset", with(func(r *cgroups.Resources) { r.CpusetCpus = "0" }), nil},
		{"unified", with(func(r *cgroups.Resources) { r.Unified = map[string]string{"memory.high": "1"} }), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := parked
			got, ok := changedLimits(&in, tc.now)
			if tc.want == nil {
				if ok {
					t.Fatalf("got %+v, want the whole set", got)
				}
				return
			}
			if !ok || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v (%v), want %+v", got, ok, tc.want)
			}
			if !reflect.DeepEqual(in, parked) {
				t.Errorf("changedLimits changed its input: %+v", in)
			}
		})
	}
}

// Unparking writes the limits that changed and leaves the others as the
// container was parked with; each one ends as the request asked, through
// the spawner as in process.
func TestUnparkChangedLimits(t *testing.T) {
	forEachStarter(t, testUnparkChangedLimits)
}

func testUnparkChangedLimits(t *testing.T, cfg Config) {
	spec := testSpec(busyboxRoot(t))
	spec.CPUs, spec.MemoryMB, spec.PidsLimit = 1, 256, 64
	spec.Binds = []oci.Bind{{Source: buildInit(t), Destination: oci.InitPath, ReadOnly: true}}
	r := newRunner(t, cfg)
	page := int64(os.Getpagesize())
	for _, tc := range []struct {
		name   string
		change func(s *oci.Spec)
		cpu    string // the quota file's content
		mem    int64
		pids   string
	}{
		{"memory", func(s *oci.Spec) { s.MemoryMB = 96 }, "100000", 96_000_000 &^ (page - 1), "64"},
		{"cpu and pids", func(s *oci.Spec) { s.CPUs, s.PidsLimit = 0.5, 32 }, "50000", 256_000_000 &^ (page - 1), "32"},
		{"none", func(*oci.Spec) {}, "100000", 256_000_000 &^ (page - 1), "64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := r.StartParked(NewID(), spec, oci.InitPath, Process{Env: []string{oci.DefaultPATH}, Cwd: "/"})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { destroy(t, p) })
			devs := devicesList(t, p)
			now := spec
			tc.change(&now)
			cmd := Process{Args: oci.WithInit([]string{"sh", "-c", "echo unparked; exec sleep 60"}), Env: []string{oci.DefaultPATH}, Cwd: "/", ReportsExit: true}
			if err := r.Unpark(p, now, cmd); err != nil {
				t.Fatal(err)
			}
			waitOutput(t, p, "unparked")
			if got := memoryLimit(t, p); got != tc.mem {
				t.Errorf("memory limit %d, want %d", got, tc.mem)
			}
			if got := cpuQuota(t, p); got != tc.cpu {
				t.Errorf("cpu quota %q, want %q", got, tc.cpu)
			}
			if got := cgroupValue(t, p, "pids", "pids.max"); got != tc.pids {
				t.Errorf("pids.max %q, want %q", got, tc.pids)
			}
			if got := devicesList(t, p); got != devs {
				t.Errorf("devices list after Unpark:\n%s\nwant the parked one:\n%s", got, devs)
			}
			if !reflect.DeepEqual(p.cfg.Cgroups.Resources, mustConfig(t, r, p.ID(), now).Cgroups.Resources) {
				t.Errorf("the container's config keeps limits %+v, want the request's", p.cfg.Cgroups.Resources)
			}
		})
	}
}

// cgroupValue is file of c's cgroup of controller (the one cgroup on v2).
func cgroupValue(t *testing.T, c *Container, controller, file string) string {
	t.Helper()
	dir := c.cgPaths[controller]
	if dir == "" {
		dir = c.cgPaths[""]
	}
	b, err := os.ReadFile(filepath.Join(dir, file))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// cpuQuota is c's CFS quota in microseconds ("max" when none).
func cpuQuota(t *testing.T, c *Container) string {
	t.Helper()
	if c.cgPaths["cpu"] != "" {
		return cgroupValue(t, c, "cpu", "cpu.cfs_quota_us")
	}
	quota, _, _ := strings.Cut(cgroupValue(t, c, "", "cpu.max"), " ")
	return quota
}

// devicesList is c's cgroup v1 device list; "" on v2, where the devices
// are a BPF program's.
func devicesList(t *testing.T, c *Container) string {
	t.Helper()
	if c.cgPaths["devices"] == "" {
		return ""
	}
	return cgroupValue(t, c, "devices", "devices.list")
}

func mustConfig(t *testing.T, r *Runner, id string, spec oci.Spec) *configs.Config {
	t.Helper()
	cfg, err := r.config(id, spec)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

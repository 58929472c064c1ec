package main

import (
	"os"
	"path/filepath"
	"testing"
)

// writeTree creates files (path -> content) under root.
func writeTree(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		path := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestReadCgroupLimits(t *testing.T) {
	tests := []struct {
		name       string
		files      map[string]string
		procCgroup string
		want       cgroupLimits
	}{
		{
			name: "v2 private namespace",
			files: map[string]string{
				"cgroup.controllers": "cpu memory pids",
				"memory.max":         "268435456\n",
				"cpu.max":            "150000 100000\n",
				"pids.max":           "100\n",
			},
			procCgroup: "0::/\n",
			want:       cgroupLimits{CgroupVersion: 2, MemoryBytes: 268435456, CPUQuotaUs: 150000, CPUPeriodUs: 100000, PidsMax: 100},
		},
		{
			name: "v2 unlimited",
			files: map[string]string{
				"cgroup.controllers": "cpu memory pids",
				"memory.max":         "max\n",
				"cpu.max":            "max 100000\n",
				"pids.max":           "max\n",
			},
			procCgroup: "0::/\n",
			want:       cgroupLimits{CgroupVersion: 2, MemoryBytes: -1, CPUQuotaUs: -1, CPUPeriodUs: 100000, PidsMax: -1},
		},
		{
			name: "v2 host namespace uses the process path",
			files: map[string]string{
				"cgroup.controllers":          "cpu memory pids",
				"executor/abc/memory.max":     "1000000\n",
				"executor/abc/cpu.max":        "50000 100000\n",
				"executor/abc/pids.max":       "64\n",
				"executor/abc/cgroup.procs":   "1\n",
				"executor/cgroup.controllers": "cpu memory pids",
			},
			procCgroup: "0::/executor/abc\n",
			want:       cgroupLimits{CgroupVersion: 2, MemoryBytes: 1000000, CPUQuotaUs: 50000, CPUPeriodUs: 100000, PidsMax: 64},
		},
		{
			name: "v1",
			files: map[string]string{
				"memory/memory.limit_in_bytes":  "536870912\n",
				"cpu,cpuacct/cpu.cfs_quota_us":  "200000\n",
				"cpu,cpuacct/cpu.cfs_period_us": "100000\n",
				"pids/pids.max":                 "max\n",
			},
			procCgroup: "12:pids:/\n4:cpu,cpuacct:/\n3:memory:/\n",
			want:       cgroupLimits{CgroupVersion: 1, MemoryBytes: 536870912, CPUQuotaUs: 200000, CPUPeriodUs: 100000, PidsMax: -1},
		},
		{
			name: "v1 unlimited memory and no quota",
			files: map[string]string{
				"memory/memory.limit_in_bytes": "9223372036854771712\n",
				"cpu/cpu.cfs_quota_us":         "-1\n",
				"cpu/cpu.cfs_period_us":        "100000\n",
				"pids/docker/x/pids.max":       "10\n",
			},
			procCgroup: "12:pids:/docker/x\n4:cpu,cpuacct:/\n3:memory:/\n",
			want:       cgroupLimits{CgroupVersion: 1, MemoryBytes: -1, CPUQuotaUs: -1, CPUPeriodUs: 100000, PidsMax: 10},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			writeTree(t, root, tt.files)
			proc := filepath.Join(t.TempDir(), "cgroup")
			if err := os.WriteFile(proc, []byte(tt.procCgroup), 0o644); err != nil {
				t.Fatal(err)
			}
			got := readCgroupLimits(root, proc)
			if len(got.ReadErrors) != 0 {
				t.Errorf("read errors: %v", got.ReadErrors)
			}
			if got.ProcSelfCgroup != tt.procCgroup {
				t.Errorf("procSelfCgroup = %q, want %q", got.ProcSelfCgroup, tt.procCgroup)
			}
			got.ReadErrors, got.ProcSelfCgroup = nil, ""
			if got.CgroupVersion != tt.want.CgroupVersion || got.MemoryBytes != tt.want.MemoryBytes ||
				got.CPUQuotaUs != tt.want.CPUQuotaUs || got.CPUPeriodUs != tt.want.CPUPeriodUs || got.PidsMax != tt.want.PidsMax {
				t.Fatalf("limits = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestReadCgroupLimitsReportsMissingFiles(t *testing.T) {
	got := readCgroupLimits(t.TempDir(), filepath.Join(t.TempDir(), "missing"))
	if got.MemoryBytes != -1 || len(got.ReadErrors) == 0 {
		t.Fatalf("limits = %+v, want -1 and read errors", got)
	}
}

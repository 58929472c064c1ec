package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// cgroupLimits is what /cgroup reports: the resource limits the executor
// applied, as seen from inside the container.
type cgroupLimits struct {
	CgroupVersion int `json:"cgroupVersion"`
	// MemoryBytes is the memory limit, -1 when unlimited or unreadable.
	MemoryBytes int64 `json:"memoryBytes"`
	// CPUQuotaUs is -1 when there is no quota ("max").
	CPUQuotaUs  int64 `json:"cpuQuotaUs"`
	CPUPeriodUs int64 `json:"cpuPeriodUs"`
	// PidsMax is -1 for "max".
	PidsMax        int64  `json:"pidsMax"`
	ProcSelfCgroup string `json:"procSelfCgroup"`
	// ReadErrors lists files that could not be read, so a test failing on a
	// -1 can tell "unlimited" from "not found".
	ReadErrors []string `json:"readErrors"`
}

// v1Unlimited is the threshold above which cgroup v1 memory limits mean
// "unlimited" (the kernel reports PAGE_COUNTER_MAX rounded to pages).
const v1Unlimited = int64(1) << 62

// readCgroupLimits reads limits from the cgroup filesystem mounted at root.
// With a private cgroup namespace the container's own files are at the root;
// without one they sit under the path from /proc/self/cgroup, so both
// locations are tried.
func readCgroupLimits(root, procSelfCgroup string) cgroupLimits {
	out := cgroupLimits{MemoryBytes: -1, CPUQuotaUs: -1, CPUPeriodUs: -1, PidsMax: -1, ReadErrors: []string{}}
	raw, err := os.ReadFile(procSelfCgroup)
	if err != nil {
		out.ReadErrors = append(out.ReadErrors, err.Error())
	}
	out.ProcSelfCgroup = string(raw)
	paths := parseProcCgroup(string(raw))

	read := func(dirs []string, name string) (string, bool) {
		var errs []error
		for _, dir := range dirs {
			b, err := os.ReadFile(filepath.Join(dir, name))
			if err == nil {
				return strings.TrimSpace(string(b)), true
			}
			errs = append(errs, err)
		}
		out.ReadErrors = append(out.ReadErrors, errors.Join(errs...).Error())
		return "", false
	}

	if _, err := os.Stat(filepath.Join(root, "cgroup.controllers")); err == nil {
		out.CgroupVersion = 2
		dirs := candidateDirs(root, paths[""])
		if v, ok := read(dirs, "memory.max"); ok {
			out.MemoryBytes = parseLimit(v, &out)
		}
		if v, ok := read(dirs, "cpu.max"); ok {
			// "<quota|max> <period>"
			fields := strings.Fields(v)
			if len(fields) == 2 {
				out.CPUQuotaUs = parseLimit(fields[0], &out)
				out.CPUPeriodUs = parseLimit(fields[1], &out)
			} else {
				out.ReadErrors = append(out.ReadErrors, fmt.Sprintf("cpu.max: unexpected %q", v))
			}
		}
		if v, ok := read(dirs, "pids.max"); ok {
			out.PidsMax = parseLimit(v, &out)
		}
		return out
	}

	out.CgroupVersion = 1
	if v, ok := read(candidateDirs(filepath.Join(root, "memory"), paths["memory"]), "memory.limit_in_bytes"); ok {
		out.MemoryBytes = parseLimit(v, &out)
		if out.MemoryBytes >= v1Unlimited {
			out.MemoryBytes = -1
		}
	}
	// The cpu controller is usually co-mounted with cpuacct; distributions
	// provide either "cpu" (a symlink) or only "cpu,cpuacct".
	cpuDirs := append(candidateDirs(filepath.Join(root, "cpu"), paths["cpu"]),
		candidateDirs(filepath.Join(root, "cpu,cpuacct"), paths["cpu"])...)
	if v, ok := read(cpuDirs, "cpu.cfs_quota_us"); ok {
		out.CPUQuotaUs = parseLimit(v, &out)
	}
	if v, ok := read(cpuDirs, "cpu.cfs_period_us"); ok {
		out.CPUPeriodUs = parseLimit(v, &out)
	}
	if v, ok := read(candidateDirs(filepath.Join(root, "pids"), paths["pids"]), "pids.max"); ok {
		out.PidsMax = parseLimit(v, &out)
	}
	return out
}

// candidateDirs returns dir/<cgroup path> (no cgroup namespace) then dir
// itself (private cgroup namespace).
func candidateDirs(dir, cgroupPath string) []string {
	if cgroupPath == "" || cgroupPath == "/" {
		return []string{dir}
	}
	return []string{filepath.Join(dir, cgroupPath), dir}
}

// parseProcCgroup maps controller names to cgroup paths from
// /proc/self/cgroup. The v2 unified entry ("0::/path") is stored under "".
func parseProcCgroup(raw string) map[string]string {
	paths := map[string]string{}
	for line := range strings.SplitSeq(strings.TrimSpace(raw), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[1] == "" {
			paths[""] = parts[2]
			continue
		}
		for c := range strings.SplitSeq(parts[1], ",") {
			paths[c] = parts[2]
		}
	}
	return paths
}

// parseLimit converts a cgroup value; "max" (and v1's -1) mean unlimited.
func parseLimit(v string, out *cgroupLimits) int64 {
	if v == "max" {
		return -1
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		out.ReadErrors = append(out.ReadErrors, fmt.Sprintf("parse %q: %v", v, err))
		return -1
	}
	return n
}

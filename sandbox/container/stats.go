package container

import (
	"bytes"
	"fmt"
	"path/filepath"
	"strconv"
)

// Counters are a container's cgroup counters at one reading: what the usage
// sampler turns into the figures of GET /v1/health and the runtime objects.
type Counters struct {
	// CPU is the CPU time used so far, in nanoseconds (as CPUUsage).
	CPU uint64
	// Memory is the memory the cgroup is charged, in bytes, page cache
	// included: the figure its limit (and the OOM killer) goes by.
	Memory uint64
	// MemoryLimit is the cgroup's memory limit in bytes, 0 when it has
	// none.
	MemoryLimit uint64
	// PIDs is the number of tasks (processes and threads) in the cgroup,
	// the figure its pids limit goes by.
	PIDs uint64
	// HasMemory and HasPIDs say whether the cgroup has those counters (a
	// rootless runtime's delegated cgroup may have a CPU counter alone).
	HasMemory, HasPIDs bool
}

// v1NoLimit is the least memory.limit_in_bytes cgroup v1 writes for no
// limit: PAGE_COUNTER_MAX pages, LONG_MAX rounded down to a page, whatever
// the page size. Nothing a runtime can be given comes near it.
const v1NoLimit = 1 << 62

// Counters reads the container's CPU, memory and pids counters: four small
// files (memory.usage_in_bytes, memory.limit_in_bytes and pids.current
// beside the CPU counter on cgroup v1; memory.current, memory.max and
// pids.current on v2), not libcontainer's Stats, which reads every file of
// every controller. An error means no CPU counter could be read (see
// CPUUsage); missing memory or pids counters are only marked absent.
func (c *Container) Counters() (Counters, error) {
	cpu, err := c.CPUUsage()
	if err != nil {
		return Counters{}, err
	}
	out := Counters{CPU: cpu}
	var buf [cpuCounterMax]byte
	memDir, v2 := c.cgPaths["memory"], false
	if memDir == "" {
		memDir, v2 = c.cgPaths[""], true
	}
	if memDir != "" {
		current, limit := "memory.usage_in_bytes", "memory.limit_in_bytes"
		if v2 {
			current, limit = "memory.current", "memory.max"
		}
		used, err := c.readCounter(memDir, current, buf[:])
		var max uint64
		if err == nil {
			max, err = c.readLimit(memDir, limit, buf[:])
		}
		if err == nil {
			if max >= v1NoLimit {
				max = 0
			}
			out.Memory, out.MemoryLimit, out.HasMemory = used, max, true
		}
	}
	pidsDir := c.cgPaths["pids"]
	if pidsDir == "" {
		pidsDir = c.cgPaths[""]
	}
	if pidsDir != "" {
		if n, err := c.readCounter(pidsDir, "pids.current", buf[:]); err == nil {
			out.PIDs, out.HasPIDs = n, true
		}
	}
	return out, nil
}

// readCounter reads a cgroup file holding one number.
func (c *Container) readCounter(dir, name string, buf []byte) (uint64, error) {
	data, err := c.counters.read(dir, name, buf)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(string(bytes.TrimSpace(data)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("container: %s: %w", filepath.Join(dir, name), err)
	}
	return n, nil
}

// readLimit reads a cgroup limit file: a number, or "max" (v2's no limit),
// read as 0.
func (c *Container) readLimit(dir, name string, buf []byte) (uint64, error) {
	data, err := c.counters.read(dir, name, buf)
	if err != nil {
		return 0, err
	}
	data = bytes.TrimSpace(data)
	if string(data) == "max" {
		return 0, nil
	}
	n, err := strconv.ParseUint(string(data), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("container: %s: %w", filepath.Join(dir, name), err)
	}
	return n, nil
}

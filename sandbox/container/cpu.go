package container

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// ErrNoCPUCounter is returned by CPUUsage for a container without a cgroup
// that counts CPU time (a rootless runtime without a delegated cgroup).
var ErrNoCPUCounter = errors.New("container: no cgroup CPU counter")

// cpuCounterMax bounds a read of a cgroup counter file: cpuacct.usage is one
// number and cpu.stat a handful of lines, so anything longer is not the
// kernel's file.
const cpuCounterMax = 4 << 10

// CPUUsage is the CPU time the container's cgroup has used, in nanoseconds.
// It reads only that counter (cpuacct.usage on cgroup v1, usage_usec of
// cpu.stat on v2): libcontainer's Stats reads every controller's files,
// which at a thousand runtimes made the health endpoint take over a second.
func (c *Container) CPUUsage() (uint64, error) {
	var buf [cpuCounterMax]byte
	// A v1 cpuacct hierarchy wins: on hybrid hosts "" is the unified
	// hierarchy, which has no controllers there.
	if p := c.cgPaths["cpuacct"]; p != "" {
		const file = "cpuacct.usage"
		data, err := c.counters.read(p, file, buf[:])
		if err != nil {
			return 0, err
		}
		ns, err := strconv.ParseUint(string(bytes.TrimSpace(data)), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("container: %s: %w", filepath.Join(p, file), err)
		}
		return ns, nil
	}
	if p := c.cgPaths[""]; p != "" {
		const file = "cpu.stat"
		data, err := c.counters.read(p, file, buf[:])
		if err != nil {
			return 0, err
		}
		// Not bytes.SplitSeq: its iterator would move buf to the heap,
		// 4 KiB for every reading.
		for len(data) > 0 {
			line := data
			if i := bytes.IndexByte(data, '\n'); i >= 0 {
				line, data = data[:i], data[i+1:]
			} else {
				data = nil
			}
			if v, ok := bytes.CutPrefix(line, []byte("usage_usec ")); ok {
				us, err := strconv.ParseUint(string(bytes.TrimSpace(v)), 10, 64)
				if err != nil {
					return 0, fmt.Errorf("container: %s: %w", filepath.Join(p, file), err)
				}
				return us * 1000, nil
			}
		}
		return 0, fmt.Errorf("container: %s has no usage_usec", filepath.Join(p, file))
	}
	return 0, ErrNoCPUCounter
}

// openCounterFile opens a small cgroup file to read. A runtime may own its
// cgroup directory in some modes, so the file is treated as untrusted: a
// link is not followed (O_NOFOLLOW), a FIFO does not block (O_NONBLOCK), and
// only a regular file is taken.
func openCounterFile(path string) (int, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("container: open %s: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("container: stat %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return -1, fmt.Errorf("container: %s is not a regular file", path)
	}
	return fd, nil
}

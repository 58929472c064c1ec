package container

import (
	"errors"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// oomKills is how many processes of the container the kernel killed for
// want of memory, from the cgroup's own counters (memory.events on v2,
// memory.oom_control on v1): OOM notifications are not reliable on v2.
// Every exchange with the runtime takes this count, so the file is one of
// the counter files kept open (counterFiles): opening it anew was four more
// system calls per execution, a tenth of the daemon's CPU time on the warm
// path. A container without the file, or destroyed, counts 0, as readings
// of a removed cgroup do.
func (c *Container) oomKills() int {
	// A v1 memory hierarchy wins: on hybrid hosts "" is the unified
	// hierarchy, which has no memory controller there.
	dir, name := c.cgPaths["memory"], "memory.oom_control"
	if dir == "" {
		dir, name = c.cgPaths[""], "memory.events"
	}
	if dir == "" {
		return 0
	}
	var buf [512]byte
	data, err := c.counters.read(dir, name, buf[:])
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "oom_kill" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}

// diedOfOOM is the verdict on the main process's death: the kernel's OOM
// killer only ever sends SIGKILL, and it counts a kill before it sends it, so
// an OOM death is a death by SIGKILL with the counter above the last verdict.
// A kill by SIGKILL shows as exit code 137 whether the main process took it
// itself or passed on its child's (executor-init, a shell), which is what
// runtimes' start scripts usually are. An ordinary exit is never an OOM
// death, however many other processes of the cgroup the kernel killed.
//
// An adopted container's main process ends with its status unknown
// (ErrExitUnknown): it is judged as a death by SIGKILL might have been, by
// the counter alone. A kill counted since the last verdict makes the OOM
// killer by far the likeliest cause; the price is that an ordinary exit
// just after a child was killed reads as an OOM death, a mislabel of a death
// that happened anyway.
func (c *Container) diedOfOOM(e ExitStatus) bool {
	killed := e.Err == nil && e.Code == 128+int(unix.SIGKILL)
	if !killed && !errors.Is(e.Err, ErrExitUnknown) {
		return false
	}
	n := c.oomKills()
	c.oomMu.Lock()
	defer c.oomMu.Unlock()
	if n <= c.oomJudged {
		return false
	}
	c.oomJudged = n
	return true
}

// OOMKillsPending reports whether the kernel killed a process of the
// container for want of memory since the last verdict: only then can the
// main process be dying of it. The kernel counts a kill before it signals,
// so without one there is no OOM death on its way to wait for.
func (c *Container) OOMKillsPending() bool {
	n := c.oomKills()
	c.oomMu.Lock()
	defer c.oomMu.Unlock()
	return n > c.oomJudged
}

// OOMMark is the OOM kill count of a container before an exchange with its
// runtime. The zero OOMMark (of no container) marks nothing.
type OOMMark struct {
	c     *Container
	kills int
}

// MarkOOM takes the container's OOM kill count before an exchange. It may be
// called on a nil *Container.
func (c *Container) MarkOOM() OOMMark {
	if c == nil {
		return OOMMark{}
	}
	return OOMMark{c: c, kills: c.oomKills()}
}

// Survived records that the main process outlived every kill counted before
// the mark: an exchange that began after them succeeded. Kills during the
// exchange stay open, as the main process may be their victim yet.
func (m OOMMark) Survived() {
	if m.c == nil {
		return
	}
	m.c.oomMu.Lock()
	m.c.oomJudged = max(m.c.oomJudged, m.kills)
	m.c.oomMu.Unlock()
}

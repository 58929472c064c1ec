package e2e

import (
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"executor/netns"
)

// census is everything of one executor that a runtime's life could leave
// behind, each kind as a sorted list of names so that a difference says what
// leaked, not only how many.
type census map[string][]string

// censusKinds are the kinds takeCensus fills, in the order they are printed.
var censusKinds = []string{"processes", "threads", "cgroups", "mounts", "netns", "veths", "nftables", "leases", "files", "fds"}

// takeCensus reads, from the host's side, what executor x holds now:
//   - processes: the daemon's descendants and every process in a cgroup below
//     its cgroup parent (a runtime's processes are not the daemon's children
//     once their init re-parented them), named pid:comm;
//   - threads: the daemon's threads that something holds (heldThreads),
//     by the syscall each waits in (their ids are reused and mean nothing);
//   - cgroups below the cgroup parent on every hierarchy (v1, the unified
//     one, or pure v2);
//   - mounts whose mount point or source is under the data dir;
//   - netns: the network namespace files in every network's state dir;
//   - veths: the ports of every bridge of the network (overflow bridges too);
//   - nftables: the rules and set elements of the network's own tables, read
//     with the nftables library the product uses (the nft tool is not
//     installed on these hosts);
//   - leases: the address lease files in every network's state dir;
//   - files: every path under the data dir;
//   - fds: the daemon's open descriptors, by what they point at.
func takeCensus(t testing.TB, x *executor) census {
	t.Helper()
	pid := x.cmd.Process.Pid
	c := census{}

	procs := map[int]bool{}
	for _, p := range descendants(pid) {
		procs[p] = true
	}
	cgs, err := x.cgroupsBelowParent()
	if err != nil {
		t.Fatal(err)
	}
	for _, cg := range cgs {
		data, _ := os.ReadFile(filepath.Join(cg, "cgroup.procs"))
		for _, f := range strings.Fields(string(data)) {
			if n, err := strconv.Atoi(f); err == nil {
				procs[n] = true
			}
		}
	}
	for p := range procs {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p))
		c["processes"] = append(c["processes"], fmt.Sprintf("%d:%s", p, strings.TrimSpace(string(comm))))
	}
	held, err := heldThreads(pid)
	if err != nil {
		t.Fatal(err)
	}
	c["threads"] = held
	c["cgroups"] = cgs

	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mounts), "\n") {
		if strings.Contains(line, x.dataDir+"/") {
			f := strings.Fields(line)
			// Mount id and parent id change with every mount: the
			// point, root and source say what it is.
			c["mounts"] = append(c["mounts"], strings.Join(f[3:5], " ")+" "+line[strings.Index(line, " - "):])
		}
	}
	ns, _ := filepath.Glob(filepath.Join(x.dataDir, "networks", "*", "ns", "*"))
	c["netns"] = ns
	leases, _ := filepath.Glob(filepath.Join(x.dataDir, "networks", "*", "leases", "*"))
	c["leases"] = leases

	bridges := map[int]string{}
	first := netns.BridgeName(x.network)
	links, err := linkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if name := l.Attrs().Name; l.Type() == "bridge" && (name == first || strings.HasPrefix(name, first) && len(name) == len(first)+2) {
			bridges[l.Attrs().Index] = name
		}
	}
	for _, l := range links {
		if br, ok := bridges[l.Attrs().MasterIndex]; ok {
			c["veths"] = append(c["veths"], br+":"+l.Attrs().Name)
		}
	}
	c["nftables"] = nftablesOf(t, netns.TableName(first))

	_ = filepath.WalkDir(x.dataDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && p != x.dataDir {
			c["files"] = append(c["files"], strings.TrimPrefix(p, x.dataDir+"/"))
		}
		return nil
	})

	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	detached := detachedMounts(pid)
	for _, fd := range fds {
		if detached[fd.Name()] {
			// A spare disk (sandbox/disk.Spares): the spares taken during
			// the cycles are made again under other numbers.
			c["fds"] = append(c["fds"], "a detached mount")
			continue
		}
		target, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		c["fds"] = append(c["fds"], fd.Name()+" "+fdKind(target))
	}
	for _, v := range c {
		slices.Sort(v)
	}
	return c
}

// detachedMounts gives pid's fds that hold a mount attached to no tree
// (fsmount's): the root of a mount ("/") whose id (fdinfo's mnt_id) is not in
// pid's mount table. (Pipes and sockets are on kernel-internal mounts, in no
// table either.)
func detachedMounts(pid int) map[string]bool {
	attached := map[string]bool{}
	table, _ := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
	for _, line := range strings.Split(string(table), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			attached[f[0]] = true
		}
	}
	out := map[string]bool{}
	infos, _ := filepath.Glob(fmt.Sprintf("/proc/%d/fdinfo/*", pid))
	for _, info := range infos {
		if target, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, filepath.Base(info))); target != "/" {
			continue
		}
		b, err := os.ReadFile(info)
		if err != nil {
			continue // closed as we read
		}
		for _, line := range strings.Split(string(b), "\n") {
			if id, ok := strings.CutPrefix(line, "mnt_id:"); ok && !attached[strings.TrimSpace(id)] {
				out[filepath.Base(info)] = true
			}
		}
	}
	return out
}

// linkList is netlink.LinkList, read again while the kernel says the dump
// was interrupted (links came or went while it was read, as they do while
// other tests run): a partial list is no census.
func linkList() ([]netlink.Link, error) {
	var err error
	for range 20 {
		var links []netlink.Link
		if links, err = netlink.LinkList(); !errors.Is(err, netlink.ErrDumpInterrupted) {
			return links, err
		}
	}
	return nil, err
}

// fdKind is what an fd's link says, less the inode of sockets, pipes and
// anonymous inodes: a socket closed and another opened in its place is the
// same census.
func fdKind(target string) string {
	for _, k := range []string{"socket:", "pipe:", "anon_inode:"} {
		if strings.HasPrefix(target, k) {
			return k
		}
	}
	return target
}

// descendants lists every process below pid, from /proc's parent links.
func descendants(pid int) []int {
	children := map[int][]int{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// The command name (in parentheses) may hold spaces: fields
		// start after its closing parenthesis.
		s := string(stat)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) < 2 {
			continue
		}
		if pp, err := strconv.Atoi(f[1]); err == nil {
			children[pp] = append(children[pp], p)
		}
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, ch := range children[p] {
			out = append(out, ch)
			queue = append(queue, ch)
		}
	}
	return out
}

// nftablesOf lists the chains, rules and set elements of the nftables tables
// named table (every family), rules by chain and handle-free content.
func nftablesOf(t testing.TB, table string) []string {
	t.Helper()
	conn, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	tables, err := conn.ListTables()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, tb := range tables {
		if tb.Name != table {
			continue
		}
		fam := fmt.Sprintf("family%d/%s", tb.Family, tb.Name)
		chains, err := conn.ListChainsOfTableFamily(tb.Family)
		if err != nil {
			t.Fatal(err)
		}
		for _, ch := range chains {
			if ch.Table.Name != tb.Name {
				continue
			}
			rules, err := conn.GetRules(tb, ch)
			if err != nil {
				t.Fatal(err)
			}
			for i, r := range rules {
				out = append(out, fmt.Sprintf("%s chain %s rule %d: %d exprs", fam, ch.Name, i, len(r.Exprs)))
			}
		}
		sets, err := conn.GetSets(tb)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range sets {
			elems, err := conn.GetSetElements(s)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range elems {
				out = append(out, fmt.Sprintf("%s set %s element %x", fam, s.Name, e.Key))
			}
		}
	}
	if len(out) == 0 {
		// The network's firewall is there while the daemon runs: an empty
		// census here means this function reads the wrong tables.
		t.Fatalf("no nftables rules found in tables %s", table)
	}
	return out
}

// diff says, kind by kind, what differs between two censuses.
func (before census) diff(after census) []string {
	var out []string
	for _, k := range censusKinds {
		b, a := before[k], after[k]
		if slices.Equal(b, a) {
			continue
		}
		gone, added := setDiff(b, a), setDiff(a, b)
		out = append(out, fmt.Sprintf("%s: %d before, %d after; gone %q; new %q", k, len(b), len(a), gone, added))
	}
	return out
}

// heldThreads lists the daemon's threads that are neither running nor idle
// in Go's runtime, each by the syscall it waits in ("syscall 61"): the
// threads a goroutine holds, blocked in the kernel. A leaked one (a wait on
// a process that is gone, a read of a pipe nobody writes) stays on this
// list; once teardown settled the list is empty. The count of all threads
// is no measure of a leak: Go's runtime keeps every thread (M) it made for
// a blocking syscall, parked for reuse, and ends those whose goroutine
// exited locked to them (netns work), so that count is a high-water mark of
// the load's concurrent syscalls less the netns work since, which two runs
// of the same soak left 10 threads (15%) apart in either direction.
func heldThreads(pid int) ([]string, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return nil, err
	}
	held := []string{}
	for _, task := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/syscall", pid, task.Name()))
		if err != nil {
			continue // ended as we read
		}
		f := strings.Fields(string(b))
		if len(f) == 0 || f[0] == "running" {
			continue
		}
		nr, err := strconv.Atoi(f[0])
		if err != nil || idleSyscalls[nr] {
			continue
		}
		held = append(held, "syscall "+f[0])
	}
	return held, nil
}

// idleSyscalls are where Go's runtime parks the threads it keeps: an idle M
// and a sleeping sysmon in futex, sysmon's short naps in nanosleep, the
// network poller in epoll_pwait.
var idleSyscalls = map[int]bool{
	unix.SYS_FUTEX:           true,
	unix.SYS_NANOSLEEP:       true,
	unix.SYS_CLOCK_NANOSLEEP: true,
	unix.SYS_EPOLL_PWAIT:     true,
	unix.SYS_EPOLL_PWAIT2:    true,
}

// threadsWithin says whether the daemon's count of all its threads after is
// within bounds of before: a runaway bound, as that count is no leak measure
// (heldThreads). A leak that holds threads fails the census first.
func threadsWithin(before, after int) bool {
	return after <= before+max(16, before/2)
}

func setDiff(a, b []string) []string {
	in := map[string]bool{}
	for _, s := range b {
		in[s] = true
	}
	var out []string
	for _, s := range a {
		if !in[s] {
			out = append(out, s)
		}
	}
	return out
}

// counts is a census as numbers, for logs.
func (c census) counts() string {
	var parts []string
	for _, k := range censusKinds {
		n := len(c[k])
		parts = append(parts, fmt.Sprintf("%s=%d", k, n))
	}
	return strings.Join(parts, " ")
}

// settledCensus polls until the census equals want (nil: until two in a row
// are equal) or the deadline passes, and returns the last one. Teardown after a DELETE answered is synchronous
// but the kernel removes links, and the daemon closes keep-alive connections,
// in their own time: the poll absorbs that, generous for a loaded machine.
func settledCensus(t testing.TB, x *executor, want census, within time.Duration) census {
	t.Helper()
	deadline := time.Now().Add(within)
	// No target: settled is the same census twice, a second apart (the
	// daemon closing connections we closed), each compared with the one
	// before it.
	settle := want == nil
	for {
		// Our side's idle keep-alive connections are the daemon's fds:
		// closed here, its side closes them once it reads the EOF.
		http.DefaultTransport.(*http.Transport).CloseIdleConnections()
		got := takeCensus(t, x)
		if want == nil {
			time.Sleep(time.Second)
			want = got
			continue
		}
		d := want.diff(got)
		if len(d) == 0 {
			return got
		}
		if time.Now().After(deadline) {
			t.Logf("census still changing after %v: %v", within, d)
			return got
		}
		if settle {
			want = got
			time.Sleep(time.Second)
			continue
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// envInt reads a positive count from the environment, or def.
func envInt(t testing.TB, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive count", name, v)
	}
	return n
}

// TestLeakAudit runs EXECUTOR_LEAK_CYCLES (default 100; make soak: 1000)
// create/execute/delete cycles from 4 clients, half of them created by
// their first execution (a cold start), and compares a census of everything
// an executor's runtimes could leave on the host (takeCensus) before and
// after: all equal, once teardown settled (threads: threadsWithin). It
// replaces TestNoLeaksOver200Cycles, whose mounts, veths, cgroups and
// netns it counts by name, with fds exact rather than within 8.
func TestLeakAudit(t *testing.T) {
	cycles := envInt(t, "EXECUTOR_LEAK_CYCLES", 100)
	const workers = 4
	x := startExecutor(t)
	src := source(t, map[string]string{"index.js": "x"})

	// A cycle creates the runtime with POST /v1/runtimes, or (coldStart)
	// lets its first execution create it, as the two ways in differ.
	cycle := func(id string, coldStart bool) []string {
		var errs []string
		exec := execBody(src, nil)
		if !coldStart {
			body := map[string]any{"runtimeId": id, "image": "openruntimes/test:v5-1", "source": src,
				"entrypoint": "index.js", "runtimeEntrypoint": startCommand}
			if r, err := x.send("POST", "/v1/runtimes", body, nil); err != nil {
				return append(errs, fmt.Sprintf("create %s: %v", id, err))
			} else if r.status != 201 {
				return append(errs, fmt.Sprintf("create %s: %d %s", id, r.status, r.body))
			}
			exec = map[string]any{"path": "/"}
		}
		if r, err := x.send("POST", "/v1/runtimes/"+id+"/executions", exec, jsonAccept); err != nil {
			errs = append(errs, fmt.Sprintf("execute %s: %v", id, err))
		} else if r.status != 200 {
			errs = append(errs, fmt.Sprintf("execute %s: %d %s", id, r.status, r.body))
		}
		if r, err := x.send("DELETE", "/v1/runtimes/"+id, nil, nil); err != nil {
			errs = append(errs, fmt.Sprintf("delete %s: %v", id, err))
		} else if r.status != 200 {
			errs = append(errs, fmt.Sprintf("delete %s: %d %s", id, r.status, r.body))
		}
		return errs
	}
	run := func(prefix string, n int) {
		var wg sync.WaitGroup
		var mu sync.Mutex
		var errs []string
		for w := range workers {
			wg.Go(func() {
				for i := w; i < n; i += workers {
					if e := cycle(fmt.Sprintf("%s-%d", prefix, i), i%2 == 1); len(e) > 0 {
						mu.Lock()
						errs = append(errs, e...)
						mu.Unlock()
					}
				}
			})
		}
		wg.Wait()
		for _, e := range errs {
			t.Error(e)
		}
		if len(errs) > 0 {
			t.FailNow()
		}
	}

	// Warm-up with the same concurrency: the image is pulled and
	// unpacked, the network's pools and the daemon's threads are at their
	// working size before the baseline.
	run("warm", 2*workers)
	x.waitClean(t)
	before := settledCensus(t, x, nil, time.Minute)
	t.Logf("before %d cycles: %s", cycles, before.counts())

	run("cycle", cycles)
	x.waitClean(t)
	after := settledCensus(t, x, before, 2*time.Minute)
	t.Logf("after %d cycles: %s", cycles, after.counts())
	if d := before.diff(after); len(d) > 0 {
		t.Fatalf("census changed over %d create/execute/delete cycles:\n%s", cycles, strings.Join(d, "\n"))
	}
}

package container

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Counters reads what libcontainer's full statistics read: a container that
// holds 20 MiB in a /dev/shm file and runs 3 sleeping processes beside its main
// shell is charged at least those 20 MB, under its 64 MB limit, and counts
// the tasks the kernel counts.
func TestCounters(t *testing.T) {
	root := busyboxRoot(t)
	r := newRunner(t, Config{})
	c := start(t, r, NewID(), testSpec(root), shell(`dd if=/dev/zero of=/dev/shm/hold bs=1M count=20 2>/dev/null
		sleep 60 & sleep 60 & sleep 60 &
		echo held; wait; echo freed; exec sleep 60`))
	waitOutput(t, c, "held")
	got, err := c.Counters()
	if err != nil {
		t.Fatalf("Counters: %v (cgroups %v)", err, c.cgPaths)
	}
	st, err := c.c.Stats()
	if err != nil || st.CgroupStats == nil {
		t.Fatalf("libcontainer stats: %+v, %v", st, err)
	}
	full := st.CgroupStats
	if !got.HasMemory || !got.HasPIDs {
		t.Fatalf("Counters %+v: memory or pids missing (cgroups %v)", got, c.cgPaths)
	}
	if got.MemoryLimit != 64_000_000 || got.MemoryLimit != full.MemoryStats.Usage.Limit {
		t.Errorf("memory limit %d, want 64000000 as libcontainer reads (%d)", got.MemoryLimit, full.MemoryStats.Usage.Limit)
	}
	if got.Memory < 20<<20 || got.Memory > got.MemoryLimit {
		t.Errorf("memory %d bytes, want at least the 20 MiB held and at most the limit", got.Memory)
	}
	// Nothing in the container forks once "held" is written: the shell
	// and its 3 sleeps.
	if got.PIDs != 4 || got.PIDs != full.PidsStats.Current {
		t.Errorf("pids %d, want 4 (sh and 3 sleeps) as libcontainer reads (%d)", got.PIDs, full.PidsStats.Current)
	}
	if got.CPU == 0 {
		t.Error("CPU 0 ns after starting a container")
	}

	// The counter files stay open between readings (counterFiles): a
	// later reading sees the cgroup as it is then, not as it was.
	free := `rm /dev/shm/hold; for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = sleep ] && kill ${p#/proc/}; done; true`
	if code, err := c.Exec(t.Context(), []string{"sh", "-c", free}, nil, nil); code != 0 || err != nil {
		t.Fatalf("exec: %d %v", code, err)
	}
	// The main shell reaps the sleeps and goes on alone.
	waitOutput(t, c, "freed")
	again, err := c.Counters()
	if err != nil {
		t.Fatalf("Counters again: %v", err)
	}
	if again.PIDs != 1 {
		t.Errorf("pids %d once the sleeps are gone, want 1 (the main shell or the sleep it becomes)", again.PIDs)
	}
	if again.Memory > got.Memory-16<<20 {
		t.Errorf("memory %d bytes once the 20 MiB file is removed, was %d", again.Memory, got.Memory)
	}
	if again.CPU < got.CPU || again.MemoryLimit != got.MemoryLimit {
		t.Errorf("Counters %+v after %+v: CPU went back or the limit changed", again, got)
	}

	// Destroy closes them: a reading after it fails rather than reading
	// a file of a removed cgroup.
	c.Stop(time.Second)
	if err := c.Destroy(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Counters(); !errors.Is(err, errCountersClosed) {
		t.Errorf("Counters after Destroy: %v, want errCountersClosed", err)
	}
}

// The memory and pids files are read as untrusted, as the CPU counter is; a
// missing or unreadable one only marks that figure absent; "max" and v1's
// huge no-limit value read as no limit.
func TestCountersFiles(t *testing.T) {
	tests := []struct {
		name  string
		v2    bool
		files map[string]string // name -> content; "->" makes a link out
		want  Counters
	}{
		{
			name:  "v1",
			files: map[string]string{"cpuacct.usage": "5\n", "memory.usage_in_bytes": "1000\n", "memory.limit_in_bytes": "128000000\n", "pids.current": "3\n"},
			want:  Counters{CPU: 5, Memory: 1000, MemoryLimit: 128000000, PIDs: 3, HasMemory: true, HasPIDs: true},
		},
		{
			name:  "v1 without a limit",
			files: map[string]string{"cpuacct.usage": "5\n", "memory.usage_in_bytes": "1000\n", "memory.limit_in_bytes": "9223372036854771712\n", "pids.current": "3\n"},
			want:  Counters{CPU: 5, Memory: 1000, PIDs: 3, HasMemory: true, HasPIDs: true},
		},
		{
			name:  "v2",
			v2:    true,
			files: map[string]string{"cpu.stat": "usage_usec 2\n", "memory.current": "4096\n", "memory.max": "64000000\n", "pids.current": "1\n"},
			want:  Counters{CPU: 2000, Memory: 4096, MemoryLimit: 64000000, PIDs: 1, HasMemory: true, HasPIDs: true},
		},
		{
			name:  "v2 without a limit",
			v2:    true,
			files: map[string]string{"cpu.stat": "usage_usec 2\n", "memory.current": "4096\n", "memory.max": "max\n", "pids.current": "1\n"},
			want:  Counters{CPU: 2000, Memory: 4096, PIDs: 1, HasMemory: true, HasPIDs: true},
		},
		{
			name:  "v2, only the CPU controller delegated",
			v2:    true,
			files: map[string]string{"cpu.stat": "usage_usec 2\n"},
			want:  Counters{CPU: 2000},
		},
		{
			name:  "garbage and a link out",
			v2:    true,
			files: map[string]string{"cpu.stat": "usage_usec 2\n", "memory.current": "lots\n", "memory.max": "max\n", "pids.current": "->"},
			want:  Counters{CPU: 2000},
		},
		{
			name:  "limit unreadable",
			v2:    true,
			files: map[string]string{"cpu.stat": "usage_usec 2\n", "memory.current": "4096\n", "memory.max": strings.Repeat("9", cpuCounterMax+1), "pids.current": "1\n"},
			want:  Counters{CPU: 2000, PIDs: 1, HasPIDs: true},
		},
	}
	outside := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(outside, []byte("7\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &Container{cgPaths: map[string]string{}}
			dir := t.TempDir()
			if tc.v2 {
				c.cgPaths[""] = dir
			} else {
				// v1: one directory per controller, as libcontainer's
				// paths are; the files are spread over them.
				for _, ctl := range []string{"cpuacct", "memory", "pids"} {
					c.cgPaths[ctl] = filepath.Join(dir, ctl)
					if err := os.Mkdir(c.cgPaths[ctl], 0o755); err != nil {
						t.Fatal(err)
					}
				}
			}
			for name, content := range tc.files {
				d := dir
				if !tc.v2 {
					d = c.cgPaths[strings.SplitN(strings.ReplaceAll(name, "_", "."), ".", 2)[0]]
				}
				file := filepath.Join(d, name)
				if content == "->" {
					if err := os.Symlink(outside, file); err != nil {
						t.Fatal(err)
					}
					continue
				}
				writeFile(content)(t, file)
			}
			got, err := c.Counters()
			if err != nil {
				t.Fatalf("Counters: %v", err)
			}
			if got != tc.want {
				t.Errorf("Counters %+v, want %+v", got, tc.want)
			}
		})
	}
}

// Without a CPU counter there are no counters: the runtime is left out of
// the sample, as before memory and pids were read.
func TestCountersWithoutCPU(t *testing.T) {
	c := &Container{cgPaths: map[string]string{"memory": t.TempDir()}}
	if _, err := c.Counters(); err == nil {
		t.Fatal("Counters without a CPU counter succeeded")
	}
}

// BenchmarkCounters is one runtime's share of a usage sample, against the
// CPU counter alone (what a sample read before memory and pids were added).
func BenchmarkCounters(b *testing.B) {
	root := busyboxRoot(b)
	r := newRunner(b, Config{})
	c := start(b, r, NewID(), testSpec(root), shell(`exec sleep 60`))
	b.Run("cpu", func(b *testing.B) {
		for b.Loop() {
			if _, err := c.CPUUsage(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("all", func(b *testing.B) {
		for b.Loop() {
			if _, err := c.Counters(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

package container

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// CPUUsage reads the same counter libcontainer's full Stats does: equal for
// an idle container, and grown by the CPU a busy one burns.
func TestCPUUsage(t *testing.T) {
	root := busyboxRoot(t)
	r := newRunner(t, Config{})
	c := start(t, r, NewID(), testSpec(root), shell(`i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; echo burnt; exec sleep 60`))
	waitOutput(t, c, "burnt")
	before := fullStatsCPU(t, c)
	got, err := c.CPUUsage()
	if err != nil {
		t.Fatalf("CPUUsage: %v (cgroups %v)", err, c.cgPaths)
	}
	after := fullStatsCPU(t, c)
	if got < before || got > after {
		t.Errorf("CPUUsage %d ns, want between the full statistics' %d and %d", got, before, after)
	}
	// 100,000 shell loop turns take tens of milliseconds of CPU.
	if got < 1e6 {
		t.Errorf("CPUUsage %d ns after a busy loop, want at least 1 ms", got)
	}
}

// fullStatsCPU is the CPU time from libcontainer's full statistics.
func fullStatsCPU(t *testing.T, c *Container) uint64 {
	t.Helper()
	st, err := c.c.Stats()
	if err != nil || st.CgroupStats == nil {
		t.Fatalf("libcontainer stats: %+v, %v", st, err)
	}
	return st.CgroupStats.CpuStats.CpuUsage.TotalUsage
}

// A container without a CPU-counting cgroup (rootless without delegation)
// says so rather than reading 0.
func TestCPUUsageWithoutCgroup(t *testing.T) {
	c := &Container{cgPaths: map[string]string{"memory": t.TempDir()}}
	if _, err := c.CPUUsage(); !errors.Is(err, ErrNoCPUCounter) {
		t.Fatalf("CPUUsage: %v, want ErrNoCPUCounter", err)
	}
}

// The counter files are read as untrusted: no link followed, no FIFO waited
// on, nothing longer than the buffer taken, garbage refused.
func TestCPUUsageHostileFiles(t *testing.T) {
	outside := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(outside, []byte("12345\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		v2      bool
		make    func(t *testing.T, file string)
		want    uint64
		wantErr string
	}{
		{name: "v1 counter", make: writeFile("987654321\n"), want: 987654321},
		{name: "v2 counter", v2: true, make: writeFile("usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n"), want: 1500000},
		{name: "v2 without usage_usec", v2: true, make: writeFile("user_usec 1000\n"), wantErr: "no usage_usec"},
		{name: "garbage", make: writeFile("lots\n"), wantErr: "invalid syntax"},
		{name: "link out", make: func(t *testing.T, file string) {
			if err := os.Symlink(outside, file); err != nil {
				t.Fatal(err)
			}
		}, wantErr: "too many levels of symbolic links"},
		{name: "fifo", make: func(t *testing.T, file string) {
			if err := unix.Mkfifo(file, 0o600); err != nil {
				t.Fatal(err)
			}
		}, wantErr: "not a regular file"},
		{name: "longer than the buffer", make: writeFile("1" + strings.Repeat(" ", cpuCounterMax)), wantErr: "longer than"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			c := &Container{cgPaths: map[string]string{"cpuacct": dir}}
			file := filepath.Join(dir, "cpuacct.usage")
			if tc.v2 {
				c.cgPaths = map[string]string{"": dir}
				file = filepath.Join(dir, "cpu.stat")
			}
			tc.make(t, file)
			got, err := c.CPUUsage()
			switch {
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("CPUUsage %d, %v: want an error saying %q", got, err, tc.wantErr)
			case tc.wantErr == "" && (err != nil || got != tc.want):
				t.Fatalf("CPUUsage %d, %v: want %d", got, err, tc.want)
			}
		})
	}
}

func writeFile(content string) func(t *testing.T, file string) {
	return func(t *testing.T, file string) {
		if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// Destroy must not touch the paths CPUUsage reads: the usage sampler reads
// them while a DELETE destroys the container. The state's map is the cgroup
// manager's own, emptied by Destroy; sharing it was a data race.
func TestDestroyLeavesCounterPathsAlone(t *testing.T) {
	root := busyboxRoot(t)
	r := newRunner(t, Config{})
	c, err := r.Start(NewID(), testSpec(root), shell(`exec sleep 60`))
	if err != nil {
		t.Fatal(err)
	}
	want := len(c.cgPaths)
	if want == 0 {
		t.Fatal("a started container has no cgroup paths")
	}
	destroy(t, c)
	if got := len(c.cgPaths); got != want {
		t.Errorf("Destroy changed the container's cgroup paths: %d left of %d", got, want)
	}
	if _, err := c.CPUUsage(); err == nil {
		t.Error("CPUUsage of a destroyed container read a counter")
	}
}

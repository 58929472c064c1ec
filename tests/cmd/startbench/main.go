// Command startbench times the hardened libcontainer start the cold-start
// benchmarks are judged against, so that tests/e2e can take that baseline
// between its own samples rather than minutes apart: the VM's speed drifts
// by tens of percent between benchmarks of one make bench run.
//
// It starts one container per line read on stdin, as sandbox/container's
// BenchmarkContainerStart/seccomp+userns does (a busybox root owned by the
// mapped root, the default seccomp profile, a user namespace, half a CPU,
// 64 MB, 64 pids; "echo hi"), and answers each line with the time from the
// start to the first output byte, in nanoseconds, or with "error: ..." and
// exits 1. It removes everything it made when stdin ends. Needs root; built
// with cgo and the seccomp tag (testenv.BuildStartBench).
package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/opencontainers/runc/libcontainer"
	_ "github.com/opencontainers/runc/libcontainer/nsenter"

	"executor/oci"
	"executor/sandbox/container"
)

func init() {
	// libcontainer re-executes this binary as a container's init.
	if len(os.Args) > 1 && os.Args[1] == "init" {
		libcontainer.Init()
	}
}

// mappedRoot is the host uid and gid of root in the containers' user
// namespace, as in BenchmarkContainerStart.
const mappedRoot = 1000000000

func main() {
	if err := run(os.Stdin, os.Stdout); err != nil {
		fmt.Printf("error: %v\n", err)
		os.Exit(1)
	}
}

func run(in io.Reader, out io.Writer) (err error) {
	dir, err := os.MkdirTemp("", "startbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	root := filepath.Join(dir, "root")
	if err := busyboxRoot(root); err != nil {
		return err
	}
	cfg := container.Config{
		StateDir:     filepath.Join(dir, "state"),
		CgroupParent: fmt.Sprintf("/executor-startbench-%d", os.Getpid()),
	}
	r, err := container.New(cfg)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, cleanUp(r)) }()
	sc := bufio.NewScanner(in)
	for i := 0; sc.Scan(); i++ {
		first, err := start(r, fmt.Sprintf("%sstartbench-%d", container.IDPrefix, i), root)
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintln(out, first.Nanoseconds()); err != nil {
			return err
		}
	}
	return sc.Err()
}

// start runs "echo hi" in a new container and says how long its first
// output byte took; the container is destroyed before it returns.
func start(r *container.Runner, id, root string) (time.Duration, error) {
	spec := oci.Spec{
		Rootfs: root, Hostname: "test", CPUs: 0.5, MemoryMB: 64, PidsLimit: 64,
		UserNS: &oci.IDMap{HostUID: mappedRoot, HostGID: mappedRoot, Size: 65536},
	}
	began := time.Now()
	c, err := r.Start(id, spec, container.Process{Args: []string{"echo", "hi"}, Env: []string{oci.DefaultPATH}, Cwd: "/"})
	if err != nil {
		return 0, err
	}
	for c.Output() == "" && !c.Exited() {
		time.Sleep(100 * time.Microsecond)
	}
	first := time.Since(began)
	<-c.Done()
	if err := c.Destroy(); err != nil {
		return 0, err
	}
	if c.Output() != "hi\n" {
		return 0, fmt.Errorf("container %s: output %q, want \"hi\\n\" (%v)", id, c.Output(), c.Exit())
	}
	return first, nil
}

// busyboxRoot makes a root of the host's static busybox at dir, owned by
// the mapped root, as sandbox/container's test helper does. Not from
// tests/testenv: it brings the image libraries, whose package
// initialisation would run at every re-exec of this binary as a
// container's init and slow the baseline down.
func busyboxRoot(dir string) error {
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		return fmt.Errorf("busybox-static is needed: %w", err)
	}
	for _, d := range []string{"bin", "proc", "sys", "dev", "tmp", "etc"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "busybox"), bb, 0o755); err != nil {
		return err
	}
	if err := os.Symlink("busybox", filepath.Join(dir, "bin", "echo")); err != nil {
		return err
	}
	if err := filepath.WalkDir(dir, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, mappedRoot, mappedRoot)
	}); err != nil {
		return err
	}
	// The mapped root walks down to its root: MkdirTemp made the parent 0700.
	return os.Chmod(filepath.Dir(dir), 0o711)
}

// cleanUp removes what the runner left (containers, processes, cgroups) and
// closes it.
func cleanUp(r *container.Runner) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err1 := r.RemoveLeftovers(ctx, nil)
	_, err2 := r.KillStrays(ctx, nil)
	err3 := r.SweepCgroups(nil)
	r.RemoveCgroupParent()
	return errors.Join(err1, err2, err3, r.Close())
}

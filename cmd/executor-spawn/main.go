// Command executor-spawn starts runtimes' containers for the executor
// daemon, which runs it as its child with its end of a socket as fd 3 (see
// sandbox/container/spawner.go). It is small on purpose: libcontainer makes
// each container's init by re-executing the binary that starts the
// container, and this one starts in a fraction of the daemon's time.
//
// With the one argument "seccomp-filter" it is instead the process the
// daemon has libcontainer compile the seccomp profile in, once, and reads
// the loaded program back from (see sandbox/container/filter.go).
//
// It is not meant to be run by hand.
package main

import (
	"fmt"
	"os"
	"runtime"

	_ "github.com/opencontainers/cgroups/devices" // device cgroup rules
	"github.com/opencontainers/runc/libcontainer"
	_ "github.com/opencontainers/runc/libcontainer/nsenter" // runs before the Go runtime in container init

	"executor/sandbox/container"
)

// socketFD is the descriptor the daemon hands its socket on.
const socketFD = 3

func init() {
	// libcontainer re-executes this binary as "executor-spawn init" to
	// become a container's init process.
	if len(os.Args) > 1 && os.Args[1] == "init" {
		libcontainer.Init()
	}
	// As the daemon's: the main thread never leaves its namespaces.
	runtime.LockOSThread()
}

func main() {
	if len(os.Args) == 2 && os.Args[1] == container.FilterExportArg {
		// The runner reads the seccomp filter compiled here (init
		// locked this, the main goroutine, to the main thread).
		if err := container.ServeFilterExport(); err != nil {
			fmt.Fprintln(os.Stderr, "executor-spawn:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 {
		fmt.Fprintln(os.Stderr, "executor-spawn: takes no arguments; the executor daemon runs it")
		os.Exit(2)
	}
	if err := container.ServeSpawnerFD(socketFD); err != nil {
		fmt.Fprintln(os.Stderr, "executor-spawn:", err)
		os.Exit(1)
	}
}

// Command executor serves the Open Runtimes Executor /v1 API and runs every
// runtime itself: images pulled and unpacked, containers through libcontainer,
// one network namespace per runtime on a bridge of its own.
package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/moby/sys/userns"
	_ "github.com/opencontainers/cgroups/devices" // device cgroup rules
	"github.com/opencontainers/runc/libcontainer"
	_ "github.com/opencontainers/runc/libcontainer/nsenter" // runs before the Go runtime in container init
)

func init() {
	// libcontainer re-executes this binary as "executor init" to become a
	// container's init process.
	if len(os.Args) > 1 && os.Args[1] == "init" {
		libcontainer.Init()
	}
	// The main goroutine keeps the main thread to itself. Goroutines that
	// move their thread into another namespace (a runtime's network
	// namespace being made, the spawn namespace containers start from)
	// exit locked so that Go ends the thread; the main thread it cannot
	// end, and parks it for good instead, still in that namespace. The
	// process's /proc/self/{mountinfo,ns,net} describe the main thread, and
	// so would describe the wrong namespace from then on.
	runtime.LockOSThread()
}

func main() {
	if code, handled := runCLI(os.Args[1:], os.Stdout, os.Stderr); handled {
		os.Exit(code)
	}
	os.Exit(serve())
}

// Stamped at build time (-ldflags -X, see the Makefile).
var (
	version   = "dev"
	commit    = ""
	buildDate = ""
)

// serve runs the daemon and returns its exit code: 2 for a configuration
// error, 1 when it stopped on an error, 0 after a clean stop.
func serve() int {
	// A log line to a stderr whose reader is gone (journald restarted, a
	// supervisor's pipe closed) must fail, not kill the daemon by SIGPIPE
	// and leave its runtimes, bridge and cgroups behind.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	if rootlessStage() != "" && !userns.RunningInUserNS() {
		// Set by the host process of a rootless daemon for its children
		// only; a root daemon given it would read descriptors it never had.
		fmt.Fprintln(os.Stderr, "executor: configuration error:", rootlessStageEnv, "is internal to the rootless executor: unset it")
		return 2
	}
	switch rootlessStage() {
	case stageMap:
		fmt.Fprintln(os.Stderr, "executor:", waitForMaps())
		return 1
	case stageInit:
		return nsInit()
	}
	cfg, err := loadConfig(os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "executor: configuration error:", err)
		return 2
	}
	level := new(slog.LevelVar)
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	handler := newLogHandler(cfg, os.Stderr, level)
	var reporter *reportingHandler
	if cfg.SentryDSN != "" {
		if reporter, err = newReporter(handler, cfg.SentryDSN, cfg.Env, cfg.Version); err != nil {
			fmt.Fprintln(os.Stderr, "executor: configuration error:", err)
			return 2
		}
		handler = reporter
	}
	log := slog.New(handler)
	if os.Geteuid() != 0 {
		// An ordinary user: this process makes the namespaces where the
		// daemon runs as root of its own (rootless.go), and the daemon
		// there says what it says.
		return runRootlessHost(cfg, log)
	}
	for _, name := range unknownSettings(os.Environ()) {
		log.Warn("unknown setting in the environment: ignored (a typo?)", "name", name)
	}
	err = run(cfg, log, level)
	if err != nil {
		log.Error("executor stopped", "err", err)
	}
	if reporter != nil {
		reporter.flush(5 * time.Second)
	}
	if err != nil {
		return 1
	}
	return 0
}

func randomKey() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

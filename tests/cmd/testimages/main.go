// Command testimages publishes the Open Runtimes test runtime images to a
// local registry for `make demo` and CI:
//
//	testimages -registry-dir DIR -out-conf registries.conf [-keep-running]
//	testimages -registry 127.0.0.1:5000 -out-conf registries.conf
//
// It builds the test runtime server, starts docker-registry on DIR (or uses
// the running registry given by -registry), builds and pushes
// openruntimes/test:{v5-1,v4-1,v3-1,v2-1,v5-nobash}, writes a
// registries.conf that mirrors docker.io to the registry (so the executor
// pulls "openruntimes/test:v5-1" from it) and prints the registry address on
// stdout. Without -keep-running a registry it started is stopped on exit (the
// images stay in DIR); with it, the registry runs until SIGINT/SIGTERM.
//
// Build with -tags containers_image_openpgp,containers_image_storage_stub.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"executor/tests/testenv"
)

// TestRepository is where the images live on the local registry; through the
// docker.io mirror they are docker.io/openruntimes/test:<tag>.
const TestRepository = "openruntimes/test"

// images are the published tags.
var images = []struct {
	tag      string
	protocol string
	withBash bool
}{
	{"v5-1", testenv.ProtocolV5, true},
	{"v4-1", testenv.ProtocolV4, true},
	{"v3-1", testenv.ProtocolV3, true},
	{"v2-1", testenv.ProtocolV2, true},
	{"v5-nobash", testenv.ProtocolV5, false},
}

type config struct {
	registryDir string
	registry    string
	outConf     string
	workDir     string
	keepRunning bool
	timeout     time.Duration
}

func main() {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "testimages:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, logger); err != nil {
		logger.Error("testimages failed", "err", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("testimages", flag.ContinueOnError)
	fs.StringVar(&cfg.registryDir, "registry-dir", "", "storage directory of the registry to start")
	fs.StringVar(&cfg.registry, "registry", "", "address (host:port) of an already running registry to use instead")
	fs.StringVar(&cfg.outConf, "out-conf", "", "where to write the registries.conf that mirrors docker.io to the registry")
	fs.StringVar(&cfg.workDir, "work-dir", "", "scratch directory for the server binary and image layouts (default: a temporary directory, removed on exit)")
	fs.BoolVar(&cfg.keepRunning, "keep-running", false, "keep the started registry running until SIGINT/SIGTERM")
	fs.DurationVar(&cfg.timeout, "timeout", 10*time.Minute, "time limit for building and pushing")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	switch {
	case cfg.outConf == "":
		return cfg, errors.New("-out-conf is required")
	case cfg.registry == "" && cfg.registryDir == "":
		return cfg, errors.New("one of -registry-dir or -registry is required")
	case cfg.registry != "" && cfg.registryDir != "":
		return cfg, errors.New("-registry-dir and -registry are mutually exclusive")
	case cfg.registry != "" && cfg.keepRunning:
		return cfg, errors.New("-keep-running only applies to a registry started with -registry-dir")
	}
	return cfg, nil
}

func run(ctx context.Context, cfg config, logger *slog.Logger) error {
	setupCtx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()

	workDir := cfg.workDir
	if workDir == "" {
		dir, err := os.MkdirTemp("", "testimages-*")
		if err != nil {
			return fmt.Errorf("create work dir: %w", err)
		}
		defer os.RemoveAll(dir)
		workDir = dir
	} else if err := os.MkdirAll(workDir, 0o755); err != nil {
		return fmt.Errorf("create work dir: %w", err)
	}

	server := filepath.Join(workDir, "runtime-server")
	logger.Info("building test runtime server", "out", server)
	if err := testenv.BuildRuntimeServer(setupCtx, server); err != nil {
		return err
	}

	addr := cfg.registry
	var reg *testenv.Registry
	if addr == "" {
		dir, err := filepath.Abs(cfg.registryDir)
		if err != nil {
			return fmt.Errorf("resolve registry dir: %w", err)
		}
		reg, err = testenv.StartRegistry(setupCtx, testenv.RegistryConfig{Dir: dir, Logger: logger})
		if err != nil {
			return err
		}
		defer reg.Stop()
		addr = reg.Addr()
	}

	for _, im := range images {
		layout, err := testenv.BuildRuntimeImage(setupCtx, testenv.ImageOptions{
			Dir:          filepath.Join(workDir, "images", im.tag),
			Protocol:     im.protocol,
			ServerBinary: server,
			WithBash:     im.withBash,
			Tag:          im.tag,
		})
		if err != nil {
			return fmt.Errorf("build %s: %w", im.tag, err)
		}
		dest := fmt.Sprintf("%s/%s:%s", addr, TestRepository, im.tag)
		if err := testenv.PushImage(setupCtx, layout, im.tag, dest, true); err != nil {
			return err
		}
		logger.Info("pushed", "image", dest, "as", "docker.io/"+TestRepository+":"+im.tag)
	}

	if err := testenv.WriteRegistriesConf(cfg.outConf, addr); err != nil {
		return err
	}
	logger.Info("wrote registries.conf", "path", cfg.outConf)
	// stdout carries only the address so scripts can capture it.
	fmt.Println(addr)

	if reg != nil && cfg.keepRunning {
		logger.Info("registry running; send SIGINT or SIGTERM to stop", "addr", addr)
		<-ctx.Done()
		logger.Info("stopping registry")
	}
	return nil
}

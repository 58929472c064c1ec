// Package testenv builds the executor's end-to-end test environment without
// Docker: our own Open Runtimes test runtime images (OCI layouts written by
// hand from a busybox root and the static server in tests/runtime), a real
// local registry (Debian's docker-registry) to push them to, and a
// containers-registries.conf(5) file that makes docker.io resolve to that
// registry, so the executor pulls `openruntimes/test:v5-1` exactly as it would
// pull from Docker Hub through a mirror.
//
// Anything importing this package needs the build tags
// containers_image_openpgp,containers_image_storage_stub.
package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
)

// FreePort returns a TCP port that was free on 127.0.0.1 a moment ago. Another
// process may take it before the caller binds it, so callers retry on bind
// failures.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("listen on a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// runtimeServerPackage is the test runtime's package, relative to the module root.
const runtimeServerPackage = "./tests/runtime"

// ModuleRoot finds the executor module root by walking up from the working
// directory (a test's package directory, or wherever a tool was started) to
// the go.mod that has the test runtime next to it.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("get working directory: %w", err)
	}
	for {
		if fileExists(filepath.Join(dir, "go.mod")) && fileExists(filepath.Join(dir, runtimeServerPackage, "main.go")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod with tests/runtime found above the working directory")
		}
		dir = parent
	}
}

// BuildRuntimeServer compiles the test runtime (tests/runtime) into outPath
// as a static linux/amd64 binary, so it runs on the busybox-only image root.
func BuildRuntimeServer(ctx context.Context, outPath string) error {
	root, err := ModuleRoot()
	if err != nil {
		return err
	}
	abs, err := filepath.Abs(outPath)
	if err != nil {
		return fmt.Errorf("resolve %s: %w", outPath, err)
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", abs, runtimeServerPackage)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", runtimeServerPackage, err, out)
	}
	return nil
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

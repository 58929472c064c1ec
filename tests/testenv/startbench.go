package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// BuildStartBench builds tests/cmd/startbench, the cold-start benchmarks'
// baseline, to out: with cgo (libcontainer's nsenter) and the seccomp tag,
// without which its containers could not have the seccomp filter the
// baseline is to include.
func BuildStartBench(ctx context.Context, out string) error {
	root, err := ModuleRoot()
	if err != nil {
		return err
	}
	abs, err := filepath.Abs(out)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-tags", "seccomp", "-o", abs, "./tests/cmd/startbench")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./tests/cmd/startbench: %w\n%s", err, b)
	}
	return nil
}

package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// InitCFLAGS are the flags executor-init is compiled with, as the Makefile's
// bin/executor-init rule gives them: static (it runs in roots without a
// libc), warnings as errors.
var InitCFLAGS = []string{"-static", "-O2", "-Wall", "-Wextra", "-Werror", "-s"}

// BuildInit compiles executor-init (cmd/executor-init/src, C) to out with
// $CC, or cc.
func BuildInit(ctx context.Context, out string) error {
	root, err := ModuleRoot()
	if err != nil {
		return err
	}
	cc := os.Getenv("CC")
	if cc == "" {
		cc = "cc"
	}
	args := append(append([]string{}, InitCFLAGS...), "-o", out, filepath.Join(root, "cmd", "executor-init", "src", "executor-init.c"))
	if b, err := exec.CommandContext(ctx, cc, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("build executor-init: %s %v: %w\n%s", cc, args, err, b)
	}
	return nil
}

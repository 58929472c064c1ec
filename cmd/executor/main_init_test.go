package main

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// argv0HelperEnv makes the test binary, once main.go's init (libcontainer's hook) has run, say "past the hook"
// and exit: the package's own init functions run before those of its test files.
const argv0HelperEnv = "EXECUTOR_TEST_ARGV0_HELPER"

func init() {
	if os.Getenv(argv0HelperEnv) != "" {
		fmt.Println("past the hook")
		os.Exit(0)
	}
}

// Only "executor init" is libcontainer's container init: the binary started with no argument at all, as the
// daemon is, gets past the hook.
func TestNoArgumentsIsNotContainerInit(t *testing.T) {
	cmd := exec.Command(os.Args[0]) // argv holds the program's name alone
	cmd.Env = append(os.Environ(), argv0HelperEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil || string(out) != "past the hook\n" {
		t.Fatalf("%v: %s", err, out)
	}
}

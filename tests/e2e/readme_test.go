package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// readmeExampleMarker precedes the README's first example, the sh block a
// reader pastes once the registry and daemon it describes are up.
const readmeExampleMarker = "<!-- readme-example:"

// readmeExample returns the sh block that follows the marker in README.md.
func readmeExample(t *testing.T) string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i := strings.Index(s, readmeExampleMarker)
	if i < 0 {
		t.Fatalf("README.md has no %q marker before its first example", readmeExampleMarker)
	}
	s = s[i:]
	const open = "\n```sh\n"
	j := strings.Index(s, open)
	if j < 0 {
		t.Fatal("no ```sh block after the README's example marker")
	}
	s = s[j+len(open):]
	k := strings.Index(s, "\n```\n")
	if k < 0 {
		t.Fatal("the README's example block is not closed")
	}
	return s[:k+1]
}

// The README's first example works as written: its block, run by bash
// against a daemon pulling the test image from the test registry (what the
// README's setup commands start), packs a function and gets its reply.
func TestReadmeExample(t *testing.T) {
	script := readmeExample(t)
	x := startExecutor(t)
	// The block makes its own directory under /tmp; the trap removes it
	// whatever happens, and errexit makes any failing command fail the run.
	run := "set -euo pipefail\ntrap 'rm -rf \"${fn:-}\"' EXIT\n" + script
	cmd := exec.Command("bash", "-c", run)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "EXECUTOR=" + x.url, "KEY=" + secret}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("README example failed: %v\nstdout: %s\nstderr: %s\nscript:\n%s", err, stdout.String(), stderr.String(), script)
	}
	t.Cleanup(func() { x.request(t, "DELETE", "/v1/runtimes/my-fn", nil, nil) })
	var reply struct {
		StatusCode int    `json:"statusCode"`
		Body       string `json:"body"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &reply); err != nil {
		t.Fatalf("reply is not the execution JSON: %v\n%s", err, stdout.String())
	}
	var echo struct {
		Method, Path, Code string
	}
	if err := json.Unmarshal([]byte(reply.Body), &echo); err != nil {
		t.Fatalf("function body is not the test runtime's echo: %v\n%s", err, reply.Body)
	}
	got := fmt.Sprintf("%d %s %s %q", reply.StatusCode, echo.Method, echo.Path, echo.Code)
	if want := fmt.Sprintf("%d %s %s %q", 200, "GET", "/hello", "hello from my function\n"); got != want {
		t.Fatalf("README example replied %s, want %s\n%s", got, want, stdout.String())
	}
}

package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// cliResult is one run of the executor's command line.
type cliResult struct {
	code           int
	stdout, stderr string
}

// runExecutorCLI runs bin with args and env (NAME=value) and waits for it: a command line that started a
// daemon instead would be killed at the deadline and fail the test.
func runExecutorCLI(t *testing.T, bin string, env []string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("executor %q did not exit: %v\nstdout: %s\nstderr: %s", args, err, stdout.String(), stderr.String())
	}
	code := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return cliResult{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

func (r cliResult) String() string {
	return fmt.Sprintf("exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
}

// stampedBinary builds the executor as `make build` does, with the version, commit and date the Makefile
// stamps set to test values, into a directory of the test's: the shared bin/executor is left alone.
func stampedBinary(t *testing.T, version, commit, date string) string {
	t.Helper()
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	// The Makefile's own command, as make would run it.
	out, err := exec.Command("make", "-C", root, "-s", "-n", "-B", "bin/executor",
		"VERSION="+version, "COMMIT="+commit, "BUILD_DATE="+date).CombinedOutput()
	if err != nil {
		t.Fatalf("make -n bin/executor: %v\n%s", err, out)
	}
	var build string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, " build ") && strings.Contains(line, "main.version="+version) && strings.Contains(line, " -o bin/executor ") {
			build = line
		}
	}
	if build == "" {
		t.Fatalf("the Makefile builds bin/executor without stamping main.version:\n%s", out)
	}
	bin := filepath.Join(t.TempDir(), "executor")
	build = strings.Replace(build, " -o bin/executor ", " -o '"+bin+"' ", 1)
	cmd := exec.Command("sh", "-c", build)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", build, err, out)
	}
	return bin
}

// The command line that needs no daemon: help, the stamped version, and wrong command lines, none of which
// starts a daemon.
func TestCLIHelpVersionAndErrors(t *testing.T) {
	stamped := stampedBinary(t, "v0.0.0-e2e", "e2e0123456789", "2026-01-02T03:04:05Z")
	tests := []struct {
		name   string
		bin    string
		args   []string
		code   int
		stdout []string
		stderr string // the first line of stderr, exactly
	}{
		{name: "--help", args: []string{"--help"}, stdout: []string{"Usage:", "executor COMMAND", "OPR_EXECUTOR_", "README",
			"runtimes", "rm ID...", "logs ID", "health", "pull IMAGE", "--addr", "--key", "Exit status"}},
		{name: "-h", args: []string{"-h"}, stdout: []string{"Usage:"}},
		{name: "help", args: []string{"help"}, stdout: []string{"Usage:"}},
		{name: "--version is stamped", bin: stamped, args: []string{"--version"},
			stdout: []string{"executor v0.0.0-e2e\n", "commit:  e2e0123456789\n", "built:   2026-01-02T03:04:05Z\n"}},
		{name: "version is stamped", bin: stamped, args: []string{"version"}, stdout: []string{"executor v0.0.0-e2e\n"}},
		{name: "bad flag", args: []string{"--no-such-flag"}, code: 2, stderr: "executor: unknown flag --no-such-flag"},
		{name: "bad command", args: []string{"start"}, code: 2, stderr: `executor: unknown command "start"`},
		{name: "bad flag of a command", args: []string{"runtimes", "-a"}, code: 2, stderr: "executor: unknown flag --a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bin := tt.bin
			if bin == "" {
				bin = shared.bin
			}
			r := runExecutorCLI(t, bin, []string{"OPR_EXECUTOR_SECRET=" + secret}, tt.args...)
			if r.code != tt.code {
				t.Fatalf("exit %d, want %d\n%s", r.code, tt.code, r)
			}
			for _, want := range tt.stdout {
				if !strings.Contains(r.stdout, want) {
					t.Errorf("stdout lacks %q:\n%s", want, r.stdout)
				}
			}
			if tt.code == 0 {
				if r.stderr != "" {
					t.Errorf("stderr: %s", r.stderr)
				}
				return
			}
			lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
			if lines[0] != tt.stderr || len(lines) != 2 || !strings.Contains(lines[1], "executor --help") {
				t.Errorf("stderr %q, want %q and a usage hint", r.stderr, tt.stderr)
			}
		})
	}
}

// Each operator command against a real daemon, found through OPR_EXECUTOR_LISTEN and keyed with
// OPR_EXECUTOR_SECRET as the daemon's own environment would have them; then the daemon stopped.
func TestCLIAgainstDaemon(t *testing.T) {
	x := startExecutor(t)
	env := []string{"OPR_EXECUTOR_LISTEN=" + strings.TrimPrefix(x.url, "http://"), "OPR_EXECUTOR_SECRET=" + secret}
	cli := func(args ...string) cliResult {
		t.Helper()
		return runExecutorCLI(t, shared.bin, env, args...)
	}

	t.Run("health", func(t *testing.T) {
		r := cli("health")
		if r.code != 0 || !strings.HasPrefix(r.stdout, "ok\n") {
			t.Fatalf("%s", r)
		}
	})

	const id = "cli-fn"
	t.Run("logs follows a build", func(t *testing.T) {
		// Started before the runtime, as a client does: the stream waits for it.
		logs := exec.Command(shared.bin, "logs", "--timeout", "60", id)
		logs.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
		var stdout, stderr bytes.Buffer
		logs.Stdout, logs.Stderr = &stdout, &stderr
		if err := logs.Start(); err != nil {
			t.Fatal(err)
		}
		var waitErr error
		done := make(chan struct{})
		go func() { waitErr = logs.Wait(); close(done) }()
		t.Cleanup(func() {
			select {
			case <-done:
			default:
				_ = logs.Process.Kill()
				<-done
			}
		})
		// The stream must be in the daemon's hands before the create: its
		// request sent whole on a connection to the daemon.
		waitRequestSent(t, logs.Process.Pid, x.url, done)
		src := source(t, map[string]string{"index.js": "x"})
		r := x.request(t, "POST", "/v1/runtimes", map[string]any{
			"runtimeId": id, "image": "openruntimes/test:v5-1", "source": src, "entrypoint": "index.js",
			"command": `tar -zxf /tmp/code.tar.gz -C /mnt/code && sh helpers/build.sh 'echo cli-build-one; sleep 0.2; echo cli-build-two'`,
			"remove":  false,
		}, nil)
		if r.status != 201 {
			t.Fatalf("create: %d %s", r.status, r.body)
		}
		select {
		case <-done:
			if waitErr != nil {
				t.Fatalf("logs: %v\nstdout: %s\nstderr: %s", waitErr, stdout.String(), stderr.String())
			}
		case <-time.After(30 * time.Second):
			t.Fatal("logs did not end with the build")
		}
		out := stdout.String()
		one, two := strings.Index(out, "cli-build-one\n"), strings.Index(out, "cli-build-two\n")
		if one < 0 || two < one {
			t.Errorf("logs printed %q, want the build's lines in order", out)
		}
		// Content as the runtime wrote it: no timestamps, no escaped newlines.
		if strings.Contains(out, `\n`) || strings.Contains(out, "+00:00 ") {
			t.Errorf("logs printed the stream's encoding: %q", out)
		}
	})

	t.Run("runtimes lists it", func(t *testing.T) {
		r := cli("runtimes")
		if r.code != 0 {
			t.Fatalf("%s", r)
		}
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		if len(lines) != 2 || strings.Join(strings.Fields(lines[0]), " ") != "ID STATUS IMAGE CREATED" {
			t.Fatalf("table %q, want a header and one runtime", r.stdout)
		}
		fields := strings.Fields(lines[1])
		if fields[0] != id || !strings.Contains(lines[1], "openruntimes/test:v5-1") || !strings.Contains(lines[1], time.Now().Format("2006-01-02")) {
			t.Errorf("runtime line %q, want id %s, its image and today's date", lines[1], id)
		}
	})

	t.Run("rm removes it", func(t *testing.T) {
		r := cli("rm", id)
		if r.code != 0 || r.stdout != id+"\n" {
			t.Fatalf("%s", r)
		}
		if r := x.request(t, "GET", "/v1/runtimes/"+id, nil, nil); r.status != 404 {
			t.Errorf("after rm: GET %d %s", r.status, r.body)
		}
		x.waitClean(t)
		r = cli("rm", id)
		if r.code != 1 || !strings.Contains(r.stderr, "runtime_not_found") || !strings.Contains(r.stderr, "(404)") {
			t.Errorf("rm of a removed runtime: %s", r)
		}
	})

	t.Run("pull", func(t *testing.T) {
		const image = "openruntimes/test:v4-1"
		r := cli("pull", image)
		if r.code != 0 {
			t.Fatalf("%s", r)
		}
		// Not a terminal: plain progress lines, then the result. Every layer ends done, or already in the
		// store: the base layer, which v5-1 (pulled for the runtime above) shares; the others are fetched,
		// announced first.
		ended := map[string]string{}
		for _, line := range strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n") {
			layer, state, _ := strings.Cut(line, ": ")
			if strings.HasPrefix(state, "done, ") || state == "already in the store" {
				ended[layer] = state
			}
		}
		fetched := 0
		for layer, state := range ended {
			if strings.HasPrefix(state, "done, ") {
				fetched++
				if !strings.Contains(r.stdout, layer+": layer ") {
					t.Errorf("layer %s was fetched unannounced", layer)
				}
			}
		}
		if len(ended) != 3 || fetched != 2 || !strings.Contains(r.stdout, "\npulled "+image+" (sha256:") || !strings.HasSuffix(r.stdout, ", 3 layers)\n") {
			t.Errorf("pull printed %q: want 3 layers ended, 2 of them fetched, then the result", r.stdout)
		}
		if strings.Contains(r.stdout, "\x1b[") {
			t.Errorf("terminal control sequences written to a pipe: %q", r.stdout)
		}
		// The image is in the store: a runtime of it does not pull (the daemon logs each pull).
		pulls := strings.Count(x.logs.String(), `msg="image pulled"`)
		r = cli("pull", image)
		if r.code != 0 || strings.Contains(r.stdout, ": layer ") || !strings.HasPrefix(r.stdout, "pulled "+image) {
			t.Errorf("second pull: %s", r)
		}
		imagesColdStart(t, x, "cli-pulled", image)
		if now := strings.Count(x.logs.String(), `msg="image pulled"`); now != pulls {
			t.Errorf("the image was pulled again (%d pulls, then %d)", pulls, now)
		}
		if r := x.request(t, "DELETE", "/v1/runtimes/cli-pulled", nil, nil); r.status != 200 {
			t.Fatalf("delete: %d %s", r.status, r.body)
		}

		r = cli("pull", "openruntimes/test:no-such-tag")
		if r.code != 1 || !strings.Contains(r.stderr, "image_pull_failed: image not found (404)") {
			t.Errorf("pull of a missing image: %s", r)
		}
		r = cli("pull", "oci:/etc:x")
		if r.code != 1 || !strings.Contains(r.stderr, "image_pull_failed: invalid image reference") || !strings.Contains(r.stderr, "(400)") {
			t.Errorf("pull of a host path: %s", r)
		}
	})

	t.Run("a wrong key is the daemon's error", func(t *testing.T) {
		r := cli("runtimes", "--key", "not-the-key")
		if r.code != 1 || !strings.Contains(r.stderr, "general_unauthorized") {
			t.Errorf("%s", r)
		}
	})

	t.Run("a stopped daemon is unreachable", func(t *testing.T) {
		x.stop()
		for _, args := range [][]string{{"health"}, {"runtimes"}, {"pull", "openruntimes/test:v5-1"}} {
			r := cli(args...)
			if r.code != 3 || !strings.Contains(r.stderr, "cannot reach the daemon at "+x.url) || !strings.Contains(r.stderr, "OPR_EXECUTOR_LISTEN") {
				t.Errorf("%v: %s", args, r)
			}
		}
	})
}

// waitRequestSent waits until process pid has sent something on a TCP
// connection to the daemon at daemonURL and the daemon's kernel has acked
// all of it (ss's tcp_info: bytes_acked past the SYN's 1, an empty send
// queue): its request has reached the daemon's socket. It fails when the
// process ends first (done closed) or after a minute.
func waitRequestSent(t *testing.T, pid int, daemonURL string, done <-chan struct{}) {
	t.Helper()
	u, err := url.Parse(daemonURL)
	if err != nil {
		t.Fatal(err)
	}
	owner := fmt.Sprintf("pid=%d,", pid)
	deadline := time.Now().Add(time.Minute)
	for {
		select {
		case <-done:
			t.Fatal("the process ended before its request reached the daemon")
		default:
		}
		out, err := exec.Command("ss", "-Htinp", "state", "established", "dport", "=", ":"+u.Port()).Output()
		if err != nil {
			t.Fatalf("ss: %v", err)
		}
		// Each connection is a line (Recv-Q Send-Q local peer users)
		// and its tcp_info on the next.
		lines := strings.Split(string(out), "\n")
		for i := 0; i+1 < len(lines); i++ {
			f := strings.Fields(lines[i])
			if len(f) < 5 || !strings.Contains(lines[i], owner) || f[1] != "0" {
				continue
			}
			for _, kv := range strings.Fields(lines[i+1]) {
				if n, ok := strings.CutPrefix(kv, "bytes_acked:"); ok {
					if acked, _ := strconv.ParseUint(n, 10, 64); acked > 1 {
						return
					}
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d sent no request to %s:\n%s", pid, daemonURL, out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

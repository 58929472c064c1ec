package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"executor/tests/testenv"
)

// TestRootlessRefusesWhatIsMissing: a rootless start that lacks what the
// host must give the user stops at once with exit 1 and a line saying what
// to install or add, having bound no port and started nothing; one asking for
// what rootless cannot do stops the same way, as a configuration error (2).
func TestRootlessRefusesWhatIsMissing(t *testing.T) {
	u := rootlessUser(t, false)
	bin, err := filepath.Abs(shared.bin)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cred *syscall.Credential
		env  []string
		want string
		code int // the exit code: 1 the host lacks something, 2 a configuration error
	}{
		{"no subordinate ids (nobody)", &syscall.Credential{Uid: 65534, Gid: 65534, Groups: []uint32{}},
			[]string{"HOME=/nonexistent", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "XDG_RUNTIME_DIR=" + u.RuntimeDir},
			"/etc/subuid has no range for nobody (add one: usermod --add-subuids", 1},
		{"no newuidmap on PATH", u.Credential(), append(u.Env(), "PATH=/nonexistent"),
			"newuidmap is not on PATH (Debian and Ubuntu package uidmap)", 1},
		// Its runtimes' network namespace ends with the daemon.
		{"live restore", u.Credential(), append(u.Env(), "OPR_EXECUTOR_LIVE_RESTORE=true"),
			"OPR_EXECUTOR_LIVE_RESTORE=true: a rootless executor's runtimes live in a network namespace that ends with it", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			port, err := testenv.FreePort()
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(bin)
			cmd.Dir = "/"
			cmd.Env = append(tt.env, "OPR_EXECUTOR_ENV=development", "OPR_EXECUTOR_SECRET="+secret,
				fmt.Sprintf("OPR_EXECUTOR_LISTEN=127.0.0.1:%d", port), "OPR_EXECUTOR_DATA_DIR="+filepath.Join(u.Home, "data"))
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: tt.cred}
			done := make(chan error, 1)
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			go func() { done <- cmd.Wait() }()
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				_ = cmd.Process.Kill()
				t.Fatalf("still running after 30 s:\n%s", out.String())
			}
			want := tt.code
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != want {
				t.Errorf("exit %v, want %d", err, want)
			}
			if !strings.Contains(out.String(), tt.want) {
				t.Errorf("output %q, want it to say %q", out.String(), tt.want)
			}
			// The port was never taken.
			ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
			if err != nil {
				t.Errorf("port %d: %v", port, err)
			} else {
				ln.Close()
			}
		})
	}
}

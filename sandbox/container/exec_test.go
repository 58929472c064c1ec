package container

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"executor/oci"
)

func TestExec(t *testing.T) {
	root := busyboxRoot(t)
	r := newRunner(t, Config{})
	// Not root, with an environment and a working directory of its own:
	// commands inherit them.
	c := start(t, r, IDPrefix+"exec", testSpec(root), Process{
		Args: []string{"sleep", "600"},
		Env:  []string{oci.DefaultPATH, "GREETING=hello"},
		Cwd:  "/tmp",
		UID:  1000,
		GID:  1000,
	})
	tests := []struct {
		name       string
		script     string
		split      bool
		code       int
		stdout     string
		stderr     string
		stdoutNone bool // a nil stdout
	}{
		{name: "merged in order", script: "echo out; echo err >&2; echo out2", code: 0, stdout: "out\nerr\nout2\n"},
		{name: "split", script: "echo out; echo err >&2; echo out2", split: true, stdout: "out\nout2\n", stderr: "err\n"},
		{name: "exit code", script: "echo failing >&2; exit 3", split: true, code: 3, stderr: "failing\n"},
		{name: "death by signal", script: "kill -9 $$", code: 137},
		{name: "user, environment and directory of the main process", script: `echo "$GREETING $(pwd) $(id -u):$(id -g)"`, stdout: "hello /tmp 1000:1000\n"},
		{name: "output discarded", script: "echo lost; echo lost >&2; exit 4", stdoutNone: true, code: 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			var outW, errW io.Writer = &stdout, nil
			if tc.split {
				errW = &stderr
			}
			if tc.stdoutNone {
				outW = nil
			}
			code, err := c.Exec(t.Context(), []string{"sh", "-c", tc.script}, outW, errW)
			if err != nil {
				t.Fatal(err)
			}
			if code != tc.code || stdout.String() != tc.stdout || stderr.String() != tc.stderr {
				t.Errorf("code %d, stdout %q, stderr %q; want %d, %q, %q", code, stdout.String(), stderr.String(), tc.code, tc.stdout, tc.stderr)
			}
		})
	}

	t.Run("context end kills the command", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		// Cancelled once the command runs: a timeout could end before a
		// slow start.
		out := &cancelOn{want: "started", cancel: cancel}
		began := time.Now()
		code, err := c.Exec(ctx, []string{"sh", "-c", "echo $$ >/dev/shm/pid; echo started; exec sleep 30"}, out, nil)
		if !errors.Is(err, context.Canceled) || code != -1 {
			t.Fatalf("code %d, %v: want -1 and the context's error", code, err)
		}
		if d := time.Since(began); d > 10*time.Second {
			t.Errorf("returned after %v", d)
		}
		if out.buf.String() != "started\n" {
			t.Errorf("output %q", out.buf.String())
		}
		var check bytes.Buffer
		if _, err := c.Exec(t.Context(), []string{"sh", "-c", "kill -0 $(cat /dev/shm/pid) 2>/dev/null && echo alive || echo gone"}, &check, nil); err != nil {
			t.Fatal(err)
		}
		if check.String() != "gone\n" {
			t.Errorf("the command is %s", strings.TrimSpace(check.String()))
		}
	})

	t.Run("context ended before", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		var out bytes.Buffer
		if code, err := c.Exec(ctx, []string{"echo", "ran"}, &out, nil); !errors.Is(err, context.Canceled) || code != -1 || out.Len() != 0 {
			t.Errorf("code %d, %v, output %q: want -1, the context's error and nothing run", code, err, out.String())
		}
	})

	t.Run("a child holding the output does not hold Exec", func(t *testing.T) {
		var out bytes.Buffer
		began := time.Now()
		code, err := c.Exec(t.Context(), []string{"sh", "-c", "sleep 30 & echo started"}, &out, nil)
		if err != nil || code != 0 {
			t.Fatalf("code %d, %v", code, err)
		}
		// Well short of the child's 30 s, with room for a slow start.
		if d := time.Since(began); d > pipeLinger+5*time.Second {
			t.Errorf("returned after %v, want about %v", d, pipeLinger)
		}
		if out.String() != "started\n" {
			t.Errorf("output %q", out.String())
		}
	})

	t.Run("no such command", func(t *testing.T) {
		if code, err := c.Exec(t.Context(), []string{"/nonexistent"}, nil, nil); err == nil {
			t.Errorf("code %d, want an error", code)
		}
	})

	t.Run("not running", func(t *testing.T) {
		c.Stop(0)
		if code, err := c.Exec(t.Context(), []string{"true"}, nil, nil); !errors.Is(err, ErrNotRunning) || code != -1 {
			t.Errorf("code %d, %v: want -1 and ErrNotRunning", code, err)
		}
	})
}

// cancelOn collects output and calls cancel once it holds want.
type cancelOn struct {
	buf    bytes.Buffer
	want   string
	cancel context.CancelFunc
}

func (w *cancelOn) Write(p []byte) (int, error) {
	w.buf.Write(p)
	if strings.Contains(w.buf.String(), w.want) {
		w.cancel()
	}
	return len(p), nil
}

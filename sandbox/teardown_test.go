package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"executor/netns"
	"executor/sandbox/protocol"
)

// A v4 or v5 runtime leaves each execution's logs in files of logs/ in its
// directory, named by the log id it answers with: the execution's result
// carries them, and the files are gone soon after.
func TestExecutionLogsFromFiles(t *testing.T) {
	m, h := newTestManagerServing(t, httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("x-open-runtimes-log-id", "exec1")
		_, _ = io.WriteString(w, "ok")
	})))
	h.dir = t.TempDir()
	logs := filepath.Join(h.dir, "logs")
	if err := os.Mkdir(logs, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{"exec1_logs.log": "hello from the function\n", "exec1_errors.log": "oops\n"} {
		if err := os.WriteFile(filepath.Join(logs, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	res, err := m.Execute(context.Background(), coldExec("logs"))
	if err != nil {
		t.Fatal(err)
	}
	if string(res.Body) != "ok" || res.Logs != "hello from the function\n" || res.Errors != "oops\n" {
		t.Errorf("result: body %q, logs %q, errors %q; want the log files' contents", res.Body, res.Logs, res.Errors)
	}
	// The files are removed once the execution is answered, not before.
	deadline := time.Now().Add(10 * time.Second)
	for {
		left, _ := os.ReadDir(logs)
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("log files left: %v", left)
		}
		time.Sleep(time.Millisecond)
	}
}

// A runtime that names every execution's logs with one id (development's
// "dev") appends to the same files: each execution still answers with its
// own logs only, as the files read before it are removed before it is sent.
func TestExecutionLogsOfAReusedLogID(t *testing.T) {
	var logs string // set below, once the runtime's directory is known
	n := 0
	m, h := newTestManagerServing(t, httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n++
		f, err := os.OpenFile(filepath.Join(logs, "dev_logs.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			t.Error(err)
			return
		}
		fmt.Fprintf(f, "execution %d\n", n)
		f.Close()
		w.Header().Set("x-open-runtimes-log-id", "dev")
		_, _ = io.WriteString(w, "ok")
	})))
	h.dir = t.TempDir()
	logs = filepath.Join(h.dir, "logs")
	if err := os.Mkdir(logs, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 20; i++ {
		res, err := m.Execute(context.Background(), coldExec("dev"))
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("execution %d\n", i); res.Logs != want {
			t.Fatalf("execution %d: logs %q, want %q", i, res.Logs, want)
		}
	}
	waitFor(t, "the last execution's log file removed", func() bool {
		left, _ := os.ReadDir(logs)
		return len(left) == 0
	})
}

// A deleted runtime's directory is removed, and its kept-alive connections
// are closed (not left for their idle timeout).
func TestDeleteReleasesTheRuntime(t *testing.T) {
	// The readiness probe's connections close at once; the execution's
	// connection is the one kept alive.
	served := make(chan string, 1)
	closed := make(chan string, 64)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served <- r.RemoteAddr
		_, _ = io.WriteString(w, "ok")
	}))
	srv.Config.ConnState = func(c net.Conn, st http.ConnState) {
		if st == http.StateClosed {
			select {
			case closed <- c.RemoteAddr().String():
			default:
			}
		}
	}
	srv.Start()
	m, h := newTestManagerServing(t, srv)
	h.dir = filepath.Join(t.TempDir(), "rt")
	if err := os.MkdirAll(filepath.Join(h.dir, "src"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Execute(context.Background(), coldExec("rt")); err != nil {
		t.Fatal(err)
	}
	kept := <-served
	if err := m.Delete(context.Background(), "rt"); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(time.Second) // well before the transport's idle timeout
	for gone := false; !gone; {
		select {
		case addr := <-closed:
			gone = addr == kept
		case <-timeout:
			t.Error("the deleted runtime's kept-alive connection is still open")
			gone = true
		}
	}
	if _, err := os.Stat(h.dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the deleted runtime's directory: %v, want it gone", err)
	}
}

// A runtime's network endpoint is given up when it is removed: by Delete
// before it returns (its address then counts as freed), once only, and a
// failure is logged. The endpoint here cannot be torn down, as root or not:
// its namespace path is a directory with a file in it (no mount point to
// unmount, nothing os.Remove can remove).
func TestEndpointGivenUpOnRemoval(t *testing.T) {
	tests := []struct {
		name   string
		remove func(t *testing.T, m *Manager)
		want   []string // the error lines, in order, each by a part of it
	}{
		{"delete", func(t *testing.T, m *Manager) {
			if err := m.Delete(context.Background(), "net"); err != nil {
				t.Fatal(err)
			}
		}, []string{"runtime network detach failed"}},
		{"maintenance", func(t *testing.T, m *Manager) {
			m.reapIdle(context.Background(), time.Now().Add(time.Hour))
		}, []string{"runtime removal incomplete"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, h := newTestManager(t)
			l := captureLog(m)
			nsPath := filepath.Join(t.TempDir(), "ns")
			if err := os.MkdirAll(filepath.Join(nsPath, "busy"), 0o755); err != nil {
				t.Fatal(err)
			}
			m.assemble = func(ctx context.Context, r *Runtime, spec Spec) error {
				if err := h.assemble(ctx, r, spec); err != nil {
					return err
				}
				r.mu.Lock()
				r.network, r.endpoint = &netns.Network{}, &netns.Endpoint{ID: "net", NSPath: nsPath, HostIf: "oprtestnone0"}
				r.mu.Unlock()
				return nil
			}
			if _, err := m.Create(context.Background(), Spec{RuntimeID: "net", Image: "img", Version: protocol.V5}); err != nil {
				t.Fatal(err)
			}
			tt.remove(t, m)
			// Before Close: Delete's detach is done when it returns,
			// maintenance's removal when reapIdle returns.
			got := l.lines("ERROR")
			ok := len(got) == len(tt.want)
			for i := 0; ok && i < len(got); i++ {
				ok = strings.Contains(got[i], tt.want[i]) && strings.Contains(got[i], nsPath)
			}
			if !ok {
				t.Errorf("error lines:\n%s\nwant one each saying %q about %s", strings.Join(got, "\n"), tt.want, nsPath)
			}
			if err := m.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			if got2 := l.lines("ERROR"); len(got2) != len(got) {
				t.Errorf("the endpoint was given up again by the teardown:\n%s", strings.Join(got2[len(got):], "\n"))
			}
		})
	}
}

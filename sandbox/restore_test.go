package sandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"executor/netns"
	"executor/sandbox/build"
	"executor/sandbox/container"
	"executor/sandbox/protocol"
)

// recordedRuntime is a whole runtime as far as its record goes.
func recordedRuntime(m *Manager) *Runtime {
	spec := Spec{RuntimeID: "fn-1", Image: "openruntimes/node:v5-22", Version: protocol.V5, RestartPolicy: "always",
		Variables: map[string]string{"A": "1"}, CPUs: 1, MemoryMB: 512, RuntimeEntrypoint: "npm start"}
	created := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	r := m.newRuntime(spec, "test-fn-1", "0123abcd", "s3cret", created, container.IDPrefix+"0123456789abcdef")
	r.Dir = filepath.Join(m.runDir, r.CID)
	r.layers = []string{"/data/images/layers/a", "/data/images/layers/b"}
	r.main = container.Process{Args: []string{"/init", "--", "bash", "-c", "npm start"}, Env: []string{"PATH=/bin"}, Cwd: "/usr/local/server", UID: 1, GID: 2}
	r.command, r.shell = []string{"bash", "-c", "npm start"}, "bash"
	r.endpoint = &netns.Endpoint{ID: r.CID, NSPath: "/data/networks/ns/" + r.CID, Addr: netip.MustParseAddr("10.1.0.7"),
		Subnet: netip.MustParsePrefix("10.1.0.0/24"), Gateway: netip.MustParseAddr("10.1.0.1"), HostIf: "vabc1", Bridge: "executor-x", Network: "executor"}
	r.ct = newFakeProc(nil)
	r.markUp(1500 * time.Millisecond)
	return r
}

// buildLog is a finished build output of two chunks.
func buildLog() *build.Output {
	o := build.NewOutput()
	o.Write([]byte("added 12 packages\n"))
	o.Write([]byte("build done \x00\xff\n")) // made valid UTF-8 in the record
	o.Finish()
	return o
}

func liveRestoreManager(t *testing.T) *Manager {
	t.Helper()
	return newManager(Config{DataDir: t.TempDir(), Hostname: "test", LiveRestore: true,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
}

// A record holds what adoption needs, privately, and goes with forget.
func TestRecordRoundTrip(t *testing.T) {
	m := liveRestoreManager(t)
	r := recordedRuntime(m)
	m.remember(r, buildLog())
	path := m.recordPath(r.CID)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("record mode %v, want 0600", fi.Mode().Perm())
	}
	if di, _ := os.Stat(m.stateDir()); di.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode %v, want 0700", di.Mode().Perm())
	}
	got, err := readRecord(path)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := r.record(buildLog())
	// Times come back in the location JSON gives them.
	got.Created, got.Updated = got.Created.UTC(), got.Updated.UTC()
	want.Created, want.Updated = want.Created.UTC(), want.Updated.UTC()
	for i := range want.Log {
		// Two outputs: same contents, their own stamps.
		if i < len(got.Log) {
			want.Log[i].Timestamp = got.Log[i].Timestamp.UTC()
			got.Log[i].Timestamp = got.Log[i].Timestamp.UTC()
		}
	}
	if len(got.Log) != 2 || got.Log[1].Content != "build done \x00\ufffd\n" {
		t.Errorf("build output in the record: %q", got.Log)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("record read back:\n got %+v\nwant %+v", got, want)
	}
	for _, f := range []string{"fn-1", "s3cret", "0123abcd", "npm start", "10.1.0.7", "vabc1", "/data/images/layers/b", "always", `"Up 1.5s"`} {
		if b, _ := os.ReadFile(path); !bytes.Contains(b, []byte(f)) {
			t.Errorf("record lacks %q: %s", f, b)
		}
	}
	if ents, _ := os.ReadDir(m.stateDir()); len(ents) != 1 {
		t.Errorf("state dir holds %d files, want the record alone", len(ents))
	}
	m.forget(r)
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("record after forget: %v", err)
	}

	// Without live restore nothing is written.
	off := newManager(Config{DataDir: t.TempDir(), Hostname: "test", Logger: m.log})
	off.remember(recordedRuntime(off), buildLog())
	if _, err := os.Stat(off.stateDir()); !os.IsNotExist(err) {
		t.Errorf("state dir without live restore: %v", err)
	}
}

// A runtime's record leaves with it: from the table (a daemon killed before
// the teardown must not bring it back), and when it is destroyed.
func TestRecordLeavesWithTheRuntime(t *testing.T) {
	m := liveRestoreManager(t)
	r := recordedRuntime(m)
	r.forget = m.forget
	e := &entry{id: r.ID, rt: r, gone: make(chan struct{}), ready: make(chan struct{})}
	m.table[r.ID] = e
	m.remember(r, buildLog())
	m.mu.Lock()
	m.dropLocked(e)
	m.mu.Unlock()
	if _, err := os.Stat(m.recordPath(r.CID)); !os.IsNotExist(err) {
		t.Errorf("record after the runtime left the table: %v", err)
	}
	m.remember(r, buildLog())
	r.endpoint = nil // nothing to detach in this test
	_ = r.destroy(context.Background(), 0)
	if _, err := os.Stat(m.recordPath(r.CID)); !os.IsNotExist(err) {
		t.Errorf("record after destroy: %v", err)
	}
}

func TestReadRecordRefuses(t *testing.T) {
	m := liveRestoreManager(t)
	good, _ := recordedRuntime(m).record(buildLog())
	edit := func(f func(*record)) []byte {
		rec := good
		f(&rec)
		b, _ := json.Marshal(rec)
		return b
	}
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"garbage", []byte("{not json"), "invalid character"},
		{"another format", edit(func(r *record) { r.Format = 2 }), "format 2"},
		{"no id", edit(func(r *record) { r.ID = "" }), "incomplete"},
		{"no key", edit(func(r *record) { r.Secret = "" }), "incomplete"},
		{"no image", edit(func(r *record) { r.Image = "" }), "incomplete"},
		{"foreign container", edit(func(r *record) { r.CID = "other-1" }), "not one of ours"},
		{"container id with a path", edit(func(r *record) { r.CID = container.IDPrefix + "a/../../b" }), "not one of ours"},
		{"no main process", edit(func(r *record) { r.Main.Args = nil }), "no main process"},
		{"request of another runtime", edit(func(r *record) { r.Spec.RuntimeID = "other" }), "does not match its request"},
		{"request of another image", edit(func(r *record) { r.Spec.Image = "other:1" }), "does not match its request"},
		{"too large", append(edit(func(*record) {}), bytes.Repeat([]byte(" "), maxRecordSize)...), "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "r.json")
			if err := os.WriteFile(p, tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := readRecord(p); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("readRecord: %v, want an error with %q", err, tc.want)
			}
		})
	}
	t.Run("link", func(t *testing.T) {
		dir := t.TempDir()
		target := filepath.Join(dir, "target")
		os.WriteFile(target, edit(func(*record) {}), 0o600)
		link := filepath.Join(dir, "r.json")
		os.Symlink(target, link)
		if _, err := readRecord(link); err == nil {
			t.Error("a link was followed")
		}
	})
	t.Run("fifo", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "r.json")
		if err := syscall.Mkfifo(p, 0o600); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { _, err := readRecord(p); done <- err }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "not a regular file") {
				t.Errorf("fifo: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("readRecord blocked on a FIFO")
		}
	})
	if _, err := readRecord(m.recordPath("missing")); !os.IsNotExist(err) {
		t.Errorf("missing record: %v", err)
	}
}

// restore removes what it cannot adopt: temporary files, garbage, records of
// networks this executor does not have; nothing of the daemon's is touched
// for them (no container, no network).
func TestRestoreRemovesWhatItCannotAdopt(t *testing.T) {
	m := liveRestoreManager(t)
	r := recordedRuntime(m)
	m.remember(r, buildLog()) // its network "executor" is not configured
	os.WriteFile(filepath.Join(m.stateDir(), ".rt-x.123.tmp"), []byte("half"), 0o600)
	os.WriteFile(filepath.Join(m.stateDir(), container.IDPrefix+"garbage.json"), []byte("{"), 0o600)
	other, _ := r.record(buildLog())
	other.CID = container.IDPrefix + "feedface"
	b, _ := json.Marshal(other)
	os.WriteFile(filepath.Join(m.stateDir(), container.IDPrefix+"renamed.json"), b, 0o600) // names another container
	var logs bytes.Buffer
	m.log = slog.New(slog.NewTextHandler(&logs, nil))
	if got := m.restore(context.Background()); len(got) != 0 {
		t.Errorf("adopted %v", got)
	}
	if ents, _ := os.ReadDir(m.stateDir()); len(ents) != 0 {
		t.Errorf("state dir after restore: %d files left", len(ents))
	}
	for _, want := range []string{"is not one of this executor's", "record names container", "unexpected end of JSON"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
	if len(m.table) != 0 {
		t.Errorf("table after a failed restore: %d rows", len(m.table))
	}
}

package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"executor/sandbox/container"
)

// TestCheck: a manager with a real runner (root) passes Check once
// PrepareHealth made its cgroup parent; each damage to the data dir or the
// parent makes Check return a *HealthError naming the part and saying what
// broke (the part's name not doubled). Networks are netns's tests' and the end-to-end tests'.
func TestCheck(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("TestCheck needs root for cgroups (CI runs as root)")
	}
	tests := []struct {
		name   string
		damage func(t *testing.T, m *Manager) // nil: intact
		parts  []string
		want   []string // each in the message
	}{
		{name: "intact"},
		{
			name:   "runtimes directory removed",
			damage: func(t *testing.T, m *Manager) { remove(t, m.runDir) },
			parts:  []string{PartDataDir},
			want:   []string{"data dir %d/runtimes is missing"},
		},
		{
			name: "data dir a file",
			damage: func(t *testing.T, m *Manager) {
				remove(t, filepath.Join(m.cfg.DataDir, "containers"))
				if err := os.WriteFile(filepath.Join(m.cfg.DataDir, "containers"), nil, 0o600); err != nil {
					t.Fatal(err)
				}
			},
			parts: []string{PartDataDir},
			want:  []string{"data dir %d/containers is not a directory"},
		},
		{
			name:   "cgroup parent removed",
			damage: func(t *testing.T, m *Manager) { removeCgroupParent(t, m) },
			parts:  []string{PartCgroupParent},
			want:   []string{"cgroup parent /sys/fs/cgroup/", "%p is missing"},
		},
		{
			name: "both",
			damage: func(t *testing.T, m *Manager) {
				remove(t, m.runDir)
				removeCgroupParent(t, m)
			},
			parts: []string{PartDataDir, PartCgroupParent},
			want:  []string{"data dir %d/runtimes is missing; cgroup parent /sys/fs/cgroup/"},
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := healthManager(t, fmt.Sprintf("/executor-sandbox-test-%d-%d", os.Getpid(), i))
			if err := m.Check(context.Background()); err != nil {
				t.Fatalf("intact: %v", err)
			}
			if tt.damage == nil {
				return
			}
			tt.damage(t, m)
			err := m.Check(context.Background())
			var he *HealthError
			if !errors.As(err, &he) {
				t.Fatalf("Check: %v, want a *HealthError", err)
			}
			if fmt.Sprint(he.Parts) != fmt.Sprint(tt.parts) {
				t.Errorf("parts %q, want %q", he.Parts, tt.parts)
			}
			msg := err.Error()
			for _, w := range tt.want {
				w = strings.NewReplacer("%d", m.cfg.DataDir, "%p", m.cfg.CgroupParent).Replace(w)
				if !strings.Contains(msg, w) {
					t.Errorf("message %q does not say %q", msg, w)
				}
			}
			for _, part := range tt.parts {
				if strings.Contains(msg, part+" "+part) {
					t.Errorf("message %q names %q twice in a row", msg, part)
				}
			}
		})
	}
}

// healthManager is a Manager with a data dir of the test's own, the
// directories New makes in it, and a real runner whose cgroup parent
// PrepareHealth made; the parent is removed at the end.
func healthManager(t *testing.T, parent string) *Manager {
	t.Helper()
	dir := t.TempDir()
	m := newManager(Config{DataDir: dir, CgroupParent: parent})
	r, err := container.New(container.Config{StateDir: filepath.Join(dir, "containers"), CgroupParent: parent, Unconfined: true})
	if err != nil {
		t.Fatal(err)
	}
	m.runner = r
	if err := os.MkdirAll(m.runDir, 0o711); err != nil {
		t.Fatal(err)
	}
	if err := m.PrepareHealth(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.RemoveCgroupParent)
	return m
}

func remove(t *testing.T, path string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
}

// removeCgroupParent removes the (empty) parent from one hierarchy: that is
// enough to break it.
func removeCgroupParent(t *testing.T, m *Manager) {
	t.Helper()
	dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup/*", m.cfg.CgroupParent))
	dirs = append(dirs, filepath.Join("/sys/fs/cgroup", m.cfg.CgroupParent))
	for _, d := range dirs {
		if err := os.Remove(d); err == nil {
			return
		}
	}
	t.Fatalf("no cgroup parent %s to remove", m.cfg.CgroupParent)
}

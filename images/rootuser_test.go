package images

import (
	"os"
	"path/filepath"
	"testing"
)

func TestLookupUser(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, data string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(root, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("etc/passwd", "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n")
	write("etc/group", "root:x:0:\napp:x:1000:\nextra:x:2000:app\n")
	tests := []struct {
		spec     string
		uid, gid int
		groups   []int
		wantErr  bool
	}{
		{spec: "app", uid: 1000, gid: 1000, groups: []int{2000}},
		{spec: "1000:0", uid: 1000, gid: 0}, // an explicit group: no supplementary ones
		{spec: "4242", uid: 4242, gid: 0},
		{spec: "nobody-here", wantErr: true},
	}
	for _, tt := range tests {
		u, err := LookupUser(root, tt.spec)
		if tt.wantErr {
			if err == nil {
				t.Errorf("%s: resolved to %+v, want an error", tt.spec, u)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tt.spec, err)
			continue
		}
		if u.Uid != tt.uid || u.Gid != tt.gid || len(u.Sgids) != len(tt.groups) || (len(tt.groups) > 0 && u.Sgids[0] != tt.groups[0]) {
			t.Errorf("%s: got %d:%d %v, want %d:%d %v", tt.spec, u.Uid, u.Gid, u.Sgids, tt.uid, tt.gid, tt.groups)
		}
	}
	// A passwd that leads out of the root is refused, never followed.
	if err := os.Remove(filepath.Join(root, "etc/passwd")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/passwd", filepath.Join(root, "etc/passwd")); err != nil {
		t.Fatal(err)
	}
	if _, err := LookupUser(root, "root"); err == nil {
		t.Fatal("a passwd linking out of the root was followed")
	}
	if HasBash(root) {
		t.Fatal("HasBash on a root without bash")
	}
	if err := os.MkdirAll(filepath.Join(root, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	write("bin/bash", "")
	if !HasBash(root) {
		t.Fatal("HasBash misses /bin/bash")
	}
}

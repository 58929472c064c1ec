package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadConfigStorageRoots(t *testing.T) {
	top := t.TempDir()
	file := filepath.Join(top, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(top, "link")
	if err := os.Symlink(top, link); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(top, "not-made-yet")
	tests := []struct {
		name, value string
		want        string // the roots, comma-joined; "" = an error naming the variable
	}{
		{"default", "", "/storage,/tmp"},
		{"a root missing on this host is kept", missing + "," + top + "/", missing + "," + top},
		{"relative", "storage", ""},
		{"the host's root", "/storage,/", ""},
		{"dot-dot", "/storage/../etc", ""},
		{"a file", file, ""},
		{"a symbolic link", link, ""},
		{"only commas", ",,", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{"OPR_EXECUTOR_SECRET": "s"}
			if tc.value != "" {
				env["OPR_EXECUTOR_STORAGE_ROOTS"] = tc.value
			}
			c, err := loadConfig(envOf(env))
			if tc.want == "" {
				if err == nil || !strings.Contains(err.Error(), "OPR_EXECUTOR_STORAGE_ROOTS") {
					t.Fatalf("loadConfig = %v, want an error naming OPR_EXECUTOR_STORAGE_ROOTS", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.Join(c.StorageRoots, ","); got != tc.want {
				t.Fatalf("StorageRoots = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestDataDirOutsideStorageRoots(t *testing.T) {
	tests := []struct {
		dataDir, roots string
		ok             bool
	}{
		{"/var/lib/executor", "", true},
		{"/var/lib/executor", "/storage,/tmp", true},
		{"/tmp/executor", "", false},
		{"/storage/x/data", "/storage", false},
		{"/srv", "/srv/storage", false},
		{"/srv/data", "/srv/storage", true},
		{"/tmpfoo", "/tmp", true},
	}
	for _, tc := range tests {
		_, err := loadConfig(envOf(map[string]string{"OPR_EXECUTOR_SECRET": "s", "OPR_EXECUTOR_DATA_DIR": tc.dataDir, "OPR_EXECUTOR_STORAGE_ROOTS": tc.roots}))
		if tc.ok && err != nil {
			t.Errorf("%s in %s: %v", tc.dataDir, tc.roots, err)
		}
		if !tc.ok && (err == nil || !strings.Contains(err.Error(), "OPR_EXECUTOR_STORAGE_ROOTS")) {
			t.Errorf("%s in %s: %v, want an overlap error", tc.dataDir, tc.roots, err)
		}
	}
}

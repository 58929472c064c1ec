package main

import (
	"strings"
	"testing"
)

func TestByteSize(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{in: "", want: 7},
		{in: "1048576", want: 1 << 20},
		{in: "2GiB", want: 2 << 30},
		{in: "2gib", want: 2 << 30},
		{in: "512M", want: 512 << 20},
		{in: "512 MB", want: 512 << 20},
		{in: "1T", want: 1 << 40},
		{in: "4KiB", want: 4 << 10},
		{in: "0", want: 0},
		{in: "GiB", wantErr: true},
		{in: "-1", wantErr: true},
		{in: "1.5G", wantErr: true},
		{in: "9999999999T", wantErr: true},
		{in: "12 apples", wantErr: true},
	}
	for _, tc := range tests {
		got, err := byteSize("OPR_EXECUTOR_X", tc.in, 7)
		if tc.wantErr {
			if err == nil || !strings.Contains(err.Error(), "OPR_EXECUTOR_X") {
				t.Errorf("%q: err %v, want one naming the variable", tc.in, err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}

func TestBuildSizeLimitSetting(t *testing.T) {
	c, err := loadConfig(envOf(map[string]string{"OPR_EXECUTOR_SECRET": "s"}))
	if err != nil || c.BuildSizeLimit != 2<<30 {
		t.Fatalf("default: %d, %v", c.BuildSizeLimit, err)
	}
	c, err = loadConfig(envOf(map[string]string{"OPR_EXECUTOR_SECRET": "s", "OPR_EXECUTOR_BUILD_SIZE_LIMIT": "100MiB"}))
	if err != nil || c.BuildSizeLimit != 100<<20 {
		t.Fatalf("100MiB: %d, %v", c.BuildSizeLimit, err)
	}
	for _, bad := range []string{"0", "lots"} {
		if _, err := loadConfig(envOf(map[string]string{"OPR_EXECUTOR_SECRET": "s", "OPR_EXECUTOR_BUILD_SIZE_LIMIT": bad})); err == nil || !strings.Contains(err.Error(), "OPR_EXECUTOR_BUILD_SIZE_LIMIT") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

func TestDiskSettings(t *testing.T) {
	c, err := loadConfig(envOf(map[string]string{"OPR_EXECUTOR_SECRET": "s"}))
	if err != nil || c.DiskLimit != 1<<30 || c.DiskInodes != 0 {
		t.Fatalf("defaults: %d %d, %v", c.DiskLimit, c.DiskInodes, err)
	}
	c, err = loadConfig(envOf(map[string]string{"OPR_EXECUTOR_SECRET": "s", "OPR_EXECUTOR_DISK_LIMIT": "0"}))
	if err != nil || c.DiskLimit != 0 {
		t.Fatalf("opt-out: %d, %v", c.DiskLimit, err)
	}
	c, err = loadConfig(envOf(map[string]string{"OPR_EXECUTOR_SECRET": "s", "OPR_EXECUTOR_DISK_LIMIT": "64MiB", "OPR_EXECUTOR_DISK_INODES": "2048"}))
	if err != nil || c.DiskLimit != 64<<20 || c.DiskInodes != 2048 {
		t.Fatalf("set: %d %d, %v", c.DiskLimit, c.DiskInodes, err)
	}
	for _, env := range []map[string]string{
		{"OPR_EXECUTOR_DISK_LIMIT": "1MiB"},
		{"OPR_EXECUTOR_DISK_LIMIT": "big"},
		{"OPR_EXECUTOR_DISK_INODES": "10"},
		{"OPR_EXECUTOR_DISK_INODES": "many"},
		{"OPR_EXECUTOR_DISK_LIMIT": "0", "OPR_EXECUTOR_DISK_INODES": "4096"},
	} {
		env["OPR_EXECUTOR_SECRET"] = "s"
		if _, err := loadConfig(envOf(env)); err == nil || !strings.Contains(err.Error(), "OPR_EXECUTOR_DISK_") {
			t.Errorf("%v: %v", env, err)
		}
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

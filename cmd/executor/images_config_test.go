package main

import (
	"strings"
	"testing"

	"executor/images"
)

func TestLoadConfigImageLimitsAndArchiveDir(t *testing.T) {
	c, err := loadConfig(envOf(map[string]string{"OPR_EXECUTOR_SECRET": "s"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.ImageArchiveDir != "" || c.ImageSizeLimit != images.DefaultSizeLimit || c.ImageMaxEntries != images.DefaultMaxEntries {
		t.Errorf("defaults: archive dir %q, size %d, entries %d", c.ImageArchiveDir, c.ImageSizeLimit, c.ImageMaxEntries)
	}
	c, err = loadConfig(envOf(map[string]string{"OPR_EXECUTOR_SECRET": "s", "OPR_EXECUTOR_IMAGE_ARCHIVE_DIR": "/srv/images",
		"OPR_EXECUTOR_IMAGE_SIZE_LIMIT": "4GiB", "OPR_EXECUTOR_IMAGE_MAX_ENTRIES": "250000"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.ImageArchiveDir != "/srv/images" || c.ImageSizeLimit != 4<<30 || c.ImageMaxEntries != 250000 {
		t.Errorf("set: archive dir %q, size %d, entries %d", c.ImageArchiveDir, c.ImageSizeLimit, c.ImageMaxEntries)
	}
	for name, bad := range map[string]string{
		"OPR_EXECUTOR_IMAGE_ARCHIVE_DIR": "relative/dir",
		"OPR_EXECUTOR_IMAGE_SIZE_LIMIT":  "0",
		"OPR_EXECUTOR_IMAGE_MAX_ENTRIES": "lots",
	} {
		_, err := loadConfig(envOf(map[string]string{"OPR_EXECUTOR_SECRET": "s", name: bad}))
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s=%q: %v", name, bad, err)
		}
	}
	for _, bad := range []string{"0", "-5", "12 files"} {
		if _, err := loadConfig(envOf(map[string]string{"OPR_EXECUTOR_SECRET": "s", "OPR_EXECUTOR_IMAGE_MAX_ENTRIES": bad})); err == nil ||
			!strings.Contains(err.Error(), "OPR_EXECUTOR_IMAGE_MAX_ENTRIES") {
			t.Errorf("OPR_EXECUTOR_IMAGE_MAX_ENTRIES=%q: %v", bad, err)
		}
	}
}

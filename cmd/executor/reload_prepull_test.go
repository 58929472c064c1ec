package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"executor/images"
)

// A SIGHUP that adds images to OPR_EXECUTOR_IMAGES pulls those (and only those) in the background; one that
// adds none pulls nothing. The images here are refused by the store at once (a host path, with no archive dir
// configured), which the pre-pull logs: no registry is asked.
func TestReloadPullsAddedImages(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	store, err := images.New(images.Config{Root: t.TempDir(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	envFile := filepath.Join(t.TempDir(), "executor.env")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(envFile, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	start := "OPR_EXECUTOR_SECRET=s\nOPR_EXECUTOR_IMAGES=dir:/nowhere/a\n"
	write(start)
	processEnv := map[string]string{"OPR_EXECUTOR_SECRET": "s", "OPR_EXECUTOR_IMAGES": "dir:/nowhere/a", "OPR_EXECUTOR_ENV_FILE": envFile}
	cfg, err := loadConfig(envOf(processEnv))
	if err != nil {
		t.Fatal(err)
	}
	r, err := newReloader(reloadConfig{Config: cfg, Getenv: envOf(processEnv), Level: new(slog.LevelVar), Images: store, Notify: newNotifier(log), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		file   string
		pulled []string // the images whose pre-pull failed
	}{
		{file: "OPR_EXECUTOR_SECRET=s\nOPR_EXECUTOR_IMAGES=dir:/nowhere/a,dir:/nowhere/b\n", pulled: []string{"dir:/nowhere/b"}},
		{file: start},
	}
	for _, st := range steps {
		write(st.file)
		logs.Reset()
		r.reload(context.Background())
		r.wait()
		var pulled []string
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, "pre-pull failed") {
				_, img, _ := strings.Cut(l, " image=")
				img, _, _ = strings.Cut(img, " ")
				pulled = append(pulled, img)
			}
		}
		if strings.Join(pulled, " ") != strings.Join(st.pulled, " ") {
			t.Errorf("file %q: pre-pulled %q, want %q\n%s", st.file, pulled, st.pulled, logs.String())
		}
	}
}

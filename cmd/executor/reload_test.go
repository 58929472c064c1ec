package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestReadEnvFile: systemd's EnvironmentFile= syntax, and lines systemd
// would skip are errors naming the line.
func TestReadEnvFile(t *testing.T) {
	tests := []struct {
		name, file string
		want       map[string]string
		err        string
	}{
		{"plain, comments and blanks", "# c\n; c\n\nA=1\n  B = two words  \nC=\n", map[string]string{"A": "1", "B": "two words", "C": ""}, ""},
		{"quotes", `A="x y"` + "\n" + `B='a "b"'` + "\n" + `C="q\"\\\$"` + "\n", map[string]string{"A": "x y", "B": `a "b"`, "C": `q"\$`}, ""},
		{"a backslash escapes only \" \\ $ and `", `A="a\b\"c\\d\$e\` + "`" + `f\"` + "\n", map[string]string{"A": `a\b"c\d$e` + "`" + `f\`}, ""},
		{"empty quotes", "A=\"\"\nB=''\n", map[string]string{"A": "", "B": ""}, ""},
		{"a lone quote", "A=\"\n", nil, ":1: A: unterminated \" quote"},
		{"continuation", "A=one\\\n  two\nB=3\n", map[string]string{"A": "onetwo", "B": "3"}, ""},
		{"later line wins", "A=1\nA=2\n", map[string]string{"A": "2"}, ""},
		{"no equals sign", "A=1\nexport\n", nil, ":2: not NAME=VALUE"},
		{"a continued line counts as the lines it spans", "A=one\\\n  two\\\n  three\nexport\n", nil, ":4: not NAME=VALUE"},
		{"bad name", "1A=x\n", nil, ":1: not NAME=VALUE"},
		{"unterminated quote", "A=\"x\n", nil, ":1: A: unterminated \" quote"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "env")
			if err := os.WriteFile(p, []byte(tt.file), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := readEnvFile(p)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
	if _, err := readEnvFile(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("a missing file read without error")
	}
}

// TestReload: a SIGHUP applies the file's log level and pre-pull list,
// names (never shows) the other variables that changed as needing a
// restart, sends a variable removed from the file back to its default, and
// leaves everything as it was when the file is bad.
func TestReload(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	dir := t.TempDir()
	envFile := filepath.Join(dir, "executor.env")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(envFile, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	// What systemd gave the daemon: the file's values plus one Environment= line.
	start := "OPR_EXECUTOR_SECRET=first-secret\nOPR_EXECUTOR_LOG_LEVEL=info\nOPR_EXECUTOR_IMAGES=a:1\n"
	write(start)
	processEnv := map[string]string{
		"OPR_EXECUTOR_SECRET": "first-secret", "OPR_EXECUTOR_LOG_LEVEL": "info", "OPR_EXECUTOR_IMAGES": "a:1",
		"OPR_EXECUTOR_ENV_FILE": envFile, "OPR_EXECUTOR_RUNTIMES": "node-18.0", "OPR_EXECUTOR_RUNTIME_VERSIONS": "v5",
	}
	cfg, err := loadConfig(envOf(processEnv))
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	level := new(slog.LevelVar)
	r, err := newReloader(reloadConfig{Config: cfg, Getenv: envOf(processEnv), Level: level, Notify: newNotifier(log), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := r.prePullImages(), []string{"a:1", "openruntimes/node:v5-18.0"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("pre-pull list at start %v, want %v", got, want)
	}
	ctx := context.Background()

	steps := []struct {
		name        string
		file        string
		level       slog.Level
		prePull     []string
		logs, never []string
	}{
		{
			name:  "log level, images and the secret change",
			file:  "OPR_EXECUTOR_SECRET=second-secret\nOPR_EXECUTOR_LOG_LEVEL=debug\nOPR_EXECUTOR_IMAGES=a:1,b:2\n",
			level: slog.LevelDebug, prePull: []string{"a:1", "b:2", "openruntimes/node:v5-18.0"},
			logs:  []string{"log level changed", "from=INFO to=DEBUG", "added=[b:2]", "take effect only at a restart", "settings=[OPR_EXECUTOR_SECRET]"},
			never: []string{"second-secret", "first-secret"},
		},
		{
			name:  "a bad value changes nothing",
			file:  "OPR_EXECUTOR_SECRET=second-secret\nOPR_EXECUTOR_LOG_LEVEL=loud\nOPR_EXECUTOR_IMAGES=c:3\n",
			level: slog.LevelDebug, prePull: []string{"a:1", "b:2", "openruntimes/node:v5-18.0"},
			logs: []string{"would not start the daemon; nothing changed", "OPR_EXECUTOR_LOG_LEVEL"},
		},
		{
			name:  "an unparsable file changes nothing",
			file:  "OPR_EXECUTOR_LOG_LEVEL=error\nnot a setting\n",
			level: slog.LevelDebug, prePull: []string{"a:1", "b:2", "openruntimes/node:v5-18.0"},
			logs: []string{"environment file not reloaded; nothing changed", ":2: not NAME=VALUE"},
		},
		{
			name:  "removed from the file: the default; a typo is named",
			file:  "OPR_EXECUTOR_SECRET=second-secret\nOPR_EXECUTOR_LOG_LEVL=warn\n",
			level: slog.LevelInfo, prePull: []string{"openruntimes/node:v5-18.0"},
			logs: []string{"from=DEBUG to=INFO", "removed=\"[a:1 b:2]\"", "name=OPR_EXECUTOR_LOG_LEVL", "settings=[OPR_EXECUTOR_SECRET]"},
		},
		{
			name:  "back to the start file: nothing needs a restart",
			file:  start,
			level: slog.LevelInfo, prePull: []string{"a:1", "openruntimes/node:v5-18.0"},
			logs:  []string{"applied=\"[OPR_EXECUTOR_IMAGES OPR_EXECUTOR_LOG_LEVEL]\" needRestart=[]"},
			never: []string{"take effect only at a restart", "log level changed"},
		},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			write(st.file)
			logs.Reset()
			r.reload(ctx)
			out := logs.String()
			if level.Level() != st.level {
				t.Errorf("level %v, want %v", level.Level(), st.level)
			}
			if got := r.prePullImages(); !reflect.DeepEqual(got, st.prePull) {
				t.Errorf("pre-pull list %v, want %v", got, st.prePull)
			}
			for _, s := range st.logs {
				if !strings.Contains(out, s) {
					t.Errorf("log lacks %q:\n%s", s, out)
				}
			}
			for _, s := range st.never {
				if strings.Contains(out, s) {
					t.Errorf("log has %q:\n%s", s, out)
				}
			}
		})
	}
	r.wait()
}

// TestNewReloader: an environment file the daemon cannot read stops it at
// start; one that disagrees with its environment is reported by name, one
// that agrees is not reported.
func TestNewReloader(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.env")
	cfg := &config{EnvFile: missing}
	log := slog.New(slog.DiscardHandler)
	if _, err := newReloader(reloadConfig{Config: cfg, Getenv: envOf(nil), Level: new(slog.LevelVar), Notify: newNotifier(log), Logger: log}); err == nil || !strings.Contains(err.Error(), "OPR_EXECUTOR_ENV_FILE") {
		t.Fatalf("missing file: error %v, want one naming OPR_EXECUTOR_ENV_FILE", err)
	}
	other := filepath.Join(dir, "other.env")
	if err := os.WriteFile(other, []byte("OPR_EXECUTOR_LOG_LEVEL=debug\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	log = slog.New(slog.NewTextHandler(&logs, nil))
	cfg.EnvFile = other
	if _, err := newReloader(reloadConfig{Config: cfg, Getenv: envOf(map[string]string{"OPR_EXECUTOR_LOG_LEVEL": "info"}), Level: new(slog.LevelVar), Notify: newNotifier(log), Logger: log}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "settings=[OPR_EXECUTOR_LOG_LEVEL]") {
		t.Errorf("a file that disagrees with the environment is not reported:\n%s", logs.String())
	}
	logs.Reset()
	if _, err := newReloader(reloadConfig{Config: cfg, Getenv: envOf(map[string]string{"OPR_EXECUTOR_LOG_LEVEL": "debug"}), Level: new(slog.LevelVar), Notify: newNotifier(log), Logger: log}); err != nil {
		t.Fatal(err)
	}
	if logs.Len() != 0 {
		t.Errorf("a file that agrees with the environment is reported:\n%s", logs.String())
	}
}

package protocol

import (
	"errors"
	"maps"
	"slices"
	"testing"
)

func TestParseVersion(t *testing.T) {
	tests := []struct {
		in   string
		want Version
		ok   bool
	}{
		{"v2", V2, true},
		{"v3", V3, true},
		{"v4", V4, true},
		{"v5", V5, true},
		{"", "", false},
		{"v1", "", false},
		{"v6", "", false},
		{"V4", "", false},
		{"4", "", false},
		{" v4", "", false},
		{"v4 ", "", false},
	}
	for _, tt := range tests {
		got, err := ParseVersion(tt.in)
		if tt.ok {
			if err != nil || got != tt.want {
				t.Errorf("ParseVersion(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
			continue
		}
		if !errors.Is(err, ErrUnknownVersion) || got != "" {
			t.Errorf("ParseVersion(%q) = %q, %v; want ErrUnknownVersion", tt.in, got, err)
		}
	}
}

func TestVersions(t *testing.T) {
	want := []Version{V2, V3, V4, V5}
	got := Versions()
	if !slices.Equal(got, want) {
		t.Fatalf("Versions() = %v, want %v", got, want)
	}
	got[0] = "changed"
	if Versions()[0] != V2 {
		t.Fatal("Versions returned its own table")
	}
}

func TestVersionRules(t *testing.T) {
	tests := []struct {
		v                  Version
		codeDir            string
		artifact           string
		logsDir            string
		workDir, workEmpty string // for an image dir of /usr/local/server and of ""
		warningsAfter      bool
		timestamped        bool
		streams            bool
	}{
		{V2, "/usr/code", "/usr/code/code.tar.gz", "", "/usr/code", "/usr/code", true, false, false},
		{V3, "/mnt/code", "/mnt/code/code.tar.gz", "", "/usr/local/server", "/", false, false, true},
		{V4, "/mnt/code", "/mnt/code/code.tar.gz", "/mnt/logs", "/usr/local/server", "/", false, false, true},
		{V5, "/mnt/code", "/mnt/code/code.tar.gz", "/mnt/logs", "/usr/local/server", "/", false, true, true},
		// Unknown versions follow the newest.
		{"v9", "/mnt/code", "/mnt/code/code.tar.gz", "/mnt/logs", "/usr/local/server", "/", false, true, true},
	}
	for _, tt := range tests {
		v := tt.v
		check := func(what string, got, want any) {
			t.Helper()
			if got != want {
				t.Errorf("%s.%s = %v, want %v", v, what, got, want)
			}
		}
		check("CodeDir()", v.CodeDir(), tt.codeDir)
		check("ArtifactPath()", v.ArtifactPath(), tt.artifact)
		check("LogsDir()", v.LogsDir(), tt.logsDir)
		check("WorkingDir(/usr/local/server)", v.WorkingDir("/usr/local/server"), tt.workDir)
		check("WorkingDir(\"\")", v.WorkingDir(""), tt.workEmpty)
		check("WarningsAfterOutput()", v.WarningsAfterOutput(), tt.warningsAfter)
		check("TimestampedOutput()", v.TimestampedOutput(), tt.timestamped)
		check("StreamsBuildLogs()", v.StreamsBuildLogs(), tt.streams)
	}
}

// TestVersionsComplete keeps the table whole: a version added without one of
// its rules would be half another version.
func TestVersionsComplete(t *testing.T) {
	for _, r := range versions {
		if r.version == "" || r.codeDir == "" || r.secretVar == "" || r.entrypointVar == "" || r.hostnameVar == "" {
			t.Errorf("version %q lacks a rule: %+v", r.version, r)
		}
		if r.envelope && (r.headerLogs || r.logsDir != "") {
			t.Errorf("version %q: an envelope carries its logs itself", r.version)
		}
	}
}

func TestEnv(t *testing.T) {
	user := map[string]string{
		"APPWRITE_FUNCTION_ID":        "fn",
		"OPEN_RUNTIMES_SECRET":        "user-secret",
		"INTERNAL_RUNTIME_KEY":        "user-key",
		"OPEN_RUNTIMES_CPUS":          "99",
		"CI":                          "false",
		"INTERNAL_RUNTIME_ENTRYPOINT": "user.js",
	}
	params := func(outDir string, cpus float64) EnvParams {
		return EnvParams{
			Variables:       user,
			Secret:          "s3cret",
			Entrypoint:      "index.js",
			Hostname:        "executor-host",
			OutputDirectory: outDir,
			CPUs:            cpus,
			MemoryMB:        512,
		}
	}
	tests := []struct {
		name string
		v    Version
		p    EnvParams
		want map[string]string
	}{
		{"v2", V2, params("", 1), map[string]string{
			"APPWRITE_FUNCTION_ID":        "fn",
			"OPEN_RUNTIMES_SECRET":        "user-secret", // not v2's: the user's stays
			"OPEN_RUNTIMES_CPUS":          "99",
			"INTERNAL_RUNTIME_KEY":        "s3cret",
			"INTERNAL_RUNTIME_ENTRYPOINT": "index.js",
			"INERNAL_EXECUTOR_HOSTNAME":   "executor-host",
			"CI":                          "true",
		}},
		{"v2 with output directory", V2, params("dist", 1), map[string]string{
			"APPWRITE_FUNCTION_ID":           "fn",
			"OPEN_RUNTIMES_SECRET":           "user-secret",
			"OPEN_RUNTIMES_CPUS":             "99",
			"INTERNAL_RUNTIME_KEY":           "s3cret",
			"INTERNAL_RUNTIME_ENTRYPOINT":    "index.js",
			"INERNAL_EXECUTOR_HOSTNAME":      "executor-host",
			"OPEN_RUNTIMES_OUTPUT_DIRECTORY": "dist",
			"CI":                             "true",
		}},
		{"v3", V3, params("0", 2), map[string]string{
			"APPWRITE_FUNCTION_ID":        "fn",
			"INTERNAL_RUNTIME_KEY":        "user-key",
			"INTERNAL_RUNTIME_ENTRYPOINT": "user.js",
			"OPEN_RUNTIMES_CPUS":          "99", // v3 sets no resources
			"OPEN_RUNTIMES_SECRET":        "s3cret",
			"OPEN_RUNTIMES_ENTRYPOINT":    "index.js",
			"OPEN_RUNTIMES_HOSTNAME":      "executor-host",
			"CI":                          "true",
		}},
		{"v4", V4, params("dist", 0.5), map[string]string{
			"APPWRITE_FUNCTION_ID":           "fn",
			"INTERNAL_RUNTIME_KEY":           "user-key",
			"INTERNAL_RUNTIME_ENTRYPOINT":    "user.js",
			"OPEN_RUNTIMES_SECRET":           "s3cret",
			"OPEN_RUNTIMES_ENTRYPOINT":       "index.js",
			"OPEN_RUNTIMES_HOSTNAME":         "executor-host",
			"OPEN_RUNTIMES_CPUS":             "0.5",
			"OPEN_RUNTIMES_MEMORY":           "512",
			"OPEN_RUNTIMES_OUTPUT_DIRECTORY": "dist",
			"CI":                             "true",
		}},
		{"v5", V5, params("0", 2), map[string]string{
			"APPWRITE_FUNCTION_ID":        "fn",
			"INTERNAL_RUNTIME_KEY":        "user-key",
			"INTERNAL_RUNTIME_ENTRYPOINT": "user.js",
			"OPEN_RUNTIMES_SECRET":        "s3cret",
			"OPEN_RUNTIMES_ENTRYPOINT":    "index.js",
			"OPEN_RUNTIMES_HOSTNAME":      "executor-host",
			"OPEN_RUNTIMES_CPUS":          "2",
			"OPEN_RUNTIMES_MEMORY":        "512",
			"CI":                          "true",
		}},
		{"v5 no user variables", V5, EnvParams{Secret: "s", CPUs: 1.25, MemoryMB: 0}, map[string]string{
			"OPEN_RUNTIMES_SECRET":     "s",
			"OPEN_RUNTIMES_ENTRYPOINT": "",
			"OPEN_RUNTIMES_HOSTNAME":   "",
			"OPEN_RUNTIMES_CPUS":       "1.25",
			"OPEN_RUNTIMES_MEMORY":     "0",
			"CI":                       "true",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := maps.Clone(tt.p.Variables)
			got := tt.v.Env(tt.p)
			if !maps.Equal(got, tt.want) {
				t.Errorf("Env =\n%v\nwant\n%v", got, tt.want)
			}
			if !maps.Equal(tt.p.Variables, before) {
				t.Error("Env changed the user's variables")
			}
		})
	}
}

func TestCommand(t *testing.T) {
	entry := []string{"/docker-entrypoint.sh"}
	cmd := []string{"sh", "/usr/local/src/start.sh"}
	idle := []string{"tail", "-f", "/dev/null"}
	tests := []struct {
		name              string
		v                 Version
		entry, cmd        []string
		runtimeEntrypoint string
		shell             string
		hasBuild          bool
		want              []string
	}{
		{"runtimeEntrypoint under bash", V4, entry, cmd, "helpers/start.sh x", "bash", false, []string{"bash", "-c", "helpers/start.sh x"}},
		{"runtimeEntrypoint under sh", V3, nil, nil, "helpers/start.sh x", "sh", true, []string{"sh", "-c", "helpers/start.sh x"}},
		{"runtimeEntrypoint without a shell", V5, nil, nil, "start", "", false, []string{"sh", "-c", "start"}},
		{"v2 runtimeEntrypoint wins over the image", V2, entry, cmd, "start", "bash", false, []string{"bash", "-c", "start"}},
		{"v2 runs the image's entrypoint and cmd", V2, entry, cmd, "", "bash", false, []string{"/docker-entrypoint.sh", "sh", "/usr/local/src/start.sh"}},
		{"v2 runs the image's cmd alone", V2, nil, cmd, "", "sh", false, cmd},
		{"v2 without image command idles", V2, nil, nil, "", "sh", false, idle},
		{"v2 building idles", V2, entry, cmd, "", "sh", true, idle},
		{"v3 idles", V3, entry, cmd, "", "sh", false, idle},
		{"v4 idles", V4, entry, cmd, "", "bash", false, idle},
		{"v5 building idles", V5, entry, cmd, "", "bash", true, idle},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.v.Command(tt.entry, tt.cmd, tt.runtimeEntrypoint, tt.shell, tt.hasBuild)
			if !slices.Equal(got, tt.want) {
				t.Errorf("Command = %q, want %q", got, tt.want)
			}
		})
	}
	// The image's slices are the image's: appending to the result must not
	// write into them.
	e := make([]string, 1, 4)
	e[0] = "a"
	got := V2.Command(e, []string{"b"}, "", "sh", false)
	got[0] = "changed"
	if e[0] != "a" {
		t.Error("Command shares its result with the image's entrypoint")
	}
}

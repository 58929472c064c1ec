package main

import (
	"strings"
	"testing"
)

// What "executor help COMMAND" prints: the usage line ([FLAGS] only for a command that takes flags), the summary,
// the command's longer text when it has one, and its flags with their defaults (none shown for an empty or false
// default).
func TestCommandHelpText(t *testing.T) {
	tests := []struct {
		command string
		want    string // the whole output, or its beginning when flags is set
		flags   []string
	}{
		{command: "version", want: "Usage: executor version\n\nPrint the version, commit and build date.\n"},
		{command: "help", want: "Usage: executor help [COMMAND]\n\nPrint this help, or a command's.\n"},
		{command: "rm", want: "Usage: executor rm [FLAGS] ID...\n\nRemove runtimes.\n" +
			"Stops and removes each runtime, as DELETE /v1/runtimes/ID does. Exits 1 if any could not be removed.\n\nFlags:\n",
			flags: []string{
				"  --addr HOST:PORT     the daemon's API as HOST:PORT or an http(s) URL (default: OPR_EXECUTOR_LISTEN)",
				"  --key KEY            the API KEY (default: OPR_EXECUTOR_SECRET, which unlike a flag other users cannot read)",
			}},
		{command: "logs", want: "Usage: executor logs [FLAGS] ID\n\nFollow a runtime's build output until the build ends.\n",
			flags: []string{
				"  --addr HOST:PORT     the daemon's API as HOST:PORT or an http(s) URL (default: OPR_EXECUTOR_LISTEN)",
				"  --key KEY            the API KEY (default: OPR_EXECUTOR_SECRET, which unlike a flag other users cannot read)",
				"  --timeout SECONDS    stop following after SECONDS (default 600)",
				"  --timestamps         prefix each line with its time (v5 runtimes)",
			}},
	}
	for _, tt := range tests {
		t.Run(tt.command, func(t *testing.T) {
			r := runTestCLI(t, nil, "help", tt.command)
			if r.code != 0 || r.stderr != "" {
				t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
			}
			if tt.flags == nil {
				if r.stdout != tt.want {
					t.Errorf("got\n%s\nwant\n%s", r.stdout, tt.want)
				}
				return
			}
			if !strings.HasPrefix(r.stdout, tt.want) {
				t.Errorf("got\n%s\nwant it to start with\n%s", r.stdout, tt.want)
			}
			_, flags, ok := strings.Cut(r.stdout, "\nFlags:\n")
			if !ok {
				t.Fatalf("no flags in\n%s", r.stdout)
			}
			if got := strings.TrimSuffix(flags, "\n"); got != strings.Join(tt.flags, "\n") {
				t.Errorf("flags:\n%s\nwant\n%s", got, strings.Join(tt.flags, "\n"))
			}
		})
	}
}

// --help names the address the commands use when neither --addr nor OPR_EXECUTOR_LISTEN is given: the daemon's
// own default.
func TestUsageNamesDefaultAddress(t *testing.T) {
	r := runTestCLI(t, nil, "--help")
	if want := "reads it, 0.0.0.0:9900 when unset;"; r.code != 0 || !strings.Contains(r.stdout, want) {
		t.Errorf("exit %d, stdout lacks %q:\n%s", r.code, want, r.stdout)
	}
}

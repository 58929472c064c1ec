package main

import (
	"bytes"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// What the notifier logs: an error for a WATCHDOG_USEC that is not a duration (the watchdog is then off), a
// warning for a notification the service manager did not get; nothing when all is well.
func TestNotifierLogs(t *testing.T) {
	tests := []struct {
		name     string
		watchdog string // WATCHDOG_USEC
		noSocket bool   // NOTIFY_SOCKET names a path nothing listens on
		want     []string
	}{
		{name: "all well", watchdog: "2000000"},
		{name: "no watchdog", watchdog: ""},
		{name: "bad WATCHDOG_USEC", watchdog: "soon",
			want: []string{`level=ERROR msg="WATCHDOG_USEC from the service manager is not a duration: not pinging the watchdog"`}},
		{name: "no manager on the socket", watchdog: "", noSocket: true,
			want: []string{`level=WARN msg="sd_notify: the service manager did not get the notification" state="STATUS=Testing"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sock := listenNotify(t)
			if tt.noSocket {
				t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "gone"))
			}
			t.Setenv("WATCHDOG_USEC", tt.watchdog)
			t.Setenv("WATCHDOG_PID", "")
			var logs bytes.Buffer
			n := newNotifier(slog.New(slog.NewTextHandler(&logs, nil)))
			n.status("Testing")
			if !tt.noSocket {
				sock.next(t, 10*time.Second, "STATUS=Testing")
			}
			lines := strings.Split(strings.TrimSuffix(logs.String(), "\n"), "\n")
			if logs.Len() == 0 {
				lines = nil
			}
			if len(lines) != len(tt.want) {
				t.Fatalf("logged %q, want %q", lines, tt.want)
			}
			for i, want := range tt.want {
				if !strings.Contains(lines[i], want) {
					t.Errorf("logged %q, want %q", lines[i], want)
				}
			}
		})
	}
}

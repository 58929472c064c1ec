package e2e

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestRootlessNotify: a rootless daemon under a service manager says
// READY=1 once its API answers on the host's port, and its watchdog is fed,
// although the daemon itself runs in a network namespace where that port
// is not reachable (the host process probes and notifies).
func TestRootlessNotify(t *testing.T) {
	l := listenNotify(t)
	// The user's daemon must reach the socket, as it reaches the user
	// manager's under /run/user/UID.
	for _, p := range []string{filepath.Dir(filepath.Dir(l.path)), filepath.Dir(l.path), l.path} {
		if err := os.Chmod(p, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	u := rootlessUser(t, false)
	x := startRootless(t, u, "NOTIFY_SOCKET="+l.path, "WATCHDOG_USEC=2000000")
	l.next(t, 30*time.Second, "READY=1")
	// Pings come every half of WATCHDOG_USEC, each after the API answered.
	for i := 0; i < 2; i++ {
		l.next(t, 10*time.Second, "WATCHDOG=1")
	}
	x.stop()
	l.next(t, 30*time.Second, "STOPPING=1")
}

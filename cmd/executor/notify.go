package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// notifier tells the service manager how the daemon is doing, over the
// sd_notify(3) protocol: READY=1 once the API answers, STOPPING=1 at
// shutdown, RELOADING=1 around a SIGHUP reload, STATUS= lines for
// `systemctl status`, and WATCHDOG=1 pings while the API answers when the
// unit has WatchdogSec=. Without NOTIFY_SOCKET (not started by systemd, or a
// unit of another Type) every method does nothing.
type notifier struct {
	log *slog.Logger
	// enabled: NOTIFY_SOCKET is set. It stays set in the environment, which
	// libcontainer's init and mkfs inherit: harmless, as NotifyAccess=main
	// makes systemd ignore every process but the daemon.
	enabled bool
	// watchdog is WATCHDOG_USEC, 0 when systemd watches nothing.
	watchdog time.Duration

	mu sync.Mutex
	// stopWatchdog ends the ping loop; nil before ready and after stopping.
	stopWatchdog context.CancelFunc
	// readySent: READY=1 went out; a reload before it says nothing.
	readySent bool
	stopped   bool
	// serving is the STATUS= line of a serving daemon.
	serving string
	// hostReady: this is a rootless daemon, whose host process says
	// READY=1 and feeds the watchdog (rootless.go). From inside its own
	// network namespace the daemon cannot reach its API port, which is
	// the host's; it only says how it is doing (STATUS=, RELOADING=1,
	// STOPPING=1), which the user unit's NotifyAccess=all admits.
	hostReady bool
}

func newNotifier(log *slog.Logger) *notifier {
	n := &notifier{log: log}
	n.enabled = os.Getenv("NOTIFY_SOCKET") != ""
	// Unset: a child started with the daemon's environment must not think
	// the watchdog is its to feed (WATCHDOG_PID covers only systemd's own
	// check). A bad value turns the watchdog off here; systemd will then
	// restart the daemon, which the log explains.
	wd, err := daemon.SdWatchdogEnabled(true)
	if err != nil {
		log.Error("WATCHDOG_USEC from the service manager is not a duration: not pinging the watchdog", "err", err)
	}
	if n.enabled {
		n.watchdog = wd
	}
	return n
}

// send writes one notification; failures are logged, never fatal: the
// service manager going away must not take the daemon with it.
func (n *notifier) send(lines ...string) {
	if !n.enabled {
		return
	}
	if _, err := daemon.SdNotify(false, strings.Join(lines, "\n")); err != nil {
		n.log.Warn("sd_notify: the service manager did not get the notification", "state", lines[0], "err", err)
	}
}

// status sets the STATUS= line systemctl status shows.
func (n *notifier) status(format string, args ...any) {
	n.send("STATUS=" + fmt.Sprintf(format, args...))
}

// ready waits until the API at addr answers GET /v1/health, then says
// READY=1, and from then on pings the watchdog while it keeps answering. It
// returns at once; ctx ends the pinging. Readiness is the API answering, not
// the listener being bound: systemd orders units started After= this one on
// READY=1, and they will call the API.
func (n *notifier) ready(ctx context.Context, addr net.Addr) {
	if !n.enabled {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stopped || n.stopWatchdog != nil {
		return
	}
	n.serving = "Serving the API on " + addr.String()
	if n.hostReady {
		n.readySent = true
		n.send("STATUS=" + n.serving)
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	n.stopWatchdog = cancel
	probe := healthProbe(addr)
	go func() {
		for {
			pctx, done := context.WithTimeout(ctx, 5*time.Second)
			err := probe(pctx)
			done()
			if err == nil {
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
		// Under the lock: a STOPPING=1 is never followed by READY=1.
		n.mu.Lock()
		if n.stopped {
			n.mu.Unlock()
			return
		}
		n.readySent = true
		n.send("READY=1", "STATUS="+n.serving)
		n.mu.Unlock()
		if n.watchdog > 0 {
			n.log.Info("pinging the service manager's watchdog while the API answers", "every", n.watchdog/2, "watchdogSec", n.watchdog)
			n.pingWhileHealthy(ctx, n.watchdog, probe)
		}
	}()
}

// pingWhileHealthy sends WATCHDOG=1 every half of the watchdog time, each
// time only if probe (the API answering) succeeded just before: a daemon
// whose accept loop or handlers are stuck stops pinging, and systemd
// (WatchdogSec=, Restart=) aborts and restarts it. A probe gets a quarter of
// the watchdog time, so a slow but live API still pings within the limit.
func (n *notifier) pingWhileHealthy(ctx context.Context, watchdog time.Duration, probe func(context.Context) error) {
	every := watchdog / 2
	tick := time.NewTicker(every)
	defer tick.Stop()
	failing := false
	for {
		pctx, cancel := context.WithTimeout(ctx, watchdog/4)
		err := probe(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		switch {
		case err == nil:
			n.send("WATCHDOG=1")
			if failing {
				n.log.Info("watchdog: the API answers again; pinging the service manager again")
				n.status("%s", n.serving)
				failing = false
			}
		case !failing:
			n.log.Error("watchdog: the API does not answer its own health check; not pinging the service manager, which restarts the daemon if this lasts", "watchdogSec", watchdog, "err", err)
			n.status("The API does not answer its health check")
			failing = true
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// stopping says STOPPING=1, with what the shutdown does next, and ends the
// watchdog pings: systemd does not watch a stopping unit (TimeoutStopSec=
// bounds the drain instead).
func (n *notifier) stopping(drain time.Duration) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.stopped = true
	if n.stopWatchdog != nil {
		n.stopWatchdog()
		n.stopWatchdog = nil
	}
	n.send("STOPPING=1", fmt.Sprintf("STATUS=Stopping: draining requests (at most %s), then removing every runtime", drain))
}

// reloading brackets a SIGHUP reload: RELOADING=1 now, READY=1 when the
// returned func is called. MONOTONIC_USEC lets systemd 253 and newer tell
// this reload from an earlier one; older ones ignore it.
func (n *notifier) reloading() (done func()) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.stopped || !n.readySent {
		// Not READY yet, or stopping: a RELOADING=1 would put the unit
		// in a state it only leaves on READY=1.
		return func() {}
	}
	n.send("RELOADING=1", strings.TrimSuffix(daemon.SdNotifyMonotonicUsec(), "\n"), "STATUS=Reloading (SIGHUP)")
	return func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		if !n.stopped {
			n.send("READY=1", "STATUS="+n.serving)
		}
	}
}

// healthProbe returns a check that GET /v1/health at the listener's
// address answers. Any answer will do: a 503 (draining, or a part of the
// host the health check found broken) still proves the accept loop and the
// handlers alive, which is what the watchdog is about; restarting the daemon
// over a broken bridge or a full disk would only kill its runtimes. A
// listener on every address is reached through loopback. Each probe opens a
// new connection, so a stuck accept loop is seen, and no proxy from the
// environment is ever used.
func healthProbe(addr net.Addr) func(context.Context) error {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return func(context.Context) error { return err }
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
		if ip.To4() == nil {
			host = "::1"
		}
	}
	url := "http://" + net.JoinHostPort(host, port) + "/v1/health"
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		return err
	}
}

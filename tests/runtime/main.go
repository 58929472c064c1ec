// Command runtime is the Open Runtimes test runtime: a small static HTTP server
// that speaks the runtime side of the executor contract (protocols v2, v3, v4
// and v5) and exposes behaviours the executor's end-to-end tests need (log
// files, timeouts, binary bodies, cgroup limits, filesystem probes, crashes).
//
// It is built with CGO_ENABLED=0 so that it runs on a busybox-only root
// filesystem inside the test runtime images (see tests/testenv).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// readyMessage is what Open Runtimes servers print once they accept
// connections; executor tests count it in container logs.
const readyMessage = "HTTP server successfully started!"

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "runtime:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("runtime", flag.ContinueOnError)
	protocol := fs.String("protocol", ProtocolV5, "runtime protocol to speak: v5, v4, v3 or v2")
	listen := fs.String("listen", ":3000", "address to listen on")
	logsDir := fs.String("logs-dir", "/mnt/logs", "directory for v4/v5 per-request log files")
	functionDir := fs.String("function-dir", "/usr/local/server/src/function", "directory holding the user function")
	mksock := fs.String("mksock", "", "only leave a unix socket file at this path and exit (for attacker tests)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *mksock != "" {
		return makeSocket(*mksock)
	}

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	handler, err := NewHandler(Config{
		Protocol:    *protocol,
		LogsDir:     *logsDir,
		FunctionDir: *functionDir,
		Logger:      logger,
	})
	if err != nil {
		return err
	}

	// SIGTERM is how the executor (and libcontainer) stop a runtime; exiting 0
	// keeps "clean stop" distinguishable from a crash in executor tests.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *listen, err)
	}
	// Print only once the socket accepts connections, like the real servers.
	fmt.Fprintln(os.Stdout, readyMessage)

	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 30 * time.Second,
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	select {
	case err := <-serveErr:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}

	shutdownCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		// In-flight requests (e.g. /sleep) must not turn a requested stop
		// into a failure exit status.
		logger.Warn("shutdown", "err", err)
	}
	return nil
}

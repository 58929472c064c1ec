package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"executor/api"
	"executor/api/metrics"
	"executor/images"
	"executor/sandbox"
	"executor/storage"
)

// metricsServer serves the Prometheus metrics on OPR_EXECUTOR_METRICS_LISTEN,
// a listener of its own: GET /metrics and nothing else, without the key
// (bind it where only Prometheus reaches). A nil *metricsServer measures
// and serves nothing.
type metricsServer struct {
	ln   net.Listener
	m    *metrics.Metrics
	srv  *http.Server
	done chan struct{}
	log  *slog.Logger
}

// listenMetrics takes the metrics port as cfg says: nil when none is set.
// It is called with the API's listener, before anything else is touched, so
// that a port that is taken stops the daemon before it harms anything.
func listenMetrics(cfg *config, log *slog.Logger) (*metricsServer, error) {
	if cfg.MetricsListen == "" {
		return nil, nil
	}
	ln, err := listenMetricsPort(cfg.MetricsListen)
	if err != nil {
		return nil, fmt.Errorf("OPR_EXECUTOR_METRICS_LISTEN %s: %w", cfg.MetricsListen, err)
	}
	return &metricsServer{ln: ln, m: metrics.New(), log: log}, nil
}

// listenMetricsPort binds addr, or takes the listener the host process of a
// rootless daemon bound in the host's network namespace (this process's own
// is reachable from nowhere).
func listenMetricsPort(addr string) (net.Listener, error) {
	if rootlessStage() != stageRun {
		return net.Listen("tcp", addr)
	}
	if os.Getenv(hostMetricsEnv) == "" {
		return nil, errors.New("the host process handed down no metrics listener")
	}
	f := os.NewFile(metricsFD, "metrics listener")
	defer f.Close()
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("the metrics listener of the host process: %w", err)
	}
	return ln, nil
}

func (s *metricsServer) sandboxObserver() sandbox.Observer {
	if s == nil {
		return nil
	}
	return s.m.Sandbox()
}

func (s *metricsServer) apiObserver() api.Observer {
	if s == nil {
		return nil
	}
	return s.m.API()
}

func (s *metricsServer) imagesObserver() images.Observer {
	if s == nil {
		return nil
	}
	return s.m.Images()
}

func (s *metricsServer) storageObserver() storage.Observer {
	if s == nil {
		return nil
	}
	return s.m.Storage()
}

// serve starts serving, with what is read at each scrape from src.
func (s *metricsServer) serve(src metrics.Sources) error {
	if s == nil {
		return nil
	}
	if err := s.m.Watch(src); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.m.Handler())
	// A scrape is small and quick: tight timeouts keep a slow or idle
	// client from holding connections.
	s.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	s.done = make(chan struct{})
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("metrics listener failed", "listen", s.ln.Addr().String(), "err", err)
		}
	}()
	s.log.Info("serving metrics", "listen", s.ln.Addr().String(), "path", "/metrics")
	return nil
}

// close stops serving (and closes the listener, served or not).
func (s *metricsServer) close(ctx context.Context) {
	if s == nil {
		return
	}
	if s.srv == nil {
		s.ln.Close()
		return
	}
	if err := s.srv.Shutdown(ctx); err != nil {
		s.srv.Close()
	}
	<-s.done
}

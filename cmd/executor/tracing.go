package main

import (
	"context"
	"errors"
	"log/slog"
	"net/http"

	"executor/api"
	"executor/sandbox"
)

// tracing sends a trace of every API request to OPR_EXECUTOR_TRACING_ENDPOINT. A nil *tracing traces nothing.
type tracing struct{}

// startTracing sets tracing up as cfg says: nil when no endpoint is set.
func startTracing(_ context.Context, cfg *config, _ *slog.Logger) (*tracing, error) {
	if cfg.TracingEndpoint == "" {
		return nil, nil
	}
	return nil, errors.New("OPR_EXECUTOR_TRACING_ENDPOINT: tracing is not built yet")
}

// handler wraps the API's handler so that each request gets its span.
func (t *tracing) handler(h http.Handler) http.Handler { return h }

func (t *tracing) apiObserver() api.Observer { return nil }

func (t *tracing) sandboxObserver() sandbox.Observer { return nil }

// shutdown sends what is buffered.
func (t *tracing) shutdown(context.Context) {}

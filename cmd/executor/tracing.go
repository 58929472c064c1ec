package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"executor/api"
	"executor/sandbox"
)

// Bounds on what an unreachable collector can cost. Spans wait in the batch
// span processor's queue (2048 by default, OTEL_BSP_MAX_QUEUE_SIZE), and
// are dropped, never waited for, when it is full: requests only enqueue.
// One export (its retries included) gives up after exportRetryFor, so a
// collector that comes back gets the spans made since; the flush at
// shutdown waits shutdownWait at most.
const (
	exportRetryFor = 15 * time.Second
	shutdownWait   = 5 * time.Second
)

// stageAttr names the cold-start stage a span times.
const stageAttr = attribute.Key("executor.stage")

// tracing sends a trace of every API request to OPR_EXECUTOR_TRACING_ENDPOINT. A nil *tracing traces nothing.
//
// The provider is this value's own, not OpenTelemetry's global one: the
// spans made deeper down (the forward to a runtime, in sandbox/protocol)
// take their provider from the request's span, so nothing below the API
// needs tracing configured, and a daemon without an endpoint makes no spans.
type tracing struct {
	provider *sdktrace.TracerProvider
	tracer   trace.Tracer
	prop     propagation.TextMapPropagator
	log      *slog.Logger
}

// startTracing sets tracing up as cfg says: nil when no endpoint is set.
func startTracing(ctx context.Context, cfg *config, log *slog.Logger) (*tracing, error) {
	if cfg.TracingEndpoint == "" {
		return nil, nil
	}
	endpoint, err := tracesURL(cfg.TracingEndpoint)
	if err != nil {
		return nil, fmt.Errorf("OPR_EXECUTOR_TRACING_ENDPOINT: %w", err)
	}
	// Made without connecting: a collector that is down at start is
	// retried with each batch, as one that goes away later is.
	exp, err := otlptracehttp.New(ctx,
		otlptracehttp.WithEndpointURL(endpoint),
		otlptracehttp.WithRetry(otlptracehttp.RetryConfig{
			Enabled:         true,
			InitialInterval: time.Second,
			MaxInterval:     5 * time.Second,
			MaxElapsedTime:  exportRetryFor,
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("OPR_EXECUTOR_TRACING_ENDPOINT: %w", err)
	}
	host, _ := os.Hostname()
	res := resource.NewWithAttributes(semconv.SchemaURL,
		semconv.ServiceName("executor"),
		semconv.ServiceVersion(cfg.Version),
		semconv.HostName(host),
	)
	// The sampler is left to OTEL_TRACES_SAMPLER (parent-based, always on
	// by default): a caller that did not sample its trace gets no spans.
	provider := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(&reportingExporter{SpanExporter: exp, log: log, endpoint: endpoint}),
		sdktrace.WithResource(res),
	)
	log.Info("traces of API requests go to the collector", "endpoint", endpoint)
	return newTracing(provider, log), nil
}

func newTracing(provider *sdktrace.TracerProvider, log *slog.Logger) *tracing {
	return &tracing{
		provider: provider,
		tracer:   provider.Tracer("executor/cmd/executor"),
		prop:     propagation.TraceContext{},
		log:      log,
	}
}

// tracesURL gives an endpoint without a path the OTLP/HTTP default one.
func tracesURL(endpoint string) (string, error) {
	u, err := url.Parse(endpoint)
	if err != nil {
		return "", err
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/v1/traces"
	}
	return u.String(), nil
}

// handler wraps the API's handler so that each request gets its span,
// continuing the caller's trace when its traceparent names one. The span is
// named once the API knows the route (apiObserver).
func (t *tracing) handler(h http.Handler) http.Handler {
	if t == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := t.prop.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
		method := spanMethod(r.Method)
		attrs := []attribute.KeyValue{
			semconv.HTTPRequestMethodKey.String(method),
			semconv.URLPath(r.URL.Path),
			semconv.URLScheme(scheme(r)),
		}
		if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
			attrs = append(attrs, semconv.ClientAddress(host))
		}
		if ua := r.UserAgent(); ua != "" {
			attrs = append(attrs, semconv.UserAgentOriginal(ua))
		}
		ctx, span := t.tracer.Start(ctx, method, trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attrs...))
		defer span.End()
		h.ServeHTTP(w, r.WithContext(ctx))
	})
}

// spanMethod keeps span names bounded: a method HTTP does not define is
// "_OTHER", as the semantic conventions say.
func spanMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return m
	}
	return "_OTHER"
}

func scheme(r *http.Request) string {
	if r.TLS != nil {
		return "https"
	}
	return "http"
}

func (t *tracing) apiObserver() api.Observer {
	if t == nil {
		return nil
	}
	return spanNamer{}
}

// spanNamer names a request's span after its route and records its status.
type spanNamer struct{}

func (spanNamer) Request(r *http.Request, route string, status int, _ time.Duration) {
	span := trace.SpanFromContext(r.Context())
	if !span.IsRecording() {
		return
	}
	if route != "" {
		span.SetName(spanMethod(r.Method) + " " + route)
		span.SetAttributes(semconv.HTTPRoute(route))
	}
	span.SetAttributes(semconv.HTTPResponseStatusCode(status))
	// A 4xx is the client's error, not the server's (semantic conventions).
	if status >= 500 {
		span.SetStatus(codes.Error, http.StatusText(status))
	}
}

func (t *tracing) sandboxObserver() sandbox.Observer {
	if t == nil {
		return nil
	}
	return stageSpans{tracer: t.tracer}
}

// stageSpans makes a span for each cold-start stage, a child of the
// request's span, timed as the stage was.
type stageSpans struct {
	sandbox.NopObserver
	tracer trace.Tracer
}

func (s stageSpans) Stage(ctx context.Context, name string, start time.Time, took time.Duration) {
	// A creation no request waits for has no trace to join: no root
	// span for it.
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	_, span := s.tracer.Start(ctx, name, trace.WithTimestamp(start), trace.WithAttributes(stageAttr.String(name)))
	span.End(trace.WithTimestamp(start.Add(took)))
}

// shutdown sends what is buffered, waiting shutdownWait at most.
func (t *tracing) shutdown(ctx context.Context) {
	if t == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, shutdownWait)
	defer cancel()
	if err := t.provider.Shutdown(ctx); err != nil {
		t.log.Warn("spans not sent at shutdown", "err", err)
	}
}

// reportingExporter logs failed exports, once when the collector stops
// taking spans and once when it takes them again, rather than leaving them
// to OpenTelemetry's global error handler (a line on stderr per batch).
type reportingExporter struct {
	sdktrace.SpanExporter
	log      *slog.Logger
	endpoint string

	mu      sync.Mutex
	failing bool
}

func (e *reportingExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	err := e.SpanExporter.ExportSpans(ctx, spans)
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case err != nil && !e.failing:
		e.failing = true
		e.log.Warn("the tracing collector does not take spans: they are dropped until it does", "endpoint", e.endpoint, "spans", len(spans), "err", err)
	case err != nil:
		e.log.Debug("spans dropped", "endpoint", e.endpoint, "spans", len(spans), "err", err)
	case e.failing:
		e.failing = false
		e.log.Info("the tracing collector takes spans again", "endpoint", e.endpoint)
	}
	// Reported here; the processor would only hand it to the global handler.
	return nil
}

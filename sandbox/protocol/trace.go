package protocol

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// versionAttr is the protocol version a forward spoke.
const versionAttr = attribute.Key("open_runtimes.version")

// startForward starts the span of one execution's forward to its runtime,
// a child of the span ctx carries; its provider is that span's, so the
// client needs no tracing set up. Without a trace in ctx (tracing off) it
// makes nothing and returns a nil span.
func startForward(ctx context.Context, t Target, method, path string) (context.Context, trace.Span) {
	parent := trace.SpanFromContext(ctx)
	if !parent.SpanContext().IsValid() {
		return ctx, nil
	}
	attrs := []attribute.KeyValue{
		semconv.HTTPRequestMethodKey.String(method),
		semconv.URLPath(path),
		versionAttr.String(string(t.Version)),
	}
	if host, port, err := net.SplitHostPort(t.Addr); err == nil {
		attrs = append(attrs, semconv.ServerAddress(host))
		if p, err := strconv.Atoi(port); err == nil {
			attrs = append(attrs, semconv.ServerPort(p))
		}
	}
	return parent.TracerProvider().Tracer("executor/sandbox/protocol").Start(ctx, "forward",
		trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
}

// endForward ends span (nil: no trace) with what the runtime answered.
func endForward(span trace.Span, res *Response, err error) {
	if span == nil {
		return
	}
	defer span.End()
	if err != nil {
		var te *TransportError
		kind := "error"
		if errors.As(err, &te) {
			kind = "transport"
		}
		span.SetAttributes(semconv.ErrorTypeKey.String(kind))
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
		return
	}
	span.SetAttributes(semconv.HTTPResponseStatusCode(res.StatusCode))
	if res.StatusCode >= 500 {
		span.SetStatus(codes.Error, http.StatusText(res.StatusCode))
	}
}

// injectTrace puts the forward's trace context on hr, in place of any
// traceparent and tracestate among the caller's headers: the runtime's
// spans then join the executor's trace. Without a trace in ctx the
// caller's headers pass as they are.
func injectTrace(ctx context.Context, hr *http.Request) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	hr.Header.Del("traceparent")
	hr.Header.Del("tracestate")
	propagation.TraceContext{}.Inject(ctx, propagation.HeaderCarrier(hr.Header))
}

// noteResend records on the forward's span (if any) that the request was
// sent again: the runtime refused the connection.
func noteResend(ctx context.Context, attempt int) {
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.SetAttributes(semconv.HTTPRequestResendCount(attempt - 1))
	}
}

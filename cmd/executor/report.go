package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/getsentry/sentry-go"
)

// sentryDSN turns OPR_EXECUTOR_LOGGING_CONFIG into a Sentry DSN. It accepts
// the reference's `sentry://PROJECT_ID:KEY@HOST` form, the seed era's
// `KEY;PROJECT_ID` (sentry.io), and a native `https://KEY@HOST/PROJECT_ID`.
func sentryDSN(config string) (string, error) {
	bad := fmt.Errorf("OPR_EXECUTOR_LOGGING_CONFIG must be sentry://PROJECT_ID:KEY@HOST, KEY;PROJECT_ID or a Sentry DSN")
	switch {
	case config == "":
		return "", bad
	case strings.HasPrefix(config, "http://") || strings.HasPrefix(config, "https://"):
		if _, err := sentry.NewDsn(config); err != nil {
			return "", fmt.Errorf("%w: %v", bad, err)
		}
		return config, nil
	case strings.HasPrefix(config, "sentry://"):
		u, err := url.Parse(config)
		if err != nil || u.User == nil || u.Host == "" {
			return "", bad
		}
		project := u.User.Username()
		key, _ := u.User.Password()
		if project == "" || key == "" {
			return "", bad
		}
		return fmt.Sprintf("https://%s@%s/%s", key, u.Host, project), nil
	default:
		key, project, ok := strings.Cut(config, ";")
		if !ok || key == "" || project == "" {
			return "", bad
		}
		return fmt.Sprintf("https://%s@sentry.io/%s", key, project), nil
	}
}

// reportingHandler sends error records to Sentry and passes every record on.
type reportingHandler struct {
	slog.Handler
	hub   *sentry.Hub
	attrs []slog.Attr
}

func newReporter(next slog.Handler, dsn, environment, release string) (*reportingHandler, error) {
	client, err := sentry.NewClient(sentry.ClientOptions{Dsn: dsn, Environment: environment, Release: release})
	if err != nil {
		return nil, fmt.Errorf("OPR_EXECUTOR_LOGGING_CONFIG: %w", err)
	}
	return &reportingHandler{Handler: next, hub: sentry.NewHub(client, sentry.NewScope())}, nil
}

func (h *reportingHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelError {
		ev := sentry.NewEvent()
		ev.Level = sentry.LevelError
		ev.Message = r.Message
		ev.Timestamp = r.Time
		attrs := map[string]any{}
		for _, a := range h.attrs {
			attrs[a.Key] = a.Value.String()
		}
		r.Attrs(func(a slog.Attr) bool {
			attrs[a.Key] = a.Value.String()
			return true
		})
		ev.Contexts = map[string]sentry.Context{"log": attrs}
		h.hub.CaptureEvent(ev)
	}
	return h.Handler.Handle(ctx, r)
}

func (h *reportingHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &reportingHandler{Handler: h.Handler.WithAttrs(attrs), hub: h.hub, attrs: append(append([]slog.Attr(nil), h.attrs...), attrs...)}
}

func (h *reportingHandler) WithGroup(name string) slog.Handler {
	return &reportingHandler{Handler: h.Handler.WithGroup(name), hub: h.hub, attrs: h.attrs}
}

// flush waits for queued reports to leave, at shutdown.
func (h *reportingHandler) flush(timeout time.Duration) {
	h.hub.Flush(timeout)
}

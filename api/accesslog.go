package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"executor/sandbox"
)

// The access log: one line per request, written when the handler returns, with what an operator filters and
// counts by. Routes are logged as their patterns (/v1/runtimes/:runtimeId/executions), so that lines of one
// endpoint group together whatever ids they carry; the runtime id is an attribute of its own. A failed request
// says why on the same line (type, message, err), at a level that tells how bad it is:
//
//	2xx, 3xx                         info (GET /v1/health at debug: balancers poll it)
//	4xx                              info: the client's mistake, but an operator looks for them
//	5xx the catalogue describes      warn: a runtime or the host failed in a known way
//	5xx from an unexpected failure   error
//	a client that left               info
//	GET /v1/health answering 503     info: not at every poll a warning (see logAccess)
const (
	accessMessage = "request"
	healthRoute   = "/v1/health"
	// maxLoggedText bounds what a client controls on the line (an unmatched path, a runtime id that is not
	// one), so that a request cannot make its line huge.
	maxLoggedText = 256
)

// accessRecord is what the access line of one request says beyond its status, filled in as it is served. It
// travels in the request's context: the router's handlers and writeError see the request, not the writer.
type accessRecord struct {
	route   string // the route's pattern; "" when no route matched
	runtime string // the route's :runtimeId
	failure *failure
}

// failure is an error response, as writeError classified it.
type failure struct {
	body     errorBody
	err      error
	internal bool
	// abandoned: the client left before the answer (its context was cancelled), nobody reads it.
	abandoned bool
}

type accessKey struct{}

// accessOf is the request's access record; nil outside ServeHTTP.
func accessOf(r *http.Request) *accessRecord {
	rec, _ := r.Context().Value(accessKey{}).(*accessRecord)
	return rec
}

// setRoute records the route a request matched: its pattern and its runtime id, when it has one.
func setRoute(r *http.Request, pattern, runtime string) {
	if rec := accessOf(r); rec != nil {
		rec.route, rec.runtime = pattern, runtime
	}
}

// accessWriter counts the status and the body bytes of the response, and bounds each write's wait for the
// client (Config.WriteStall): the connection's write deadline is moved on before every write.
type accessWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
	rc     *http.ResponseController
	stall  time.Duration
}

func (w *accessWriter) armWrite() {
	if w.stall > 0 {
		_ = w.rc.SetWriteDeadline(time.Now().Add(w.stall))
	}
}

func (w *accessWriter) WriteHeader(code int) {
	// Informational answers (100 Continue) are not the response's status.
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *accessWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.armWrite()
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

func (w *accessWriter) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		w.armWrite()
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *accessWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// connWriter is the server's own writer beneath w. http.MaxBytesReader needs it to close the connection after
// an oversized body: it looks for an unexported method, not through Unwrap.
func connWriter(w http.ResponseWriter) http.ResponseWriter {
	if aw, ok := w.(*accessWriter); ok {
		return aw.ResponseWriter
	}
	return w
}

// serveLogged serves r through next and writes its access line. A complete answer (one that declared its
// length) is flushed to the client before the line is written: the line is for the operator and need not delay
// the client, and on the warm path the log write was a tenth of the daemon's time per request. The request is
// counted (Config.Observer) before the flush, so that a client that asks for the metrics once answered finds it.
func (s *Server) serveLogged(w http.ResponseWriter, r *http.Request, next http.Handler) {
	start := time.Now()
	rec := &accessRecord{}
	aw := &accessWriter{ResponseWriter: w, rc: http.NewResponseController(w), stall: s.writeStall}
	// A deadline an earlier request of the connection left must not cut this one's answer, written by
	// net/http itself when the handler writes nothing.
	_ = aw.rc.SetWriteDeadline(time.Time{})
	r = r.WithContext(context.WithValue(r.Context(), accessKey{}, rec))
	returned := false
	// Deferred so that a handler that aborts (http.ErrAbortHandler) still leaves its line.
	defer func() {
		if !returned {
			took := time.Since(start)
			s.observe(r, rec, aw, took)
			s.logAccess(r, rec, aw, took)
		}
	}()
	next.ServeHTTP(aw, r)
	returned = true
	took := time.Since(start)
	s.observe(r, rec, aw, took)
	aw.flushComplete()
	s.logAccess(r, rec, aw, took)
}

// sent is the status the client got: net/http answers 200 when the handler wrote nothing.
func (w *accessWriter) sent() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}

// flushComplete sends a complete answer now rather than when net/http finishes the request. Only an answer that
// declared its Content-Length is complete once the handler returns; flushing any other would make net/http
// frame it as chunked where it would have counted its length.
//
// Whatever net/http still writes once the handler returns (a chunked answer's end, or this flush) gets a stall
// budget of its own: the last write's may have run out while a stream was quiet (a build that printed nothing for
// a minute), and the client would see its answer cut short.
func (w *accessWriter) flushComplete() {
	if w.status == 0 {
		return // nothing written: the deadline is still the one serveLogged cleared
	}
	w.armWrite()
	if w.Header().Get("Content-Length") == "" {
		return
	}
	_ = w.rc.Flush()
}

// observe counts the request in the metrics.
func (s *Server) observe(r *http.Request, rec *accessRecord, w *accessWriter, took time.Duration) {
	if s.observer != nil {
		s.observer.Request(r, rec.route, w.sent(), took)
	}
}

func (s *Server) logAccess(r *http.Request, rec *accessRecord, w *accessWriter, took time.Duration) {
	status := w.sent()
	level := slog.LevelInfo
	switch {
	case rec.route == healthRoute:
		// Balancers poll it: a failing check would otherwise warn at every poll, when the check logs its
		// changes of verdict itself and a draining daemon answers 503 on purpose.
		if status < 400 {
			level = slog.LevelDebug
		}
	case status >= 500:
		// Written by a handler itself rather than through writeError.
		level = slog.LevelWarn
	}
	ctx := r.Context()
	if !s.log.Enabled(ctx, level) && rec.failure == nil {
		return
	}
	attrs := make([]slog.Attr, 0, 12)
	attrs = append(attrs, slog.String("method", r.Method))
	if rec.route != "" {
		attrs = append(attrs, slog.String("route", rec.route))
	} else {
		// No pattern: the path is all there is to say what was asked.
		attrs = append(attrs, slog.String("route", ""), slog.String("path", clip(r.URL.Path)))
	}
	if rec.runtime != "" {
		attrs = append(attrs, slog.String("runtime", clip(rec.runtime)))
	}
	attrs = append(attrs, slog.Int("status", status), slog.Duration("duration", took), slog.Int64("bytes", w.bytes))
	if f := rec.failure; f != nil {
		level = f.level()
		attrs = append(attrs, slog.String("type", f.body.Type), slog.String("message", f.body.Message))
		if f.abandoned {
			attrs = append(attrs, slog.Bool("clientGone", true))
		}
		if saysMore(f.err, f.body.Message) {
			attrs = append(attrs, slog.Any("err", f.err))
		}
	}
	s.log.LogAttrs(ctx, level, accessMessage, attrs...)
}

// saysMore reports whether err tells more than message, what the client was told: a cause, or what production
// hides. Most rejections say it all in their message already, and a line that repeats it is harder to read.
func saysMore(err error, message string) bool {
	var se *sandbox.Error
	var re *requestError
	switch {
	case errors.As(err, &se):
		// Its text is its kind (the type says it), its message, then its cause unless the message quotes it.
		return se.Err != nil && !strings.Contains(se.Message, se.Err.Error())
	case errors.As(err, &re):
		return false
	}
	return !strings.HasSuffix(err.Error(), message)
}

// level is how severe a failed request is (see the table at the top).
func (f *failure) level() slog.Level {
	switch {
	case f.abandoned:
		return slog.LevelInfo
	case f.internal:
		return slog.LevelError
	case f.body.Code >= 500:
		return slog.LevelWarn
	default:
		return slog.LevelInfo
	}
}

// clip cuts s to maxLoggedText bytes.
func clip(s string) string {
	if len(s) <= maxLoggedText {
		return s
	}
	return s[:maxLoggedText] + "..."
}

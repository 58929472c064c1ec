package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Log formats (OPR_EXECUTOR_LOG_FORMAT).
const (
	logFormatText = "text"
	logFormatJSON = "json"
)

// newLogHandler is the daemon's log handler: cfg.LogFormat's lines on w, records below level dropped. level is
// read at every record, so a change (SIGHUP) applies at once. When w is journald's stream (systemd sets
// JOURNAL_STREAM for a unit's stdout and stderr), each line starts with its syslog priority, which journald
// strips and keeps as the entry's level: `journalctl -p warning` then works.
func newLogHandler(cfg *config, w io.Writer, level *slog.LevelVar) slog.Handler {
	return logHandler(cfg.LogFormat, w, level, os.Getenv("JOURNAL_STREAM"))
}

// logHandler is newLogHandler with JOURNAL_STREAM's value given.
func logHandler(format string, w io.Writer, level slog.Leveler, journalStream string) slog.Handler {
	var jw *priorityWriter
	if isJournalStream(w, journalStream) {
		jw = &priorityWriter{w: w}
		w = jw
	}
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	if format == logFormatJSON {
		h = slog.NewJSONHandler(w, opts)
	} else {
		h = slog.NewTextHandler(w, opts)
	}
	if jw == nil {
		return h
	}
	return &priorityHandler{Handler: h, w: jw}
}

// isJournalStream says whether w is the stream JOURNAL_STREAM names: "DEVICE:INODE" of the socket systemd
// connected to journald (systemd.exec(5)). The variable is inherited by children whose output goes elsewhere
// (a shell redirecting stderr to a file, `executor 2>log`), so only the file's own identity counts.
func isJournalStream(w io.Writer, journalStream string) bool {
	if journalStream == "" {
		return false
	}
	f, ok := w.(interface{ Stat() (os.FileInfo, error) })
	if !ok {
		return false
	}
	devText, inoText, ok := strings.Cut(journalStream, ":")
	if !ok {
		return false
	}
	dev, err1 := strconv.ParseUint(devText, 10, 64)
	ino, err2 := strconv.ParseUint(inoText, 10, 64)
	if err1 != nil || err2 != nil {
		return false
	}
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && uint64(st.Dev) == dev && uint64(st.Ino) == ino
}

// syslogPriority is the sd-daemon(3) prefix of a record at level: levels between slog's named ones take the
// priority of the one below them, so a record is never shown as more severe than it is.
func syslogPriority(level slog.Level) string {
	switch {
	case level >= slog.LevelError:
		return "<3>" // SD_ERR
	case level >= slog.LevelWarn:
		return "<4>" // SD_WARNING
	case level >= slog.LevelInfo:
		return "<6>" // SD_INFO
	default:
		return "<7>" // SD_DEBUG
	}
}

// priorityHandler writes each record with its syslog priority in front. The inner handler formats the line
// and writes it in one call (slog's handlers do); the priority for that call is set on the shared writer under
// its lock, which every handler derived by WithAttrs and WithGroup shares.
type priorityHandler struct {
	slog.Handler
	w *priorityWriter
}

func (h *priorityHandler) Handle(ctx context.Context, r slog.Record) error {
	h.w.mu.Lock()
	defer h.w.mu.Unlock()
	h.w.prefix = syslogPriority(r.Level)
	return h.Handler.Handle(ctx, r)
}

func (h *priorityHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &priorityHandler{Handler: h.Handler.WithAttrs(attrs), w: h.w}
}

func (h *priorityHandler) WithGroup(name string) slog.Handler {
	return &priorityHandler{Handler: h.Handler.WithGroup(name), w: h.w}
}

// priorityWriter puts prefix before each line it writes. Its lock is held by priorityHandler.Handle.
type priorityWriter struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
	buf    []byte
}

// Write writes the prefix and p in one write, so that lines of other writers to the same stream cannot land
// between them.
func (w *priorityWriter) Write(p []byte) (int, error) {
	w.buf = append(append(w.buf[:0], w.prefix...), p...)
	_, err := w.w.Write(w.buf)
	if cap(w.buf) > 64<<10 {
		w.buf = nil // one huge record does not pin its buffer for the daemon's life
	}
	if err != nil {
		return 0, fmt.Errorf("log: %w", err)
	}
	return len(p), nil
}

package main

import (
	"io"
	"log/slog"
)

// newLogHandler is the daemon's log handler, at level.
func newLogHandler(cfg *config, w io.Writer, level *slog.LevelVar) slog.Handler {
	return slog.NewTextHandler(w, &slog.HandlerOptions{Level: level})
}

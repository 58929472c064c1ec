package main

import (
	"context"
	"log/slog"
)

// reload applies, on SIGHUP, what can change without a restart.
func reload(ctx context.Context, cfg *config, level *slog.LevelVar, log *slog.Logger) {
	log.Info("SIGHUP: nothing to reload")
}

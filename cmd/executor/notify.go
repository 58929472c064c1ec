package main

import "log/slog"

// notifier tells the service manager (systemd's NOTIFY_SOCKET) how the
// daemon is doing.
type notifier struct{ log *slog.Logger }

func newNotifier(log *slog.Logger) *notifier { return &notifier{log: log} }

// ready says the daemon serves.
func (n *notifier) ready() {}

// stopping says the daemon is shutting down.
func (n *notifier) stopping() {}

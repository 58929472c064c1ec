package api

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/julienschmidt/httprouter"
)

// logsWait is how long a log stream waits for its runtime to appear: clients
// start streaming while their create request is still on the way.
const logsWait = 10 * time.Second

// streamLogs is GET /v1/runtimes/:runtimeId/logs (§7, Part 0): the build
// output as it is read from the pipes, v5 as `<timestamp> <content>` lines
// (newlines in the content escaped), v2-v4 as raw text. It ends when the build
// ends, the runtime goes away, the client leaves or `timeout` seconds pass.
func (s *Server) streamLogs(w http.ResponseWriter, r *http.Request, ps httprouter.Params) error {
	req, err := s.endpoints.logs.bind(r, ps)
	if err != nil {
		return err
	}
	// The reference parses the timeout with PHP's intval: non-numeric is 0.
	secs, _ := strconv.Atoi(strings.TrimSpace(req.Timeout))
	if secs < 0 {
		secs = 0
	}
	ctx, cancel := context.WithTimeout(r.Context(), time.Duration(secs)*time.Second)
	defer cancel()
	stream, err := s.backend.FollowLogs(ctx, req.RuntimeID, logsWait)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	if !stream.Version().StreamsBuildLogs() {
		w.WriteHeader(http.StatusOK)
		return nil
	}
	w.WriteHeader(http.StatusOK)
	flush(w)
	timestamped := stream.Version().TimestampedOutput()
	var line strings.Builder
	for {
		entries, err := stream.Next(ctx)
		if err != nil {
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return nil
			}
			return err
		}
		line.Reset()
		for _, e := range entries {
			if timestamped {
				line.WriteString(logTimestamp(e.Timestamp))
				line.WriteByte(' ')
				line.WriteString(strings.ReplaceAll(e.Content, "\n", `\n`))
				line.WriteByte('\n')
			} else {
				line.WriteString(e.Content)
			}
		}
		if _, err := io.WriteString(w, line.String()); err != nil {
			return nil // the client left
		}
		flush(w)
	}
}

func flush(w http.ResponseWriter) {
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
}

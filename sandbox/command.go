package sandbox

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"
	"time"
)

// maxCommandOutput caps what a command may return per stream.
const maxCommandOutput = 10 << 20

// Command runs command in runtime id with bash (or sh), for at most timeout,
// and returns its stdout followed by its stderr.
func (m *Manager) Command(ctx context.Context, id, command string, timeout time.Duration) (string, error) {
	e, err := m.lookup(ctx, id)
	if err != nil {
		return "", err
	}
	if e == nil || !m.claim(e) {
		return "", newError(NotFound, "", nil)
	}
	r := e.rt
	defer r.end()
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var stdout, stderr cappedBuffer
	code, err := r.exec(cctx, command, &stdout, &stderr)
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "", newError(CommandTimeout, "", err)
	case err != nil:
		return "", newError(CommandFailed, "", err)
	case code != 0:
		return "", newError(CommandFailed, "", nil)
	}
	return stdout.String() + stderr.String(), nil
}

// cappedBuffer keeps the first maxCommandOutput bytes written to it.
type cappedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (c *cappedBuffer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := maxCommandOutput - c.b.Len(); room > 0 {
		c.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (c *cappedBuffer) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.b.String()
}

var _ io.Writer = (*cappedBuffer)(nil)

package sandbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"time"

	"executor/sandbox/container"
	"executor/sandbox/protocol"
)

// Create makes a runtime and, when spec.Command is set, builds in it. The
// request is held until the build ends, as in the reference.
func (m *Manager) Create(ctx context.Context, spec Spec) (*BuildResult, error) {
	if err := m.checkStorage(spec); err != nil {
		return nil, err
	}
	// A build outlives a client that hangs up, as the reference's does; its
	// own timeout bounds it. Delete cancels it.
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	e, err := m.insert(spec, cancel)
	if err != nil {
		return nil, err
	}
	res, err := m.create(cctx, e, spec)
	m.settle(e, err)
	m.mu.Lock()
	rt := e.rt
	m.mu.Unlock()
	if rt != nil {
		// Its cold start ends with this reply: no execution of it will
		// tell the prewarm pool (a failed one told it on destroy).
		rt.coldOver()
	}
	if err != nil {
		return nil, err
	}
	if spec.Remove {
		m.mu.Lock()
		m.dropLocked(e)
		m.mu.Unlock()
		m.cfg.Observer.RuntimeRemoved(RemovedDeleted)
		if err := m.finish(ctx, e, 0); err != nil {
			m.log.Error("remove built runtime", "runtime", spec.RuntimeID, "err", err)
		}
	}
	return res, nil
}

// create builds the runtime of e. On failure everything made so far is
// released before it returns.
func (m *Manager) create(ctx context.Context, e *entry, spec Spec) (res *BuildResult, err error) {
	start := e.created
	r := m.newRuntime(spec, e.name, e.hostname, e.secret, start, container.NewID())
	defer func() {
		if err != nil {
			if derr := r.destroy(context.WithoutCancel(ctx), 0); derr != nil {
				m.log.Error("cleanup after failed creation", "runtime", spec.RuntimeID, "err", derr)
			}
		}
	}()
	if err := m.assemble(ctx, r, spec); err != nil {
		return nil, err
	}
	r.supervising.Add(1)
	go r.supervise()
	m.mu.Lock()
	e.rt = r
	m.mu.Unlock()
	res = &BuildResult{StartTime: start, Version: spec.Version, Output: []LogEntry{}}
	if spec.Command != "" {
		if err := m.runBuild(ctx, r, spec, res, e.log); err != nil {
			return nil, err
		}
	}
	res.Duration = time.Since(start)
	r.markUp(res.Duration)
	m.remember(r, e.log)
	return res, nil
}

func randomHex(n int) string {
	b := make([]byte, n/2)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newRuntime is the Runtime of spec before any of its parts exist.
func (m *Manager) newRuntime(spec Spec, name, hostname, secret string, created time.Time, cid string) *Runtime {
	httpc := protocol.NewHTTPClient()
	return &Runtime{
		ID:       spec.RuntimeID,
		Name:     name,
		CID:      cid,
		Hostname: hostname,
		Secret:   secret,
		Image:    spec.Image,
		Version:  spec.Version,
		Created:  created,
		spec:     spec,
		log:      m.log,
		httpc:    httpc,
		client:   protocol.Client{HTTP: httpc, RetryAttempts: m.cfg.RetryAttempts, RetryDelay: m.cfg.RetryDelay, Log: m.log.With("runtime", spec.RuntimeID)},
		onExit:   m.removeDead,
		forget:   m.forget,
		obs:      m.cfg.Observer,
		updated:  created,
		status:   "pending",
	}
}

package sandbox

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"executor/sandbox/build"
	"executor/sandbox/protocol"
)

// entry is a row of the table. ready is closed when creation ends; then rt is
// set, or err says why creation failed.
type entry struct {
	id      string
	created time.Time
	image   string
	version protocol.Version
	name    string
	ready   chan struct{}
	cancel  context.CancelFunc
	rt      *Runtime
	err     error
	// log is the build output, followed by log streams while it grows.
	log *build.Output
	// gone is closed when the entry leaves the table.
	gone chan struct{}
	// hostname and secret are chosen before creation so the pending row can
	// show them.
	hostname string
	secret   string
}

func (e *entry) pending() bool {
	select {
	case <-e.ready:
		return false
	default:
		return true
	}
}

func (e *entry) info() Info {
	if !e.pending() && e.rt != nil {
		return e.rt.Info()
	}
	return Info{
		Version:  e.version,
		Created:  e.created,
		Updated:  e.created,
		Name:     e.name,
		Hostname: e.hostname,
		Status:   "pending",
		Key:      e.secret,
		Image:    e.image,
	}
}

// List returns every runtime, in creation order.
func (m *Manager) List() []Info {
	m.mu.Lock()
	entries := make([]*entry, 0, len(m.table))
	for _, e := range m.table {
		entries = append(entries, e)
	}
	m.mu.Unlock()
	slices.SortFunc(entries, func(a, b *entry) int { return a.created.Compare(b.created) })
	out := make([]Info, 0, len(entries))
	ids := make([]string, 0, len(entries))
	for _, e := range entries {
		out = append(out, e.info())
		ids = append(ids, e.id)
	}
	m.withUsage(ids, out)
	return out
}

// Get returns one runtime.
func (m *Manager) Get(id string) (Info, error) {
	m.mu.Lock()
	e := m.table[id]
	m.mu.Unlock()
	if e == nil {
		return Info{}, newError(NotFound, "", nil)
	}
	out := []Info{e.info()}
	m.withUsage([]string{id}, out)
	return out[0], nil
}

// Delete removes a runtime. It leaves the table at once, so its id is free
// for a new runtime, and its network endpoint is given up before Delete
// returns, so that its address counts as being freed (a create on a full
// subnet waits for it). The rest of the teardown (killing the container,
// its cgroups, root, disk and directory: tens of milliseconds) goes on in
// the background: Close waits for it, a failure is logged, and what a
// crash interrupts is removed by the next start's reconciliation. A
// creation in progress is cancelled.
func (m *Manager) Delete(ctx context.Context, id string) error {
	m.mu.Lock()
	e := m.table[id]
	if e != nil {
		m.dropLocked(e)
		m.teardowns.Add(1)
	}
	m.mu.Unlock()
	if e == nil {
		return newError(NotFound, "", nil)
	}
	m.cfg.Observer.RuntimeRemoved(RemovedDeleted)
	select {
	case <-e.ready:
		if e.rt != nil {
			if err := e.rt.detachNetwork(ctx); err != nil {
				m.log.Error("runtime network detach failed", "runtime", e.id, "err", err)
			}
		}
	default: // being created: finish cancels it first
	}
	go func() {
		defer m.teardowns.Done()
		// The request's end must not cut the teardown short.
		if err := m.tearDown(context.WithoutCancel(ctx), e); err != nil {
			m.log.Error("deleted runtime's teardown incomplete", "runtime", e.id, "err", err)
		}
	}()
	return nil
}

// tearDown removes a deleted runtime in the background: its processes are
// killed at once, and the rest (container state, cgroups, mounts, disk,
// directory: tens of milliseconds of work each) waits for one of the
// teardown slots. A burst of deletes then leaves the other cores to the
// requests still being served, instead of every teardown at once.
func (m *Manager) tearDown(ctx context.Context, e *entry) error {
	e.cancel()
	<-e.ready
	if e.rt == nil {
		return nil
	}
	e.rt.halt()
	m.teardownSlots <- struct{}{}
	defer func() { <-m.teardownSlots }()
	return m.finish(ctx, e, 0)
}

// insert adds a pending row, or refuses when the id is taken. cancel aborts
// the creation (Delete calls it).
func (m *Manager) insert(spec Spec, cancel context.CancelFunc) (*entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closing {
		return nil, newError(ShuttingDown, "", nil)
	}
	if old := m.table[spec.RuntimeID]; old != nil {
		if old.pending() {
			return nil, newError(Creating, "", nil)
		}
		return nil, newError(Exists, "", nil)
	}
	e := &entry{
		id:       spec.RuntimeID,
		created:  time.Now(),
		image:    spec.Image,
		version:  spec.Version,
		name:     m.runtimeName(spec.RuntimeID),
		ready:    make(chan struct{}),
		cancel:   cancel,
		hostname: randomHex(32),
		secret:   randomHex(32),
		log:      build.NewOutput(),
		gone:     make(chan struct{}),
	}
	m.table[spec.RuntimeID] = e
	return e, nil
}

// settle ends the pending state of e: a failed creation leaves the table.
func (m *Manager) settle(e *entry, err error) {
	e.log.Finish()
	if err != nil {
		e.err = err
		m.mu.Lock()
		m.dropLocked(e)
		m.mu.Unlock()
	}
	close(e.ready)
}

// ensure returns the ready entry for the request's runtime, creating it when
// missing (single flight: the first caller creates, the others wait for it),
// with work in flight claimed in it: the caller must end() its runtime.
// created says this caller started the runtime's creation.
func (m *Manager) ensure(ctx context.Context, req ExecRequest, deadline time.Time) (_ *entry, created bool, _ error) {
	// Made only for a runtime not ready yet: a warm runtime's execution
	// (nearly all of them) would pay for a timer it never waits on.
	var wctx context.Context
	for {
		m.mu.Lock()
		e := m.table[req.RuntimeID]
		m.mu.Unlock()
		if e == nil {
			if req.Cold == nil {
				return nil, false, newError(NotFound, "Runtime not found. Please start it first or provide runtime-related parameters.", nil)
			}
			spec := *req.Cold
			spec.RuntimeID = req.RuntimeID
			if err := m.checkStorage(spec); err != nil {
				return nil, false, err
			}
			// The creation belongs to the runtime, not to this request: a
			// client that hangs up does not abort it for the others waiting.
			// It keeps the request's values (its trace) all the same.
			cctx, ccancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
			ne, err := m.insert(spec, ccancel)
			if err != nil {
				ccancel()
				if k := KindOf(err); k == Creating || k == Exists {
					continue // someone else started it between our look and our insert
				}
				return nil, false, err
			}
			created = true
			go func() {
				defer ccancel()
				_, err := m.create(cctx, ne, spec)
				m.settle(ne, err)
			}()
			e = ne
		}
		select {
		case <-e.ready:
		default:
			if wctx == nil {
				var cancel context.CancelFunc
				wctx, cancel = context.WithDeadline(ctx, deadline)
				defer cancel()
			}
			select {
			case <-e.ready:
			case <-wctx.Done():
				return nil, created, creationTimeout(e, wctx.Err())
			}
		}
		if e.err != nil {
			if errors.Is(e.err, context.DeadlineExceeded) {
				return nil, created, creationTimeout(e, e.err)
			}
			return nil, created, e.err
		}
		if !m.claim(e) {
			return nil, created, newError(NotFound, "Runtime no longer exists.", nil)
		}
		return e, created, nil
	}
}

// creationTimeout is the timeout of an execution whose runtime was still
// being created: a cold start's first pull of a large image is the usual
// cause, and pulling ahead is the cure.
func creationTimeout(e *entry, err error) error {
	return newError(Timeout, fmt.Sprintf("Timed out waiting for runtime: it was still being created (image pull, source copy, network, container start) %s after it began. "+
		"The first pull of a large image may need a longer timeout, or pull it ahead with OPR_EXECUTOR_IMAGES.",
		time.Since(e.created).Round(100*time.Millisecond)), err)
}

// claim marks work in flight in e's runtime if e is still in the table. It
// takes the table lock that maintenance holds while it picks idle runtimes,
// so a runtime is never reaped between being found and being used. The
// caller must end() the runtime.
func (m *Manager) claim(e *entry) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.table[e.id] != e || e.rt == nil {
		return false
	}
	e.rt.begin()
	return true
}

// lookup returns the ready runtime for id, waiting for a creation in progress
// until ctx ends.
func (m *Manager) lookup(ctx context.Context, id string) (*entry, error) {
	m.mu.Lock()
	e := m.table[id]
	m.mu.Unlock()
	if e == nil {
		return nil, nil
	}
	select {
	case <-e.ready:
	case <-ctx.Done():
		return nil, newError(Timeout, "", ctx.Err())
	}
	return e, nil
}

// present reports whether e is still in the table.
func (m *Manager) present(e *entry) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.table[e.id] == e
}

// dropLocked removes e from the table if it is still there; m.mu is held.
func (m *Manager) dropLocked(e *entry) {
	if m.table[e.id] == e {
		delete(m.table, e.id)
		close(e.gone)
		// Gone from the table is gone for a restarted daemon too, even if
		// this one dies before the teardown.
		m.forget(e.rt)
	}
}

// finish ends a removed entry: cancels a creation in progress, waits for it,
// and destroys the runtime if it exists.
func (m *Manager) finish(ctx context.Context, e *entry, grace time.Duration) error {
	e.cancel()
	<-e.ready
	if e.rt == nil {
		return nil
	}
	if err := e.rt.destroy(ctx, grace); err != nil {
		m.log.Error("runtime removal incomplete", "runtime", e.id, "err", err)
		return fmt.Errorf("remove runtime %s: %w", e.id, err)
	}
	return nil
}

// removeDead removes a runtime whose main process ended for good.
func (m *Manager) removeDead(r *Runtime) {
	m.mu.Lock()
	e := m.table[r.ID]
	if e == nil || e.rt != r {
		m.mu.Unlock()
		return // already removed, or the id now belongs to a newer runtime
	}
	m.dropLocked(e)
	m.mu.Unlock()
	reason := RemovedExited
	if ct := r.current(); ct != nil && ct.Exited() && ct.Exit().OOMKilled {
		reason = RemovedOOM
	}
	m.cfg.Observer.RuntimeRemoved(reason)
	if err := m.finish(context.Background(), e, 0); err != nil {
		m.log.Error("remove exited runtime", "runtime", r.ID, "err", err)
	}
}

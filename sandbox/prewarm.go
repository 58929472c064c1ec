package sandbox

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"executor/images"
	"executor/oci"
	"executor/sandbox/container"
	"executor/sandbox/protocol"
)

// Prewarmed sandboxes. A cold start spends most of its time outside the
// runtime: libcontainer's start (namespaces, root, mounts, cgroups, seccomp
// filter) alone is ~55 ms here, before the runtime's own start. The pool
// keeps sandboxes of recently cold-started images with all of that done and
// their executor-init parked before the command (container.StartParked); a
// cold start takes one, adds the request's own parts (source, variables,
// limits) and hands executor-init the command (specialize).
//
// What differs from a plain cold start: PID 1's command line and
// environment (executor-init --park, and a minimal environment: the
// command's own is the one given), and a hostname chosen when the sandbox
// was made. Everything a runtime can observe of itself otherwise (its root,
// mounts, user, limits, network, environment, working directory) is the
// same.

// prewarmWindow is how far back cold starts count towards a pool's size,
// and so how long an unused pool lasts.
const prewarmWindow = time.Minute

// prewarmTick is how often the pool checks its sizes.
const prewarmTick = time.Second

// prewarmYield is the longest a refill waits for cold starts in flight to
// become ready. Making a sandbox is a libcontainer start, tens of
// milliseconds of CPU: on a small host, made while a runtime boots, it
// slows the very cold start it replaces. Under a steady stream of cold
// starts the pool still refills after this long.
const prewarmYield = 500 * time.Millisecond

// prewarmReplyGrace is how long a refill waits after the end of a cold
// start (its done): done comes as the request's reply is about to be
// written, and a container start of CPU begun at that moment competes with
// the reply on its way out and, on the same host, with the client reading
// it. Measured on this VM (three runs of the scale benchmark, p50 of ten
// creations from a prewarmed sandbox, client side), with the refill begun
// at once: 1.4-1.5 ms for the first ten runtimes, 1.9-3.8 ms for the last
// ten of 1,000; with this grace, 1.1-1.3 and 1.0-1.4 ms. Only the refill's
// start waits: whether to refill is decided when done comes, as before, so
// that back-to-back requests still find the pool refilling between them
// (about 42% of 1,000 creations made back to back took a sandbox, before
// and after).
const prewarmReplyGrace = 5 * time.Millisecond

// RefillGrace is how long the ready parts a cold start takes (disks, and
// network endpoints: netns.Config.PoolGrace) wait to be made again after
// the Manager asks, which it does once that cold start has answered: as
// the prewarm pool's refills (prewarmReplyGrace), they would compete with
// its reply.
const RefillGrace = prewarmReplyGrace

// refillParts has the ready disks and network endpoints taken so far made
// again, RefillGrace from now.
func (m *Manager) refillParts() {
	m.spares.Refill()
	for _, n := range m.cfg.Networks {
		n.Refill()
	}
}

// poolKey is what a prewarmed sandbox is made for: everything of it that
// depends on the request before the request is known.
type poolKey struct {
	image   string
	version protocol.Version
}

// parked is one prewarmed sandbox.
type parked struct {
	rt     *Runtime // its parts, recorded as prepare records them
	img    *images.Image
	rootfs string
	c      *container.Container
}

// pool keeps prewarmed sandboxes. A nil *pool keeps none.
type pool struct {
	m   *Manager
	max int

	mu     sync.Mutex
	idle   map[poolKey][]*parked
	making map[poolKey]int
	demand map[poolKey][]time.Time // cold starts within prewarmWindow
	// starting counts cold starts not yet ready (take to its done);
	// yielding is when the loop first put off a refill for them.
	starting int
	yielding time.Time
	// lastDone is when the last cold start ended (prewarmReplyGrace).
	lastDone time.Time
	closed   bool

	wake chan struct{}
	stop chan struct{}
	done chan struct{}
}

func newPool(m *Manager, max int) *pool {
	if max <= 0 {
		return nil
	}
	p := &pool{
		m: m, max: max,
		idle:   make(map[poolKey][]*parked),
		making: make(map[poolKey]int),
		demand: make(map[poolKey][]time.Time),
		wake:   make(chan struct{}, 1),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	go p.loop()
	return p
}

// eligible says whether spec may start from a prewarmed sandbox: a runtime
// that builds first has its build command to run, which a sandbox could
// have run as well; it starts as always.
func eligible(spec Spec) bool { return spec.Command == "" }

// serves reports whether take looks for a sandbox for spec at all: the
// hits and misses counted are those of cold starts the pool could serve.
func (p *pool) serves(spec Spec) bool { return p != nil && eligible(spec) }

// take counts a cold start of spec's image and returns a sandbox for it,
// or nil when none is ready. done, never nil, is to be called once the
// cold start has answered its execution or failed: refills wait for it
// (prewarmYield).
func (p *pool) take(spec Spec) (sb *parked, done func()) {
	if p == nil || !eligible(spec) {
		return nil, func() {}
	}
	key := poolKey{spec.Image, spec.Version}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, func() {}
	}
	p.demand[key] = append(p.demand[key], time.Now())
	p.starting++
	done = sync.OnceFunc(func() {
		p.mu.Lock()
		p.starting--
		p.lastDone = time.Now()
		p.mu.Unlock()
		p.poke()
	})
	if l := p.idle[key]; len(l) > 0 {
		sb = l[len(l)-1]
		p.idle[key] = l[:len(l)-1]
	}
	return sb, done
}

func (p *pool) poke() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// loop keeps each pool at its target: the cold starts of its key within
// prewarmWindow, at most max. Sandboxes are made one at a time, so that
// refilling never competes with requests for more than one core.
func (p *pool) loop() {
	defer close(p.done)
	t := time.NewTicker(prewarmTick)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-p.wake:
		case <-t.C:
		}
		for {
			key, grow, extra := p.next()
			if extra != nil {
				p.m.log.Debug("prewarmed sandbox retired", "image", key.image, "version", key.version, "container", extra.rt.CID)
				p.m.destroyParked(extra)
				continue
			}
			if !grow {
				break
			}
			if !p.graceAfterReply() {
				p.mu.Lock()
				p.making[key]--
				p.mu.Unlock()
				return
			}
			sb, err := p.m.park(context.Background(), key)
			p.m.refillParts() // for the disk and the endpoint the sandbox took
			p.mu.Lock()
			p.making[key]--
			if err == nil && !p.closed {
				p.idle[key] = append(p.idle[key], sb)
				sb = nil
			}
			p.mu.Unlock()
			if err != nil {
				p.m.log.Warn("prewarming a sandbox failed", "image", key.image, "err", err)
				if imageRefused(err) {
					// Every try would fail alike: forget the demand
					// until a request asks for the image again.
					p.mu.Lock()
					delete(p.demand, key)
					p.mu.Unlock()
				}
				break // the next tick tries again
			}
			if sb != nil {
				p.m.destroyParked(sb)
			}
			select {
			case <-p.stop:
				return
			default:
			}
		}
	}
}

// imageRefused tells whether err, a failed prewarm, is one a request for the
// image gets too (RuntimeFailed: its root, its user, its pull): retrying each
// tick would mostly fail alike, and the next request brings the demand back.
func imageRefused(err error) bool {
	var se *Error
	return errors.As(err, &se) && se.Kind == RuntimeFailed
}

// graceAfterReply waits until prewarmReplyGrace has passed since the last
// cold start ended. It reports false when the pool stopped meanwhile.
func (p *pool) graceAfterReply() bool {
	p.mu.Lock()
	wait := prewarmReplyGrace - time.Since(p.lastDone)
	p.mu.Unlock()
	if wait <= 0 {
		return true
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-p.stop:
		return false
	case <-t.C:
		return true
	}
}

// next picks the work to do: a key to make a sandbox for (grow, counted as
// being made), or a sandbox over its pool's target to destroy (oldest
// first).
func (p *pool) next() (key poolKey, grow bool, extra *parked) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return key, false, nil
	}
	cutoff := time.Now().Add(-prewarmWindow)
	for k, ts := range p.demand {
		i := 0
		for i < len(ts) && ts[i].Before(cutoff) {
			i++
		}
		ts = ts[i:]
		if len(ts) == 0 {
			delete(p.demand, k)
		} else {
			p.demand[k] = ts
		}
	}
	for k, l := range p.idle {
		if target := min(len(p.demand[k]), p.max); len(l) > target {
			extra = l[0]
			p.idle[k] = l[1:]
			if len(p.idle[k]) == 0 {
				delete(p.idle, k)
			}
			return k, false, extra
		}
	}
	for k, ts := range p.demand {
		if len(p.idle[k])+p.making[k] < min(len(ts), p.max) {
			if p.starting > 0 {
				if p.yielding.IsZero() {
					p.yielding = time.Now()
					time.AfterFunc(prewarmYield, p.poke)
				}
				if time.Since(p.yielding) < prewarmYield {
					return key, false, nil
				}
			}
			p.yielding = time.Time{}
			p.making[k]++
			return k, true, nil
		}
	}
	return key, false, nil
}

// close stops refilling and destroys every idle sandbox.
func (p *pool) close() {
	if p == nil {
		return
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	p.mu.Unlock()
	close(p.stop)
	<-p.done
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, l := range idle {
		for _, sb := range l {
			p.m.destroyParked(sb)
		}
	}
}

// park makes a sandbox for key: what assembleBase makes, and a container
// whose executor-init waits for its command, as the image's user, in the
// image's working directory for key's protocol version.
func (m *Manager) park(ctx context.Context, key poolKey) (sb *parked, err error) {
	r := &Runtime{
		ID:       "prewarm",
		CID:      container.NewID(),
		Hostname: randomHex(32),
		Version:  key.version,
		log:      m.log,
	}
	defer func() {
		if err != nil {
			if derr := r.destroy(context.WithoutCancel(ctx), 0); derr != nil {
				m.log.Error("cleanup after failed prewarm", "err", derr)
			}
		}
	}()
	start := time.Now()
	// No request waits for a prewarm: its steps are not a cold start's.
	st := newStages(ctx, nil)
	img, rootfs, err := m.assembleBase(ctx, r, key.image, st, func() error { return nil })
	if err != nil {
		return nil, err
	}
	if err := r.chownDirs(m.cfg.UserNS); err != nil {
		return nil, err
	}
	spec := Spec{Image: key.image, Version: key.version}
	ps, err := m.process(r, spec, img.Config, rootfs)
	if err != nil {
		return nil, err
	}
	// Parked limits until a request sets its own: one core and 256 MB
	// are plenty for an executor-init that waits.
	parkedSpec := m.ociSpec(r, Spec{Version: key.version, CPUs: 1, MemoryMB: 256}, rootfs)
	c, err := m.runner.StartParked(r.CID, parkedSpec, oci.InitPath, ps)
	if err != nil {
		return nil, startFailed(key.image, err)
	}
	r.mu.Lock()
	r.ct = containerProc{c}
	r.mu.Unlock()
	m.log.Debug("sandbox prewarmed", "image", key.image, "version", key.version, "container", r.CID, "duration", time.Since(start).Round(10*time.Microsecond))
	return &parked{rt: r, img: img, rootfs: rootfs, c: c}, nil
}

// destroyParked removes an unused sandbox.
func (m *Manager) destroyParked(sb *parked) {
	if err := sb.rt.destroy(context.Background(), 0); err != nil {
		m.log.Error("remove prewarmed sandbox", "container", sb.rt.CID, "err", err)
	}
}

// specialize makes r out of the sandbox sb: sb's parts become r's, the
// request's source goes into its directory, and executor-init is handed the
// command with the request's environment once the request's limits are
// set. On failure r holds every part of sb, for r.destroy to release.
func (m *Manager) specialize(ctx context.Context, r *Runtime, spec Spec, sb *parked) error {
	start := time.Now()
	src := sb.rt
	src.mu.Lock()
	r.mu.Lock()
	r.CID, r.Dir, r.Hostname = src.CID, src.Dir, src.Hostname
	r.network, r.endpoint, r.addr = src.network, src.endpoint, src.addr
	r.disk, r.unmountRoot, r.shell = src.disk, src.unmountRoot, src.shell
	r.ct, r.layers = src.ct, src.layers
	r.mu.Unlock()
	src.mu.Unlock()
	if !sb.c.Parked() || sb.c.Exited() {
		return errors.New("prewarmed sandbox is no longer parked")
	}
	if spec.Source != "" {
		if err := m.copySource(ctx, r, spec.Source); err != nil {
			return err
		}
	}
	ps, err := m.requestProcess(ctx, r, spec, sb.img, sb.rootfs)
	if err != nil {
		return err
	}
	if err := m.runner.Unpark(sb.c, m.ociSpec(r, spec, sb.rootfs), ps); err != nil {
		return fmt.Errorf("failed to start container: %w", err)
	}
	r.mu.Lock()
	r.main = ps
	r.mu.Unlock()
	m.log.Debug("runtime prepared from a prewarmed sandbox", "runtime", r.ID, "container", r.CID, "duration", time.Since(start).Round(10*time.Microsecond))
	return nil
}

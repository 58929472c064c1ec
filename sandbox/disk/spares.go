package disk

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// SparesConfig says what disks Spares keeps ready.
type SparesConfig struct {
	// Disk is the disks' shape and owner. Spares.Mount hands one out only
	// to a Mount of this very Config.
	Disk Config
	// Dir holds the spares' nameless backing files (Mount's is the mount
	// point's parent): give it the parent of the directories they will be
	// mounted at, so that they take space where Mount's would.
	Dir string
	// Count is how many disks are kept ready.
	Count int
	// Grace is how long a refill waits after Refill asks for it, so that
	// it does not compete with the work that just took a disk.
	Grace time.Duration
	// Logger receives refill failures; nil discards them.
	Logger *slog.Logger
}

// sparesRetry is how long Spares waits to try again after a refill failed.
const sparesRetry = time.Second

// Spares keeps disks made ahead of need, each mounted nowhere (see
// detached), so that a runtime's cold start only attaches one at its
// directory (a move_mount, no I/O) instead of copying a template, binding a
// loop device (which flushes the host's disk) and mounting (synchronous
// superblock I/O): 2-5 ms on an idle host, more behind other I/O. A spare
// holds no path and no mount in any tree: when the daemon dies, the kernel
// frees it with the daemon's fds. A nil *Spares keeps none.
type Spares struct {
	cfg SparesConfig
	log *slog.Logger

	mu     sync.Mutex
	ready  []detached
	closed bool

	wake chan struct{}
	stop chan struct{}
	done chan struct{}
}

// NewSpares starts making cfg.Count disks. It returns nil (no spares) when
// cfg.Count or cfg.Disk.Size is zero; cfg.Disk must be valid otherwise.
func NewSpares(cfg SparesConfig) (*Spares, error) {
	if cfg.Count <= 0 || cfg.Disk.Size == 0 {
		return nil, nil
	}
	if err := cfg.Disk.Validate(); err != nil {
		return nil, fmt.Errorf("disk: spares: %w", err)
	}
	s := &Spares{
		cfg:  cfg,
		log:  cfg.Logger,
		wake: make(chan struct{}, 1),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	go s.fill()
	s.wake <- struct{}{}
	return s, nil
}

// Mount is Mount(ctx, dir, cfg), done with a spare when cfg is the spares'
// Config and one is ready. It never waits for one: without, it makes the
// disk itself. The spare it takes is made again once Refill is called.
func (s *Spares) Mount(ctx context.Context, dir string, cfg Config) (*Disk, error) {
	return mount(ctx, dir, cfg, s)
}

// take hands out a ready spare made for cfg, if there is one.
func (s *Spares) take(cfg Config) (detached, bool) {
	if s == nil || cfg != s.cfg.Disk {
		return detached{}, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.ready) == 0 {
		return detached{}, false
	}
	fs := s.ready[len(s.ready)-1]
	s.ready = s.ready[:len(s.ready)-1]
	return fs, true
}

// Ready says how many spares are ready now.
func (s *Spares) Ready() int {
	if s == nil {
		return 0
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ready)
}

// Refill has the spares taken so far made again, Grace from now.
func (s *Spares) Refill() {
	if s == nil {
		return
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// fill makes spares, one at a time, until Count are ready: Grace after
// each Refill, and sparesRetry after a refill failed.
func (s *Spares) fill() {
	defer close(s.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-s.stop
		cancel()
	}()
	var retry <-chan time.Time
	for {
		select {
		case <-s.stop:
			return
		case <-retry:
		case <-s.wake:
			if !s.sleep(s.cfg.Grace) {
				return
			}
		}
		retry = nil
		for s.Ready() < s.cfg.Count {
			fs, err := newDetached(ctx, s.cfg.Dir, s.cfg.Disk)
			if err != nil {
				if ctx.Err() == nil {
					s.log.Warn("making a spare disk failed", "dir", s.cfg.Dir, "err", err)
				}
				retry = time.After(sparesRetry)
				break
			}
			s.mu.Lock()
			if s.closed {
				s.mu.Unlock()
				fs.close()
				return
			}
			s.ready = append(s.ready, fs)
			n := len(s.ready)
			s.mu.Unlock()
			s.log.Debug("spare disk made", "ready", n)
		}
	}
}

// sleep waits d; it reports false when the spares stopped meanwhile.
func (s *Spares) sleep(d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-s.stop:
		return false
	case <-t.C:
		return true
	}
}

// Close stops making spares and frees the ready ones. Disks handed out are
// not touched. Calling it again does nothing.
func (s *Spares) Close() {
	if s == nil {
		return
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.mu.Unlock()
	close(s.stop)
	<-s.done
	s.mu.Lock()
	ready := s.ready
	s.ready = nil
	s.mu.Unlock()
	for _, fs := range ready {
		fs.close()
	}
}

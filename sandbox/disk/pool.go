package disk

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// PoolConfig says what disks a Pool keeps ready, and where.
type PoolConfig struct {
	// Disk is the shape of the pooled disks (Size, Inodes, TemplateDir).
	// Pool.Mount gives each its owner and mode.
	Disk Config
	// Dir holds the ready disks, each mounted at Dir/<n>, and their backing
	// files. NewPool creates it, makes it a private mount of its own (a mount
	// can only be moved from under a private one) and unmounts what a crash
	// left there.
	Dir string
	// Size is how many disks are kept ready. Zero turns the pool off:
	// Pool.Mount is Mount.
	Size int
	// Logger receives refill failures; nil discards them.
	Logger *slog.Logger
}

// Pool keeps disks formatted and mounted ahead of need, so that a runtime's
// cold start only moves one into place (a mount move and a chown, no I/O)
// instead of paying for the loop device and the mount, whose I/O waits behind
// everything else queued on the host's disk.
type Pool struct {
	cfg    PoolConfig
	log    *slog.Logger
	ready  chan *Disk // nil when the pool is off
	stop   chan struct{}
	cancel context.CancelFunc // abandons a refill in progress
	done   sync.WaitGroup
	seq    atomic.Uint64
	once   sync.Once
}

// NewPool prepares cfg.Dir and starts keeping cfg.Size disks ready there.
// Close stops it.
func NewPool(cfg PoolConfig) (*Pool, error) {
	p := &Pool{cfg: cfg, log: cfg.Logger, stop: make(chan struct{})}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	if cfg.Size < 0 {
		return nil, fmt.Errorf("disk: pool size %d is negative", cfg.Size)
	}
	if cfg.Size == 0 || cfg.Disk.Size == 0 {
		return p, nil
	}
	if err := cfg.Disk.Validate(); err != nil {
		return nil, fmt.Errorf("disk: pool: %w", err)
	}
	if err := preparePoolDir(cfg.Dir); err != nil {
		return nil, fmt.Errorf("disk: pool %s: %w", cfg.Dir, err)
	}
	// The filler holds one ready disk while it waits to hand it over, so
	// the channel holds one less.
	p.ready = make(chan *Disk, cfg.Size-1)
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	p.done.Add(1)
	go p.fill(ctx)
	return p, nil
}

// preparePoolDir creates dir, unmounts and removes what a crash left in it,
// and makes it a private mount.
func preparePoolDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		if err := Unmount(path); err != nil {
			return err
		}
		if err := os.Remove(path); err != nil {
			return err
		}
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	root, _, err := isMountRoot(fd)
	unix.Close(fd)
	if err != nil {
		return err
	}
	if !root {
		if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind mount: %w", err)
		}
	}
	if err := unix.Mount("", dir, "", unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make private: %w", err)
	}
	return nil
}

// fill keeps the pool full. Failures back off, up to a second.
func (p *Pool) fill(ctx context.Context) {
	defer p.done.Done()
	backoff := 10 * time.Millisecond
	for {
		select {
		case <-p.stop:
			return
		default:
		}
		d, err := p.make(ctx)
		if err != nil {
			p.log.Warn("disk pool refill", "dir", p.cfg.Dir, "err", err)
			select {
			case <-p.stop:
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 10 * time.Millisecond
		select {
		case p.ready <- d:
		case <-p.stop:
			if err := p.discard(d); err != nil {
				p.log.Warn("disk pool: drop a ready disk", "dir", d.dir, "err", err)
			}
			return
		}
	}
}

func (p *Pool) make(ctx context.Context) (*Disk, error) {
	dir := filepath.Join(p.cfg.Dir, strconv.FormatUint(p.seq.Add(1), 10))
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, err
	}
	d, err := Mount(ctx, dir, p.cfg.Disk)
	if err != nil {
		return nil, errors.Join(err, os.Remove(dir))
	}
	return d, nil
}

// discard unmounts a ready disk and removes its mount point.
func (p *Pool) discard(d *Disk) error {
	if err := d.Unmount(); err != nil {
		return err
	}
	return os.Remove(d.dir)
}

// Mount is Mount(ctx, dir, cfg), done by moving a ready disk into place when
// cfg has the pool's Size and Inodes and a disk is ready. It never waits for
// the pool: when none is ready it makes the disk itself.
func (p *Pool) Mount(ctx context.Context, dir string, cfg Config) (*Disk, error) {
	if p.ready == nil || cfg.Size == 0 || cfg.size() != p.cfg.Disk.size() || cfg.inodes() != p.cfg.Disk.inodes() {
		return Mount(ctx, dir, cfg)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("disk: mount at %s: %w", dir, err)
	}
	// Check first, so that a bad dir does not cost a ready disk.
	if err := checkMountPoint(dir); err != nil {
		return nil, fmt.Errorf("disk: mount at %s: %w", dir, err)
	}
	var ready *Disk
	select {
	case ready = <-p.ready:
	default:
		return Mount(ctx, dir, cfg)
	}
	if err := unix.Mount(ready.dir, dir, "", unix.MS_MOVE, ""); err != nil {
		return nil, errors.Join(fmt.Errorf("disk: move %s to %s: %w", ready.dir, dir, err), p.discard(ready))
	}
	if err := os.Remove(ready.dir); err != nil {
		// Only an empty directory left in Dir, which NewPool removes.
		p.log.Warn("disk pool: remove a used mount point", "err", err)
	}
	d := &Disk{dir: dir, dev: ready.dev}
	if err := setOwner(dir, cfg); err != nil {
		return nil, errors.Join(fmt.Errorf("disk: mount at %s: %w", dir, err), d.Unmount())
	}
	return d, nil
}

// Close stops refilling and unmounts the ready disks and Dir's own mount.
// Disks handed out stay mounted. Calling it again does nothing.
func (p *Pool) Close() error {
	var errs []error
	p.once.Do(func() {
		close(p.stop)
		if p.ready == nil {
			return
		}
		p.cancel()
		p.done.Wait()
		for drained := false; !drained; {
			select {
			case d := <-p.ready:
				errs = append(errs, p.discard(d))
			default:
				drained = true
			}
		}
		if err := unix.Unmount(p.cfg.Dir, 0); err != nil {
			errs = append(errs, fmt.Errorf("disk: pool: unmount %s: %w", p.cfg.Dir, err))
		}
	})
	return errors.Join(errs...)
}

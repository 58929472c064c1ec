package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"executor/images"
	"executor/netns"
	"executor/sandbox/build"
	"executor/sandbox/container"
	"executor/sandbox/disk"
	"executor/sandbox/protocol"
)

// Live restore (Config.LiveRestore).
//
// A ready runtime has a record in <DataDir>/state, written when its creation
// succeeds and removed the moment it leaves the table. The record holds what
// the daemon knows of the runtime and cannot read back from the host: its id,
// key, request, main process, image layers and network endpoint. Detach, the
// shutdown of live restore, writes each record once more with the runtime's
// last use and leaves the runtimes running; Reconcile adopts every runtime a
// record names and whose parts are all still in place, before it removes
// what an earlier process left. A record whose runtime cannot be adopted
// (its container ended while no daemon ran, a part is missing) is removed,
// and so is whatever exists of its runtime, as without live restore.
//
// The state directory is the daemon's alone (0700 under the data dir);
// runtimes never see it. Records are written to a temporary file and renamed,
// so a crash leaves either the old record or the new one.

// recordFormat is the version of the record's layout: a record of another
// format is not adopted.
const recordFormat = 1

// maxRecordSize bounds what Reconcile reads of one record: the build output
// it holds (build.MaxOutput) may grow sixfold as JSON (\u escapes).
const maxRecordSize = 8 << 20

// record is one runtime's state record.
type record struct {
	Format   int               `json:"format"`
	ID       string            `json:"id"`
	Name     string            `json:"name"`
	CID      string            `json:"cid"`
	Hostname string            `json:"hostname"`
	Secret   string            `json:"secret"`
	Image    string            `json:"image"`
	Layers   []string          `json:"layers"`
	Created  time.Time         `json:"created"`
	Updated  time.Time         `json:"updated"`
	Status   string            `json:"status"`
	Spec     Spec              `json:"spec"`
	Command  []string          `json:"command"`
	Shell    string            `json:"shell"`
	Main     container.Process `json:"main"`
	Endpoint netns.Endpoint    `json:"endpoint"`
	Disk     bool              `json:"disk"`
	// Log is the build output, which a log stream of the runtime replays.
	Log []build.Entry `json:"log,omitempty"`
	// Output is the tail of the main process's output when the record was
	// written (the runtime's output after a restart goes on from it).
	Output string `json:"output,omitempty"`
}

func (m *Manager) stateDir() string { return filepath.Join(m.cfg.DataDir, "state") }

func (m *Manager) recordPath(cid string) string {
	return filepath.Join(m.stateDir(), cid+".json")
}

// record is r's state record as of now, with the build output log.
func (r *Runtime) record(log *build.Output) (record, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.endpoint == nil || r.ct == nil || r.Dir == "" {
		return record{}, errors.New("runtime is not whole")
	}
	return record{
		Format:   recordFormat,
		ID:       r.ID,
		Name:     r.Name,
		CID:      r.CID,
		Hostname: r.Hostname,
		Secret:   r.Secret,
		Image:    r.Image,
		Layers:   r.layers,
		Created:  r.Created,
		Updated:  r.updated,
		Status:   r.status,
		Spec:     r.spec,
		Command:  r.command,
		Shell:    r.shell,
		Main:     r.main,
		Endpoint: *r.endpoint,
		Disk:     r.disk != nil,
		Log:      log.Snapshot(),
		Output:   r.ct.Output(),
	}, nil
}

// saveRecord writes r's record, replacing an earlier one at once.
func (m *Manager) saveRecord(r *Runtime, log *build.Output) error {
	rec, err := r.record(log)
	if err != nil {
		return err
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(m.stateDir(), 0o700); err != nil {
		return err
	}
	tmp := filepath.Join(m.stateDir(), fmt.Sprintf(".%s.%x.tmp", rec.CID, rand.Uint64()))
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, m.recordPath(rec.CID)); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// forget removes r's record: r is leaving the table, and a daemon that
// starts after this must not bring it back.
func (m *Manager) forget(r *Runtime) {
	if !m.cfg.LiveRestore || r == nil || r.CID == "" {
		return
	}
	if err := os.Remove(m.recordPath(r.CID)); err != nil && !errors.Is(err, os.ErrNotExist) {
		m.log.Error("remove runtime's state record", "runtime", r.ID, "container", r.CID, "err", err)
	}
}

// remember writes the record of r, which has just become ready with the
// build output log. Without it the runtime still serves; only a restart of
// the daemon loses it.
func (m *Manager) remember(r *Runtime, log *build.Output) {
	if !m.cfg.LiveRestore {
		return
	}
	if err := m.saveRecord(r, log); err != nil {
		m.log.Error("write runtime's state record: a restart of the executor will remove this runtime", "runtime", r.ID, "container", r.CID, "err", err)
	}
}

// Detach is the shutdown of live restore: it removes the prewarmed
// sandboxes and the runtimes still being created, waits for deletions in
// progress, stops maintenance and sampling, and leaves every ready runtime
// running, with its record written afresh (its last use), for the next
// start to adopt. Requests must have ended (the API drained): an execution
// cut off here is lost to its client, not to the runtime.
func (m *Manager) Detach(ctx context.Context) error {
	if !m.cfg.LiveRestore {
		return errors.New("sandbox: Detach without live restore")
	}
	m.usage.Close()
	m.pool.close()
	m.mu.Lock()
	m.closing = true
	var pending, ready []*entry
	for _, e := range m.table {
		if e.pending() || e.rt == nil {
			pending = append(pending, e)
			m.dropLocked(e)
		} else {
			ready = append(ready, e)
		}
	}
	m.mu.Unlock()
	m.stopMaintenance()
	var wg sync.WaitGroup
	errs := make([]error, len(pending))
	for i, e := range pending {
		wg.Go(func() { errs[i] = m.finish(ctx, e, m.cfg.StopGrace) })
	}
	wg.Wait()
	m.teardowns.Wait()
	kept := 0
	for _, e := range ready {
		r := e.rt
		// No restart from here: the next daemon decides what happens to a
		// runtime whose main process ends while none runs.
		r.mu.Lock()
		r.stopped = true
		r.mu.Unlock()
		if r.httpc != nil {
			r.httpc.CloseIdleConnections()
		}
		if err := m.saveRecord(r, e.log); err != nil {
			errs = append(errs, fmt.Errorf("keep runtime %s: %w", r.ID, err))
			continue
		}
		kept++
	}
	m.log.Info("runtimes left running for the next start (OPR_EXECUTOR_LIVE_RESTORE)", "runtimes", kept)
	return errors.Join(errs...)
}

// restore adopts the runtime of every record, and returns the container ids
// it adopted: what Reconcile must leave alone. A record that cannot be
// adopted is removed; what exists of its runtime is Reconcile's to remove.
func (m *Manager) restore(ctx context.Context) map[string]bool {
	adopted := map[string]bool{}
	ents, err := os.ReadDir(m.stateDir())
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			m.log.Error("read runtimes' state records", "dir", m.stateDir(), "err", err)
		}
		return adopted
	}
	for _, d := range ents {
		name := d.Name()
		path := filepath.Join(m.stateDir(), name)
		cid, ok := strings.CutSuffix(name, ".json")
		if !ok || strings.HasPrefix(name, ".") || !d.Type().IsRegular() {
			os.RemoveAll(path) // a temporary file of an interrupted write, or nothing of ours
			continue
		}
		if ctx.Err() != nil {
			break
		}
		rec, err := readRecord(path)
		if err == nil && rec.CID != cid {
			err = fmt.Errorf("record names container %q", rec.CID)
		}
		if err == nil {
			err = m.adopt(ctx, rec)
		}
		if err != nil {
			m.log.Warn("runtime not restored: removing it", "record", name, "runtime", rec.ID, "err", err)
			if rerr := os.Remove(path); rerr != nil {
				m.log.Error("remove state record", "record", path, "err", rerr)
			}
			continue
		}
		adopted[cid] = true
	}
	if len(adopted) > 0 {
		m.log.Info("restored runtimes left running by an earlier run", "runtimes", len(adopted))
	}
	return adopted
}

// readRecord reads and checks one record: the state directory is the
// daemon's, but a record is still read as bounded, regular, and whole.
func readRecord(path string) (record, error) {
	var rec record
	// O_NONBLOCK: a FIFO in its place must not hold the start.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return rec, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return rec, err
	}
	if !fi.Mode().IsRegular() {
		return rec, errors.New("not a regular file")
	}
	b, err := io.ReadAll(io.LimitReader(f, maxRecordSize+1))
	if err != nil {
		return rec, err
	}
	if len(b) > maxRecordSize {
		return rec, fmt.Errorf("larger than %d bytes", maxRecordSize)
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, err
	}
	switch {
	case rec.Format != recordFormat:
		return rec, fmt.Errorf("record format %d, this executor reads %d", rec.Format, recordFormat)
	case rec.ID == "" || rec.CID == "" || rec.Secret == "" || rec.Image == "":
		return rec, errors.New("record incomplete")
	case !strings.HasPrefix(rec.CID, container.IDPrefix) || filepath.Base(rec.CID) != rec.CID:
		return rec, fmt.Errorf("container id %q is not one of ours", rec.CID)
	case len(rec.Main.Args) == 0:
		return rec, errors.New("record has no main process")
	case rec.Spec.RuntimeID != rec.ID || rec.Spec.Image != rec.Image:
		return rec, errors.New("record's id or image does not match its request")
	}
	return rec, nil
}

// adopt makes the runtime of rec a row of the table again: its container,
// network endpoint, disk and root are taken over as they are. On failure
// the container is killed and the endpoint given up, and the rest (root,
// disk, directory, cgroups) is left to Reconcile's sweep, which removes
// them without the records' help.
func (m *Manager) adopt(ctx context.Context, rec record) (err error) {
	m.mu.Lock()
	taken := m.table[rec.ID] != nil
	m.mu.Unlock()
	if taken {
		return fmt.Errorf("runtime %q is already in the table", rec.ID)
	}
	var network *netns.Network
	for _, n := range m.cfg.Networks {
		if n.Name() == rec.Endpoint.Network {
			network = n
		}
	}
	if network == nil {
		return fmt.Errorf("its network %q is not one of this executor's (OPR_EXECUTOR_NETWORK)", rec.Endpoint.Network)
	}
	r := m.newRuntime(rec.Spec, rec.Name, rec.Hostname, rec.Secret, rec.Created, rec.CID)
	r.Dir = filepath.Join(m.runDir, rec.CID)
	r.layers, r.main, r.command, r.shell = rec.Layers, rec.Main, rec.Command, rec.Shell
	r.updated, r.status, r.initialised = rec.Updated, rec.Status, true
	if r.status == "" || r.status == "pending" {
		r.status = "Up"
	}
	c, err := m.runner.Adopt(rec.CID, rec.Main, rec.Output)
	if err != nil {
		return fmt.Errorf("container: %w", err)
	}
	var ep *netns.Endpoint
	defer func() {
		if err == nil {
			return
		}
		c.Stop(0)
		if derr := c.Destroy(); derr != nil {
			m.log.Error("remove container of a runtime not restored", "container", rec.CID, "err", derr)
		}
		if ep != nil {
			if derr := network.Detach(context.WithoutCancel(ctx), ep); derr != nil {
				m.log.Error("detach network of a runtime not restored", "container", rec.CID, "err", derr)
			}
		}
	}()
	ep, err = network.Adopt(rec.Endpoint)
	if err != nil {
		return fmt.Errorf("network: %w", err)
	}
	dk, err := disk.Adopt(r.Dir)
	if err != nil {
		return err
	}
	if (dk != nil) != rec.Disk {
		return fmt.Errorf("disk mounted at %s: %t, recorded: %t", r.Dir, dk != nil, rec.Disk)
	}
	if err := m.cfg.Images.AdoptRoot(&images.Image{Ref: rec.Image, Layers: rec.Layers}, r.rootDir()); err != nil {
		return err
	}
	r.mu.Lock()
	r.ct = containerProc{c}
	r.network, r.endpoint, r.addr = network, ep, ep.Addr.String()+":"+fmt.Sprint(protocol.Port)
	r.disk, r.unmountRoot = dk, m.cfg.Images.UnmountRoot
	r.mu.Unlock()
	log := build.FinishedOutput(rec.Log)
	e := &entry{
		id:       rec.ID,
		created:  rec.Created,
		image:    rec.Image,
		version:  rec.Spec.Version,
		name:     rec.Name,
		ready:    make(chan struct{}),
		cancel:   func() {},
		rt:       r,
		log:      log,
		gone:     make(chan struct{}),
		hostname: rec.Hostname,
		secret:   rec.Secret,
	}
	close(e.ready)
	m.mu.Lock()
	if m.table[rec.ID] != nil {
		m.mu.Unlock()
		// The root and disk are released by the sweep (their dir is not
		// adopted), the image use with the root.
		m.cfg.Images.UnmountRoot(r.rootDir())
		return fmt.Errorf("runtime %q is already in the table", rec.ID)
	}
	m.table[rec.ID] = e
	m.mu.Unlock()
	r.supervising.Add(1)
	go r.supervise()
	m.log.Info("runtime restored", "runtime", rec.ID, "container", rec.CID, "created", rec.Created.Format(time.RFC3339))
	return nil
}

// clearRecords removes every record: without live restore, an earlier run's
// runtimes are all removed, and their records with them.
func (m *Manager) clearRecords() error {
	err := os.RemoveAll(m.stateDir())
	if err != nil {
		return fmt.Errorf("remove state records: %w", err)
	}
	return nil
}

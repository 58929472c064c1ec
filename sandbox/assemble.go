package sandbox

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"executor/images"
	"executor/netns"
	"executor/oci"
	"executor/sandbox/container"
	"executor/sandbox/protocol"
)

// prepare assembles r: its directory and disk, source, build cache, image
// root, network endpoint and running container. Each part is recorded on r
// as soon as it exists, so that r.destroy releases whatever was made when a
// later step fails. A prewarmed sandbox of the image, when the pool has
// one, stands for everything but the request's own parts (see prewarm.go).
func (m *Manager) prepare(ctx context.Context, r *Runtime, spec Spec) (err error) {
	sb, done := m.pool.take(spec)
	r.mu.Lock()
	// The disk spare and the network endpoint this cold start may take
	// are made again once it has answered, as the pool's sandbox is.
	r.coldDone = func() { done(); m.refillParts() }
	r.mu.Unlock()
	if m.pool.serves(spec) {
		m.cfg.Observer.Prewarm(ctx, sb != nil)
	}
	defer func() { m.cfg.Observer.ColdStart(ctx, sb != nil, time.Since(r.Created), err) }()
	if sb != nil {
		err := m.specialize(ctx, r, spec, sb)
		if err != nil {
			// r holds the sandbox's parts: its destroy removes them.
			m.log.Debug("a prewarmed sandbox could not take the request", "runtime", r.ID, "container", r.CID, "err", err)
		}
		return err
	}
	st := newStages(ctx, m.cfg.Observer)
	defer func() { m.log.Debug("runtime prepared", append([]any{"runtime", r.ID}, st.attrs()...)...) }()
	if m.cfg.Init != "" {
		return m.assembleParked(ctx, r, spec, st)
	}
	rootfs, ps, err := m.assembleConfig(ctx, r, spec, st, func() error {
		if err := m.copyRequestFiles(ctx, r, spec); err != nil {
			return err
		}
		st.mark("source")
		return nil
	})
	if err != nil {
		return err
	}
	c, err := m.runner.Start(r.CID, m.ociSpec(r, spec, rootfs), ps)
	if err != nil {
		return startFailed(spec.Image, err)
	}
	st.mark("container")
	r.mu.Lock()
	r.ct, r.main = containerProc{c}, ps
	r.mu.Unlock()
	return nil
}

// assembleParked is prepare's cold start with executor-init: the container
// starts parked (as a prewarmed sandbox's does, but with the request's
// limits) while the request's source and build cache are copied into its
// directory, and is handed its command once both are done, so the copy is
// not on the request's path. The runtime runs as one started with its
// command would: the same container, process, limits and files.
func (m *Manager) assembleParked(ctx context.Context, r *Runtime, spec Spec, st *stages) error {
	// The directories are the mapped root's before the container starts
	// (its working directory may be one), and once more for the files
	// copied in below.
	rootfs, ps, err := m.assembleConfig(ctx, r, spec, st, func() error { return nil })
	if err != nil {
		return err
	}
	copied := make(chan error, 1)
	copyStart := time.Now()
	var copyTook time.Duration // written before the send, read after the receive
	go func() {
		err := m.copyRequestFiles(ctx, r, spec)
		copyTook = time.Since(copyStart)
		copied <- err
	}()
	oc := m.ociSpec(r, spec, rootfs)
	c, err := m.runner.StartParked(r.CID, oc, oci.InitPath, ps)
	cerr := <-copied
	st.add("source", copyStart, copyTook)
	if err != nil {
		if cerr != nil {
			// Both failed, likely of one cause (a full data dir):
			// the copy's error says it in the request's terms.
			return cerr
		}
		return startFailed(spec.Image, err)
	}
	// Recorded at once: a failure below leaves it to r.destroy.
	r.mu.Lock()
	r.ct = containerProc{c}
	r.mu.Unlock()
	if cerr != nil {
		return cerr
	}
	if spec.Source != "" || cacheEnabled(spec) {
		if err := r.chownDirs(m.cfg.UserNS); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := m.runner.Unpark(c, oc, ps); err != nil {
		return fmt.Errorf("failed to start container: %w", err)
	}
	st.mark("container")
	r.mu.Lock()
	r.main = ps
	r.mu.Unlock()
	return nil
}

// startFailed is a container start's failure as the client sees it: the
// image's, for a root that cannot take executor-init; the host's otherwise.
func startFailed(image string, err error) error {
	var me *container.InitMountPointError
	if errors.As(err, &me) {
		return newError(RuntimeFailed, fmt.Sprintf("Image %s cannot be run: %s.", image, me), err)
	}
	return fmt.Errorf("failed to start container: %w", err)
}

// assembleConfig is assembleBase (own as there) and then the main process
// spec asks for in r: all a container start needs.
func (m *Manager) assembleConfig(ctx context.Context, r *Runtime, spec Spec, st *stages, own func() error) (rootfs string, ps container.Process, err error) {
	img, rootfs, err := m.assembleBase(ctx, r, spec.Image, st, own)
	if err != nil {
		return "", ps, err
	}
	if ps, err = m.requestProcess(ctx, r, spec, img, rootfs); err != nil {
		return "", ps, err
	}
	st.mark("config")
	return rootfs, ps, nil
}

// copyRequestFiles puts the request's source and build cache into r's
// directory.
func (m *Manager) copyRequestFiles(ctx context.Context, r *Runtime, spec Spec) error {
	if spec.Source != "" {
		if err := m.copySource(ctx, r, spec.Source); err != nil {
			return err
		}
	}
	if cacheEnabled(spec) {
		m.restoreCache(ctx, r, spec.CacheKey)
	}
	return nil
}

// assembleBase makes the parts of r no request decides: its directory and
// disk, image root, network endpoint, hosts and resolv.conf. own runs once
// the directory exists, while the image is pulled and the network
// attached. Each part is recorded on r as soon as it exists (see prepare).
func (m *Manager) assembleBase(ctx context.Context, r *Runtime, image string, st *stages, own func() error) (img *images.Image, rootfs string, err error) {
	r.Dir = filepath.Join(m.runDir, r.CID)
	// The network needs nothing else: set it up while the directories,
	// source, image and root are made.
	network := m.pickNetwork()
	attached := make(chan error, 1)
	go func() {
		ep, err := network.Attach(ctx, r.CID)
		if err == nil {
			r.mu.Lock()
			r.network, r.endpoint = network, ep
			r.addr = ep.Addr.String() + ":3000"
			r.mu.Unlock()
		}
		attached <- err
	}()
	// Whatever happens below, the attachment has ended (and is recorded on
	// r for destroy to release) before assembleBase returns.
	waitNet := func() error {
		if attached == nil {
			return nil
		}
		err := <-attached
		attached = nil
		if err != nil {
			return networkError(network, err)
		}
		return nil
	}
	defer func() {
		if nerr := waitNet(); err == nil {
			err = nerr
		}
	}()
	if err := m.makeDir(ctx, r); err != nil {
		return nil, "", fmt.Errorf("failed to create temporary directory: %w", err)
	}
	if m.cfg.DiskLimit > 0 {
		st.note("spareDisk", r.disk.Spare())
	}
	if err := own(); err != nil {
		return nil, "", err
	}
	img, err = m.cfg.Images.Pull(ctx, image)
	if err != nil {
		return nil, "", pullError(image, err)
	}
	st.mark("pull")
	r.mu.Lock()
	r.layers = img.Layers
	r.mu.Unlock()
	// UnmountRoot undoes a half-made root too: record it first.
	r.mu.Lock()
	r.unmountRoot = m.cfg.Images.UnmountRoot
	r.mu.Unlock()
	rootfs, err = m.cfg.Images.MountRoot(ctx, img, r.rootDir())
	if err != nil {
		return nil, "", fmt.Errorf("prepare root of %s: %w", image, err)
	}
	st.mark("root")
	if err := waitNet(); err != nil {
		return nil, "", err
	}
	st.mark("network")
	st.note("pooledNetwork", r.endpoint.Pooled)
	if err := r.writeNetFiles(); err != nil {
		return nil, "", err
	}
	r.shell = oci.Shell(images.HasBash(rootfs))
	return img, rootfs, nil
}

// requestProcess is the main process spec asks for in r, whose directory
// holds the request's files by now: they are given to the runtime's root.
func (m *Manager) requestProcess(ctx context.Context, r *Runtime, spec Spec, img *images.Image, rootfs string) (container.Process, error) {
	ps, err := m.process(r, spec, img.Config, rootfs)
	if err != nil {
		return ps, err
	}
	if err := ctx.Err(); err != nil {
		return ps, err
	}
	return ps, r.chownDirs(m.cfg.UserNS)
}

// ociSpec is the container of r for spec, its root at rootfs.
func (m *Manager) ociSpec(r *Runtime, spec Spec, rootfs string) oci.Spec {
	return oci.Spec{
		Rootfs:    rootfs,
		Hostname:  r.Hostname,
		NetNSPath: r.endpoint.NSPath,
		CPUs:      spec.CPUs,
		MemoryMB:  spec.MemoryMB,
		PidsLimit: m.cfg.PidsLimit,
		Binds:     binds(r.Dir, spec, m.cfg.Init),
		UserNS:    m.cfg.UserNS,
	}
}

// networkError says why network could not take the runtime: a limit it
// reached is the executor's capacity, with the setting that raises it.
func networkError(network *netns.Network, err error) error {
	if !errors.Is(err, netns.ErrCapacity) {
		return fmt.Errorf("attach network %s: %w", network.Name(), err)
	}
	msg := "Executor is at capacity: network " + network.Name() + " has no room for another runtime."
	var ce *netns.CapacityError
	if errors.As(err, &ce) {
		msg = fmt.Sprintf("Executor is at capacity: network %s: %s.", network.Name(), ce.Limit)
	}
	if errors.Is(err, netns.ErrNoAddress) {
		msg = fmt.Sprintf("Executor is at capacity: network %s has no free address in its subnet %s; "+
			"a larger OPR_EXECUTOR_SUBNET makes room for more runtimes.", network.Name(), network.Subnet())
	}
	return newError(Capacity, msg, err)
}

// containerProc is a *container.Container as a runtime's proc.
type containerProc struct{ *container.Container }

func (c containerProc) Restart() (proc, error) {
	n, err := c.Container.Restart()
	if err != nil {
		return nil, err
	}
	return containerProc{n}, nil
}

func (c containerProc) MarkOOM() oomMark { return c.Container.MarkOOM() }

// pullError is a failed pull as the client sees it: RuntimeFailed when the
// reference, the image or its source was at fault (the pull error has a
// kind), HostFailed for this host's own faults.
func pullError(ref string, err error) error {
	msg := fmt.Sprintf("Missing image %q and failed to pull it: %v", ref, err)
	var perr *images.PullError
	if errors.As(err, &perr) && perr.Kind() != nil {
		return newError(RuntimeFailed, msg, err)
	}
	return newError(HostFailed, msg, err)
}

// binds are the runtime's directories (beneath dir) as the reference mounts
// them for spec's protocol version, and the executor's init when there is one.
func binds(dir string, spec Spec, init string) []oci.Bind {
	b := []oci.Bind{
		{Source: filepath.Join(dir, "src"), Destination: "/tmp"},
		{Source: filepath.Join(dir, "builds"), Destination: spec.Version.CodeDir()},
		{Source: filepath.Join(dir, "hosts"), Destination: "/etc/hosts", ReadOnly: true},
		{Source: filepath.Join(dir, "resolv.conf"), Destination: "/etc/resolv.conf", ReadOnly: true},
	}
	if logs := spec.Version.LogsDir(); logs != "" {
		b = append(b, oci.Bind{Source: filepath.Join(dir, "logs"), Destination: logs})
	}
	if cacheEnabled(spec) {
		b = append(b, oci.Bind{Source: filepath.Join(dir, "cache"), Destination: "/cache"})
	}
	if init != "" {
		b = append(b, oci.Bind{Source: init, Destination: oci.InitPath, ReadOnly: true})
	}
	return b
}

// process is the runtime's main process.
func (m *Manager) process(r *Runtime, spec Spec, img images.ImageConfig, rootfs string) (container.Process, error) {
	env := oci.Env(img.Env, spec.Version.Env(m.envParams(r, spec)))
	if !oci.HasPATH(env) {
		env = append([]string{oci.DefaultPATH}, env...)
	}
	p := container.Process{
		Args: spec.Version.Command(img.Entrypoint, img.Cmd, spec.RuntimeEntrypoint, r.shell, spec.Command != ""),
		Env:  env,
		Cwd:  spec.Version.WorkingDir(img.WorkingDir),
	}
	r.command = p.Args
	if m.cfg.Init != "" {
		p.Args = oci.WithInit(p.Args)
		p.ReportsExit = true
	}
	if img.User != "" {
		u, err := images.LookupUser(rootfs, img.User)
		if err != nil {
			return p, newError(RuntimeFailed, fmt.Sprintf("Image user %q cannot be resolved: %v", img.User, err), err)
		}
		p.UID, p.GID, p.Groups = u.Uid, u.Gid, u.Sgids
	}
	return p, nil
}

// envParams are what the protocol's variables are made of.
func (m *Manager) envParams(r *Runtime, spec Spec) protocol.EnvParams {
	return protocol.EnvParams{
		Variables:       spec.Variables,
		Secret:          r.Secret,
		Entrypoint:      spec.Entrypoint,
		Hostname:        m.cfg.Hostname,
		OutputDirectory: spec.OutputDirectory,
		CPUs:            spec.CPUs,
		MemoryMB:        spec.MemoryMB,
	}
}

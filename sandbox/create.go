package sandbox

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	securejoin "github.com/cyphar/filepath-securejoin"
	"github.com/moby/sys/user"
	"golang.org/x/sys/unix"

	"executor/images"
	"executor/oci"
	"executor/sandbox/disk"
	"executor/storage"
	"executor/storage/safefs"
)

func randomHex(n int) string {
	b := make([]byte, n/2)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

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
	if err != nil {
		return nil, err
	}
	if spec.Remove {
		m.mu.Lock()
		m.dropLocked(e)
		m.mu.Unlock()
		if err := m.finish(ctx, e, 0); err != nil {
			m.log.Error("remove built runtime", "runtime", spec.RuntimeID, "err", err)
		}
	}
	return res, nil
}

// insert adds a pending row, or answers 409 when the id is taken. cancel
// aborts the creation (Delete calls it).
func (m *Manager) insert(spec Spec, cancel context.CancelFunc) (*entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closing {
		return nil, &Error{Type: ErrRuntimeFailed, Code: 503, Message: "Executor is shutting down."}
	}
	if old := m.table[spec.RuntimeID]; old != nil {
		if old.pending() {
			return nil, &Error{Type: ErrRuntimeConflict, Message: "A runtime with the same ID is already being created. Attempt a execution soon."}
		}
		return nil, &Error{Type: ErrRuntimeConflict, Message: "Runtime already exists "}
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
		log:      newOutputLog(),
		gone:     make(chan struct{}),
	}
	m.table[spec.RuntimeID] = e
	return e, nil
}

// settle ends the pending state of e: a failed creation leaves the table.
func (m *Manager) settle(e *entry, err error) {
	e.log.finish()
	if err != nil {
		e.err = err
		m.mu.Lock()
		m.dropLocked(e)
		m.mu.Unlock()
	}
	close(e.ready)
}

// create builds the runtime of e. On failure everything made so far is
// released before it returns.
func (m *Manager) create(ctx context.Context, e *entry, spec Spec) (res *BuildResult, err error) {
	start := e.created
	r := &Runtime{
		ID:       spec.RuntimeID,
		Name:     e.name,
		CID:      "rt-" + randomHex(24),
		Hostname: e.hostname,
		Secret:   e.secret,
		Image:    spec.Image,
		Version:  spec.Version,
		Created:  start,
		spec:     spec,
		log:      m.log,
		updated:  start,
		status:   "pending",
		httpc:    newForwardClient(),
		dns:      m.cfg.DNSServers,
		init:     m.cfg.Init,
	}
	r.Dir = filepath.Join(m.runDir, r.CID)
	defer func() {
		if err != nil {
			if derr := r.destroy(context.WithoutCancel(ctx), m, 0); derr != nil {
				m.log.Error("cleanup after failed creation", "runtime", spec.RuntimeID, "err", derr)
			}
		}
	}()
	if err := m.prepare(ctx, r, spec); err != nil {
		return nil, err
	}
	m.mu.Lock()
	e.rt = r
	m.mu.Unlock()
	res = &BuildResult{StartTime: start, Version: spec.Version, Output: []LogEntry{}}
	if spec.Command != "" {
		if err := m.build(ctx, r, spec, res, e.log); err != nil {
			return nil, err
		}
	}
	res.Duration = time.Since(start)
	r.markUp(res.Duration)
	return res, nil
}

// prepare gives r its directories, source, root, network and running container.
func (m *Manager) prepare(ctx context.Context, r *Runtime, spec Spec) (err error) {
	st := newStages()
	defer func() { m.log.Debug("runtime prepared", append([]any{"runtime", r.ID}, st.attrs()...)...) }()
	// The network needs nothing else: set it up while the directories,
	// source, image and root are made.
	network := m.pickNetwork()
	attached := make(chan error, 1)
	go func() {
		ep, err := network.Attach(ctx, r.CID)
		if err == nil {
			r.mu.Lock()
			r.network, r.endpoint = network, ep
			r.mu.Unlock()
		}
		attached <- err
	}()
	// Whatever happens below, the attachment has ended (and is recorded on
	// r for destroy to release) before prepare returns.
	waitNet := func() error {
		if attached == nil {
			return nil
		}
		err := <-attached
		attached = nil
		if err != nil {
			return fmt.Errorf("attach network %s: %w", network.Name(), err)
		}
		return nil
	}
	defer func() {
		if nerr := waitNet(); err == nil {
			err = nerr
		}
	}()
	if err := m.makeDir(ctx, r); err != nil {
		//lint:ignore ST1005 the reference's message, which clients read
		return fmt.Errorf("Failed to create temporary directory: %w", err)
	}
	if spec.Source != "" {
		if err := m.copySource(ctx, r, spec.Source); err != nil {
			return err
		}
	}
	if cacheEnabled(spec) {
		m.restoreCache(ctx, r, spec.CacheKey)
	}
	st.mark("dirs+source")
	img, err := m.cfg.Images.Pull(ctx, spec.Image)
	if err != nil {
		return pullError(spec.Image, err)
	}
	st.mark("image")
	rootfs, err := m.cfg.Images.MountRoot(ctx, img, filepath.Join(r.Dir, "root"))
	if err != nil {
		return fmt.Errorf("prepare root of %s: %w", spec.Image, err)
	}
	st.mark("root")
	if err := waitNet(); err != nil {
		return err
	}
	ep := r.endpoint
	st.mark("network")
	if err := r.writeNetFiles(); err != nil {
		return err
	}
	imgCfg := oci.ImageConfig(img.Config)
	r.shell = oci.Shell(hasBash(rootfs))
	r.proc, err = m.process(r, spec, imgCfg, rootfs)
	if err != nil {
		return err
	}
	r.cfg, err = oci.Config(oci.Spec{
		Rootfs:     rootfs,
		Hostname:   r.Hostname,
		NetNSPath:  ep.NSPath,
		CgroupPath: filepath.Join(m.cfg.CgroupParent, r.CID),
		CPUs:       spec.CPUs,
		MemoryMB:   spec.MemoryMB,
		PidsLimit:  m.cfg.PidsLimit,
		Binds:      r.binds(spec),
		Cgroup2:    m.cgroup2,
		NoFile:     noFileLimit(),
		Seccomp:    m.seccomp,
		UserNS:     m.cfg.UserNS,
	})
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := r.chownDirs(m.cfg.UserNS); err != nil {
		return err
	}
	st.mark("config")
	ct, err := startContainer(m.stateRoot, r.CID, r.cfg, r.proc)
	if err != nil {
		//lint:ignore ST1005 the reference's message, which clients read
		return fmt.Errorf("Failed to start container: %w", err)
	}
	st.mark("container")
	r.mu.Lock()
	r.ct = ct
	r.mu.Unlock()
	r.supervising.Add(1)
	go r.supervise(m)
	return nil
}

// pullError is a failed pull as the client sees it: the catalogue's 400
// when the reference, the image or its source was at fault (the pull error
// has a kind), a 500 for this host's own faults.
func pullError(ref string, err error) error {
	msg := fmt.Sprintf("Missing image %q and failed to pull it: %v", ref, err)
	var perr *images.PullError
	if errors.As(err, &perr) && perr.Kind() != nil {
		return &Error{Type: ErrRuntimeFailed, Message: msg, Err: err}
	}
	return &Error{Type: ErrRuntimeFailed, Code: 500, Message: msg, Err: err}
}

// copySource fetches the source archive into src/, where the runtime sees it
// as /tmp/code.tar.gz (or /tmp/code.tar for an uncompressed one).
func (m *Manager) copySource(ctx context.Context, r *Runtime, source string) error {
	name := "code.tar.gz"
	if strings.HasSuffix(source, ".tar") {
		name = "code.tar"
	}
	err := m.copySourceTo(ctx, r, source, "src/"+name)
	const prefix = "Failed to copy source code to temporary directory: "
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT):
		return &Error{Type: ErrRuntimeFailed, Message: fmt.Sprintf(prefix+"%s does not fit on the runtime's disk of %d bytes (OPR_EXECUTOR_DISK_LIMIT)", source, m.cfg.DiskLimit), Err: err}
	case errors.Is(err, storage.ErrTooLarge):
		return &Error{Type: ErrRuntimeFailed, Message: fmt.Sprintf(prefix+"%s is larger than the build size limit of %d bytes (OPR_EXECUTOR_BUILD_SIZE_LIMIT)", source, m.cfg.BuildSizeLimit), Err: err}
	case refusedPath(err):
		return &Error{Type: ErrRuntimeFailed, Code: 400, Message: prefix + sourceReason(source, err), Err: err}
	default:
		return &Error{Type: ErrRuntimeFailed, Code: 500, Message: prefix + sourceReason(source, err), Err: err}
	}
}

// copySourceTo copies source into the runtime's directory as name. The
// source device caps the copy at the build size limit (by size before the
// first byte, and as it streams) and stops it when ctx ends.
func (m *Manager) copySourceTo(ctx context.Context, r *Runtime, source, name string) error {
	rc, err := m.sourceDev.Read(ctx, source)
	if err != nil {
		return err
	}
	defer rc.Close()
	d, err := r.openDir()
	if err != nil {
		return err
	}
	defer d.Close()
	f, err := d.Create(name, 0o644)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, rc)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// refusedPath tells a path the client should not have sent (outside the
// storage roots, not a regular file, malformed): a 400, not a failure.
func refusedPath(err error) bool {
	return errors.Is(err, storage.ErrOutsideRoots) || errors.Is(err, storage.ErrNotRegular) || errors.Is(err, storage.ErrInvalidPath)
}

// checkStorage refuses a source or destination the storage device will
// refuse, in milliseconds, before a runtime is made or a build runs.
func (m *Manager) checkStorage(spec Spec) error {
	o := m.sources
	if spec.Source != "" {
		// A missing file (or root) is left to the copy, which reports it
		// as the reference does.
		if err := o.CheckPath(spec.Source); refusedPath(err) {
			return &Error{Type: ErrRuntimeFailed, Code: 400, Message: "Failed to copy source code to temporary directory: " + err.Error(), Err: err}
		}
	}
	if spec.Destination != "" && spec.Command != "" {
		if err := o.CheckPath(spec.Destination); err != nil {
			return &Error{Type: ErrBuildFailed, Code: 400, Message: "Failed to move built code to storage: " + err.Error(), Err: err}
		}
	}
	return nil
}

func sourceReason(source string, err error) string {
	switch {
	case errors.Is(err, storage.ErrOutsideRoots), errors.Is(err, storage.ErrNotRegular):
		return err.Error()
	case errors.Is(err, storage.ErrNotFound):
		return fmt.Sprintf("%s does not exist", source)
	case errors.Is(err, storage.ErrInvalidPath):
		return fmt.Sprintf("%s is not a valid path", source)
	case errors.Is(err, storage.ErrUnauthorized):
		return fmt.Sprintf("%s could not be read: the storage device refused the credentials", source)
	case errors.Is(err, storage.ErrUnavailable):
		return fmt.Sprintf("%s could not be read: the storage device is unreachable", source)
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("%s could not be read: the copy was cancelled", source)
	default:
		return fmt.Sprintf("%s could not be read", source)
	}
}

// binds are the runtime's directories as the reference mounts them.
func (r *Runtime) binds(spec Spec) []oci.Bind {
	code := "/mnt/code"
	if spec.Version == "v2" {
		code = "/usr/code"
	}
	b := []oci.Bind{
		{Source: filepath.Join(r.Dir, "src"), Destination: "/tmp"},
		{Source: filepath.Join(r.Dir, "builds"), Destination: code},
		{Source: filepath.Join(r.Dir, "hosts"), Destination: "/etc/hosts", ReadOnly: true},
		{Source: filepath.Join(r.Dir, "resolv.conf"), Destination: "/etc/resolv.conf", ReadOnly: true},
	}
	if spec.Version == "v4" || spec.Version == "v5" {
		b = append(b, oci.Bind{Source: filepath.Join(r.Dir, "logs"), Destination: "/mnt/logs"})
	}
	if cacheEnabled(spec) {
		b = append(b, oci.Bind{Source: filepath.Join(r.Dir, "cache"), Destination: "/cache"})
	}
	if r.init != "" {
		b = append(b, oci.Bind{Source: r.init, Destination: oci.InitPath, ReadOnly: true})
	}
	return b
}

// process is the runtime's main process.
func (m *Manager) process(r *Runtime, spec Spec, img oci.ImageConfig, rootfs string) (processSpec, error) {
	env := oci.Env(img.Env, m.runtimeEnv(r, spec))
	if !oci.HasPATH(env) {
		env = append([]string{oci.DefaultPATH}, env...)
	}
	cwd := img.WorkingDir
	if spec.Version == "v2" {
		cwd = "/usr/code"
	}
	if cwd == "" {
		cwd = "/"
	}
	ps := processSpec{
		Args: oci.Command(img, spec.RuntimeEntrypoint, spec.Version, spec.Command != "", r.shell == "bash"),
		Env:  env,
		Cwd:  cwd,
	}
	if r.init != "" {
		ps.Args = oci.WithInit(ps.Args)
	}
	if img.User != "" {
		u, err := execUser(rootfs, img.User)
		if err != nil {
			return ps, &Error{Type: ErrRuntimeFailed, Message: fmt.Sprintf("Image user %q cannot be resolved: %v", img.User, err), Err: err}
		}
		ps.UID, ps.GID, ps.Sgid = u.Uid, u.Gid, u.Sgids
	}
	return ps, nil
}

// maxUserDB caps what is read of an image's /etc/passwd and /etc/group.
const maxUserDB = 4 << 20

// execUser resolves an image's User against its /etc/passwd and /etc/group,
// read beneath the root: an image may make them links out of it, FIFOs or
// huge files, and the daemon must not follow, block or fill up.
func execUser(rootfs, spec string) (*user.ExecUser, error) {
	d, err := safefs.OpenDir(rootfs, safefs.Options{FollowBeneath: true})
	if err != nil {
		return nil, err
	}
	defer d.Close()
	read := func(name string) (io.Reader, error) {
		data, size, err := d.ReadFile(name, maxUserDB)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil // numeric ids work without the files
		}
		if err != nil {
			return nil, fmt.Errorf("/%s: %w", name, err)
		}
		if size > maxUserDB {
			return nil, fmt.Errorf("/%s is larger than %d bytes", name, maxUserDB)
		}
		return bytes.NewReader(data), nil
	}
	passwd, err := read("etc/passwd")
	if err != nil {
		return nil, err
	}
	group, err := read("etc/group")
	if err != nil {
		return nil, err
	}
	return user.GetExecUser(spec, &user.ExecUser{}, passwd, group)
}

// runtimeEnv is the variables a runtime gets (§5.3): the user's, then the
// protocol's (which win), then the output directory and CI=true.
func (m *Manager) runtimeEnv(r *Runtime, spec Spec) map[string]string {
	env := make(map[string]string, len(spec.Variables)+8)
	for k, v := range spec.Variables {
		env[k] = v
	}
	switch spec.Version {
	case "v2":
		env["INTERNAL_RUNTIME_KEY"] = r.Secret
		env["INTERNAL_RUNTIME_ENTRYPOINT"] = spec.Entrypoint
		env["INERNAL_EXECUTOR_HOSTNAME"] = m.cfg.Hostname
	case "v3":
		env["OPEN_RUNTIMES_SECRET"] = r.Secret
		env["OPEN_RUNTIMES_ENTRYPOINT"] = spec.Entrypoint
		env["OPEN_RUNTIMES_HOSTNAME"] = m.cfg.Hostname
	default:
		env["OPEN_RUNTIMES_SECRET"] = r.Secret
		env["OPEN_RUNTIMES_ENTRYPOINT"] = spec.Entrypoint
		env["OPEN_RUNTIMES_HOSTNAME"] = m.cfg.Hostname
		env["OPEN_RUNTIMES_CPUS"] = strconv.FormatFloat(spec.CPUs, 'f', -1, 64)
		env["OPEN_RUNTIMES_MEMORY"] = strconv.FormatInt(spec.MemoryMB, 10)
	}
	if spec.OutputDirectory != "" && spec.OutputDirectory != "0" {
		env["OPEN_RUNTIMES_OUTPUT_DIRECTORY"] = spec.OutputDirectory
	}
	env["CI"] = "true"
	return env
}

func hasBash(rootfs string) bool {
	for _, p := range []string{"/bin/bash", "/usr/bin/bash"} {
		full, err := securejoin.SecureJoin(rootfs, p)
		if err != nil {
			continue
		}
		if _, err := os.Stat(full); err == nil {
			return true
		}
	}
	return false
}

// makeDir makes the runtime's directory and the directories mounted into
// it. The directory is private (0700): other host users must not read a
// tenant's source, artifacts or logs, even knowing their paths from the
// mount table.
//
// The directory is the mount point of the runtime's own disk (DiskLimit):
// its root's writes, source, builds, logs and cache all count against it.
func (m *Manager) makeDir(ctx context.Context, r *Runtime) error {
	if err := os.Mkdir(r.Dir, 0o700); err != nil {
		return err
	}
	dk, err := disk.Mount(ctx, r.Dir, m.diskConfig(m.cfg.UserNS))
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.disk = dk
	r.mu.Unlock()
	d, err := r.openDir()
	if err != nil {
		return err
	}
	defer d.Close()
	for _, name := range []string{"src", "builds", "logs"} {
		if err := d.Mkdir(name, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// chownDirs gives the runtime's mounted directories, and what is in them, to
// its mapped root, so that root inside the runtime owns them. (The runtime's
// directory itself got that owner and 0700 when its disk was mounted.)
func (r *Runtime) chownDirs(m *oci.IDMap) error {
	if m == nil {
		return nil
	}
	d, err := r.openDir()
	if err != nil {
		return err
	}
	defer d.Close()
	for _, name := range []string{"src", "builds", "logs", "cache"} {
		err := d.ChownTree(name, int(m.HostUID), int(m.HostGID))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("give runtime directories to its root: %w", err)
		}
	}
	return nil
}

// writeNetFiles writes the runtime's /etc/hosts and /etc/resolv.conf.
func (r *Runtime) writeNetFiles() error {
	d, err := r.openDir()
	if err != nil {
		return err
	}
	defer d.Close()
	hosts := fmt.Sprintf("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n%s\t%s\n", r.endpoint.Addr, r.Hostname)
	if err := d.WriteFile("hosts", []byte(hosts), 0o644); err != nil {
		return err
	}
	return d.WriteFile("resolv.conf", r.resolvConf(), 0o644)
}

// resolvConf is the runtime's resolver configuration: the configured
// nameservers, or the host's without loopback ones, which a runtime in its own
// network namespace cannot reach.
func (r *Runtime) resolvConf() []byte {
	data, _ := os.ReadFile("/etc/resolv.conf")
	var b strings.Builder
	for _, ns := range r.dns {
		b.WriteString("nameserver " + ns.String() + "\n")
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "nameserver":
			if r.dns != nil || len(f) < 2 || strings.HasPrefix(f[1], "127.") || f[1] == "::1" {
				continue
			}
		case "search", "options":
		default:
			continue
		}
		b.WriteString(line + "\n")
	}
	return []byte(b.String())
}

// unmountDisk drops the runtime's disk and all it holds.
func (r *Runtime) unmountDisk() error {
	r.mu.Lock()
	dk := r.disk
	r.mu.Unlock()
	if dk == nil {
		return nil
	}
	return dk.Unmount()
}

// release frees what a runtime holds besides its container.
func (m *Manager) release(ctx context.Context, r *Runtime) []error {
	var errs []error
	if r.endpoint != nil {
		if err := r.network.Detach(ctx, r.endpoint); err != nil {
			errs = append(errs, err)
		}
	}
	if r.Dir != "" {
		if err := m.cfg.Images.UnmountRoot(filepath.Join(r.Dir, "root")); err != nil {
			errs = append(errs, err)
		} else if err := r.unmountDisk(); err != nil {
			// Never remove files through a disk still mounted there.
			errs = append(errs, err)
		} else if err := os.RemoveAll(r.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// noFileLimit is the open files limit of runtimes: generous for servers, but
// never above what the daemon itself may grant.
func noFileLimit() uint64 {
	const want = 1 << 20
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	return min(rl.Max, want)
}

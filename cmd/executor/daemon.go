package main

import (
	"context"
	"executor/api"
	"executor/api/metrics"
	"executor/images"
	"executor/netns"
	"executor/sandbox"
	"executor/storage"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// run is the daemon: it takes the data dir, binds the listener, sets up the
// image store, networks and runtimes, serves until SIGINT or SIGTERM, then
// drains and removes what it made. Nothing shared with another daemon is
// touched before the data dir lock and the listener are held.
func run(cfg *config, log *slog.Logger, level *slog.LevelVar) error {
	if err := checkCapabilities(); err != nil {
		return err
	}
	defer keepGCHeadroom(log, gcHeadroom)()
	if cfg.LiveRestore {
		own, err := os.ReadFile("/proc/self/cgroup")
		if err == nil {
			err = checkStartCgroup(string(own), cfg.CgroupParent)
		}
		if err == nil {
			err = checkMountNamespace()
		}
		if err != nil {
			return fmt.Errorf("OPR_EXECUTOR_LIVE_RESTORE: %w", err)
		}
	}
	hostname, err := os.Hostname()
	if err != nil {
		return fmt.Errorf("hostname: %w", err)
	}
	// Traversable but not listable: a user-namespaced runtime's root must be
	// able to reach its own root file system and directories below it.
	if err := os.MkdirAll(cfg.DataDir, 0o711); err != nil {
		return fmt.Errorf("OPR_EXECUTOR_DATA_DIR: %w", err)
	}
	if err := os.Chmod(cfg.DataDir, 0o711); err != nil {
		return fmt.Errorf("OPR_EXECUTOR_DATA_DIR: %w", err)
	}
	if cfg.UserNS != nil {
		if err := sandbox.Traversable(cfg.DataDir); err != nil {
			return fmt.Errorf("OPR_EXECUTOR_DATA_DIR: %w", err)
		}
	}
	// SIGHUP's default action ends a process: from here on it is a reload
	// (see reloader), even one sent while the daemon is starting.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	unlock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return fmt.Errorf("OPR_EXECUTOR_DATA_DIR: %w", err)
	}
	defer unlock()
	locks, err := lockDir()
	if err != nil {
		return err
	}
	unlockCgroup, err := lockCgroupParent(locks, cfg.CgroupParent)
	if err != nil {
		return fmt.Errorf("OPR_EXECUTOR_CGROUP_PARENT: %w", err)
	}
	defer unlockCgroup()
	// The port is taken before anything else: a daemon that cannot serve
	// must not have reconciled (killed) anything first.
	ln, err := listen(cfg.Listen)
	if err != nil {
		return fmt.Errorf("OPR_EXECUTOR_LISTEN %s: %w", cfg.Listen, err)
	}
	defer ln.Close()
	metricsSrv, err := listenMetrics(cfg, log.With("component", "metrics"))
	if err != nil {
		return err
	}
	defer metricsSrv.close(context.Background())
	if rootlessStage() == stageRun && len(cfg.LoopbackPorts) > 0 {
		stopProxy, err := proxyLoopback(cfg.LoopbackPorts, log)
		if err != nil {
			return err
		}
		defer stopProxy()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	notify := newNotifier(log)
	notify.hostReady = rootlessStage() == stageRun

	if d := cfg.ImageArchiveDir; d != "" {
		fi, err := os.Stat(d)
		if err == nil && !fi.IsDir() {
			err = fmt.Errorf("%s is not a directory", d)
		}
		if err != nil {
			return fmt.Errorf("OPR_EXECUTOR_IMAGE_ARCHIVE_DIR: %w", err)
		}
	}
	store, err := images.New(images.Config{
		Root:              filepath.Join(cfg.DataDir, "images"),
		OwnMount:          true,
		DockerHubUsername: cfg.DockerHubUsername,
		DockerHubPassword: cfg.DockerHubPassword,
		AuthFile:          cfg.RegistryAuthFile,
		IDMap:             cfg.UserNS,
		ArchiveDir:        cfg.ImageArchiveDir,
		SizeLimit:         cfg.ImageSizeLimit,
		MaxEntries:        cfg.ImageMaxEntries,
		PullTimeout:       cfg.PullTimeout,
		Logger:            log.With("component", "images"),
		Observer:          metricsSrv.imagesObserver(),
	})
	if err != nil {
		if cfg.RegistryAuthFile != "" {
			return fmt.Errorf("%w (OPR_EXECUTOR_REGISTRY_AUTH_FILE / REGISTRY_AUTH_FILE=%s)", err, cfg.RegistryAuthFile)
		}
		return err
	}
	defer func() {
		if err := store.Close(); err != nil {
			log.Warn("closing the image store", "err", err)
		}
	}()
	reloads, err := newReloader(reloadConfig{Config: cfg, Getenv: os.Getenv, Level: level, Images: store, Notify: notify, Logger: log})
	if err != nil {
		return err
	}
	subnets, err := cfg.networkSubnets()
	if err != nil {
		return err
	}
	var networks []*netns.Network
	// detached: the runtimes were left running (live restore), and with
	// them the networks they are on.
	detached := false
	defer func() {
		for _, n := range networks {
			if detached {
				if err := n.Release(context.Background()); err != nil {
					log.Error("network release", "network", n.Name(), "err", err)
				}
				continue
			}
			if err := n.Close(context.Background()); err != nil {
				log.Error("network teardown", "network", n.Name(), "err", err)
			}
		}
	}()
	for i, name := range cfg.Networks {
		n, err := netns.New(ctx, netns.Config{
			Name:     name,
			Subnet:   subnets[i],
			StateDir: filepath.Join(cfg.DataDir, "networks", netns.BridgeName(name)),
			Logger:   log.With("component", "netns"),

			AllowRuntimeToRuntime: cfg.AllowRuntimeToRuntime,
			AllowHostAccess:       cfg.AllowHostAccess,
			AllowLinkLocal:        cfg.AllowLinkLocal,
			AllowCIDRs:            cfg.EgressAllow,
			DenyCIDRs:             cfg.EgressDeny,
			DNSServers:            cfg.DNSServers,
			PoolSize:              cfg.NetworkPool,
			PoolGrace:             sandbox.RefillGrace,
			HostCIDRs:             parseHostAddrs(os.Getenv(hostAddrsEnv)),
			// Deleting a veth takes ~30 ms: off the request path. The
			// address is only reused once the veth is gone.
			AsyncDetach: true,
		})
		if err != nil {
			return networkError(name, subnets[i], err)
		}
		networks = append(networks, n)
	}
	// The devices are opened once, here: an S3 device is a client, which
	// every source, artifact and cache would otherwise make anew.
	sources, err := storage.NewOpener(storage.Config{DSN: cfg.Storage, LocalRoots: cfg.StorageRoots, MaxSize: cfg.BuildSizeLimit,
		Observer: metricsSrv.storageObserver()})
	if err != nil {
		return err
	}
	buildCache, err := openBuildCache(cfg, metricsSrv.storageObserver())
	if err != nil {
		return err
	}
	tracer, err := startTracing(ctx, cfg, log.With("component", "tracing"))
	if err != nil {
		return err
	}
	defer tracer.shutdown(context.Background())
	mgr, err := sandbox.New(sandbox.Config{
		DataDir:             cfg.DataDir,
		Images:              store,
		Networks:            networks,
		Storage:             sources,
		BuildCache:          buildCache,
		CgroupParent:        cfg.CgroupParent,
		Hostname:            hostname,
		PidsLimit:           cfg.PidsLimit,
		BuildSizeLimit:      cfg.BuildSizeLimit,
		DiskLimit:           cfg.DiskLimit,
		DiskInodes:          cfg.DiskInodes,
		Unconfined:          cfg.Unconfined,
		Rootless:            rootless(),
		UserNS:              cfg.UserNS,
		Init:                cfg.Init,
		Spawner:             besideExecutable("executor-spawn"),
		StopGrace:           cfg.StopGrace,
		RetryAttempts:       cfg.RetryAttempts,
		RetryDelay:          cfg.RetryDelay,
		InactiveThreshold:   cfg.InactiveThreshold,
		Prewarm:             cfg.Prewarm,
		LiveRestore:         cfg.LiveRestore,
		MaintenanceInterval: cfg.MaintenanceInterval,
		Logger:              log.With("component", "sandbox"),
		Observer:            sandbox.Observers(tracer.sandboxObserver(), metricsSrv.sandboxObserver()),
	})
	if err != nil {
		return err
	}
	if err := mgr.LimitsOff(); err != nil {
		log.Warn("runtimes run without CPU, memory and pids limits: this rootless executor has no cgroup of its own to write (delegate one: see the README's Rootless section)",
			"cgroupParent", cfg.CgroupParent, "err", err)
	}
	notify.status("Starting: removing what an earlier run left")
	if err := mgr.Reconcile(ctx); err != nil {
		log.Warn("could not remove everything an earlier run left", "err", err)
	}
	// Made now rather than with the first runtime: GET /v1/health then
	// reports it gone (and the caps set on it with it).
	if err := mgr.PrepareHealth(); err != nil {
		return err
	}
	handler, err := api.New(api.Config{
		Backend:         mgr,
		Secret:          cfg.Secret,
		Development:     cfg.Development,
		Version:         cfg.Version,
		RuntimeVersions: cfg.RuntimeVersions,
		Hostname:        hostname,
		Logger:          log.With("component", "api"),
		BodyTimeout:     cfg.BodyTimeout,
		MaxCPUs:         cfg.MaxCPUs,
		MaxMemoryMB:     cfg.MaxMemoryMB,
		Images:          store,
		Observer:        api.Observers(tracer.apiObserver(), metricsSrv.apiObserver()),
	})
	if err != nil {
		return err
	}
	// No write timeout and no ReadTimeout: executions and log streams last as long as their own timeouts, and
	// a ReadTimeout would cancel them (net/http's watch for the client leaving reads under it). Headers get
	// ReadHeaderTimeout, bodies OPR_EXECUTOR_REQUEST_BODY_TIMEOUT (set per request by the API).
	srv := &http.Server{Handler: tracer.handler(handler), ReadHeaderTimeout: 30 * time.Second, IdleTimeout: 120 * time.Second}
	if err := metricsSrv.serve(metricsSources(mgr, store, cfg.DataDir)); err != nil {
		return err
	}
	var prepull sync.WaitGroup
	prepull.Add(1)
	go func() {
		defer prepull.Done()
		prePull(ctx, store, cfg.prePullImages(), log)
	}()
	var imageGC sync.WaitGroup
	gcCtx, stopGC := context.WithCancel(ctx)
	defer stopGC()
	imageGC.Add(1)
	go func() {
		defer imageGC.Done()
		collectImages(gcCtx, store, cfg.ImageGCInterval, cfg.ImageGCAge, reloads.prePullImages, log)
	}()
	if cfg.SecretGenerated {
		fmt.Fprintf(os.Stderr, "\n  Development secret (OPR_EXECUTOR_SECRET was empty): %s\n  Try: curl -H 'Authorization: Bearer %s' http://%s/v1/runtimes\n\n", cfg.Secret, cfg.Secret, ln.Addr())
	}
	log.Info("Executor is ready.", "listen", ln.Addr().String(), "dataDir", cfg.DataDir, "networks", cfg.Networks, "env", cfg.Env,
		"storage", storage.Describe(cfg.Storage), "userns", cfg.UserNS != nil, "seccomp", !cfg.Unconfined, "cgroupParent", cfg.CgroupParent, "rootless", rootless())
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	notify.ready(ctx, ln.Addr())
	// hup stays registered until the process exits: a SIGHUP during or
	// after shutdown must not kill it either.
	go func() {
		for range hup {
			reloads.reload(ctx)
		}
	}()

	select {
	case <-ctx.Done():
		notify.stopping(cfg.DrainTimeout)
		if cfg.LiveRestore {
			log.Info("stopping: draining requests; runtimes keep running for the next start (OPR_EXECUTOR_LIVE_RESTORE)", "drainTimeout", cfg.DrainTimeout)
		} else {
			log.Info("stopping: draining requests and removing every runtime", "drainTimeout", cfg.DrainTimeout)
		}
	case err := <-serveErr:
		stopGC()
		imageGC.Wait()
		_ = mgr.Close(context.Background())
		return err
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), cfg.DrainTimeout)
	defer cancel()
	// Stop accepting and let requests in flight finish, then remove the
	// runtimes; Close also cancels creations still running.
	// First health answers 503 (draining) on the still open listener while
	// the work in flight ends; a drain cut short shows in Shutdown's error.
	_ = handler.Drain(shutdownCtx)
	if err := srv.Shutdown(shutdownCtx); err != nil {
		log.Warn("requests still running at shutdown were cut (OPR_EXECUTOR_DRAIN_TIMEOUT)", "drainTimeout", cfg.DrainTimeout, "err", err)
	}
	stopGC()
	imageGC.Wait()
	if cfg.LiveRestore {
		notify.status("Stopping: leaving runtimes running for the next start")
		err = mgr.Detach(context.Background())
		detached = true
	} else {
		notify.status("Stopping: removing every runtime and network")
		err = mgr.Close(context.Background())
	}
	prepull.Wait()
	reloads.wait()
	if !detached {
		// The runtimes' cgroups live beneath it.
		mgr.RemoveCgroupParent()
	}
	if err != nil {
		return err
	}
	log.Info("executor stopped cleanly")
	return nil
}

// prePull pulls images in the background at start, so the first runtime of
// each does not wait for it.
func prePull(ctx context.Context, store *images.Store, refs []string, log *slog.Logger) {
	if len(refs) == 0 {
		return
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	done := 0
	for _, ref := range refs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			if _, err := store.Pull(ctx, ref); err != nil {
				log.Warn("pre-pull failed", "image", ref, "err", err)
				return
			}
			mu.Lock()
			done++
			log.Info(fmt.Sprintf("[ImagePuller] Pulled %d/%d images.", done, len(refs)), "image", ref, "took", time.Since(start).Round(time.Millisecond))
			mu.Unlock()
		}()
	}
	wg.Wait()
}

// collectImages removes, every interval, the images no runtime has used for
// age; the pre-pull list in effect (keep: a SIGHUP may change it) stays.
// interval 0 turns it off.
func collectImages(ctx context.Context, store *images.Store, interval, age time.Duration, keep func() []string, log *slog.Logger) {
	if interval <= 0 {
		return
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		st, err := store.GC(ctx, age, keep()...)
		if err != nil && ctx.Err() == nil {
			log.Warn("image garbage collection", "err", err)
		}
		if len(st.Images) > 0 || st.Layers > 0 {
			log.Info("image garbage collection removed unused images", "images", st.Images, "layers", st.Layers,
				"bytes", st.Bytes, "unusedFor", age, "kept", st.Kept)
		}
	}
}

// openBuildCache opens the build-cache device (OPR_EXECUTOR_CONNECTION_BUILD_CACHE,
// else the storage device), rooted where the reference keeps caches:
// /build-cache, in the bucket on S3. On the local filesystem the cache lives
// under the data dir rather than in a /build-cache directory at the host's
// root, where the reference (inside its container) keeps it.
func openBuildCache(cfg *config, obs storage.Observer) (storage.Device, error) {
	dsn := cfg.BuildCacheStorage
	if dsn == "" {
		dsn = cfg.Storage
	}
	o, err := storage.NewOpener(storage.Config{DSN: dsn, MaxSize: cfg.BuildSizeLimit, Observer: obs})
	if err != nil {
		return nil, err
	}
	if o.Local() {
		l, err := storage.NewLocal(filepath.Join(cfg.DataDir, "build-cache"))
		if err != nil {
			return nil, err
		}
		return storage.Observe(l, obs), nil
	}
	return o.Open("/build-cache")
}

// metricsSources are what the metrics read at each scrape.
func metricsSources(mgr *sandbox.Manager, store *images.Store, dataDir string) metrics.Sources {
	return metrics.Sources{Runtimes: mgr.Count, LayerBytes: store.LayerBytes, DataDir: dataDir, Usage: func() (float64, uint64, uint64) {
		var cpu float64
		var mem, tasks uint64
		for _, r := range mgr.UsageFigures().Runtimes {
			cpu += r.CPU / 100
			mem += r.Memory
			tasks += r.PIDs
		}
		return cpu, mem, tasks
	}}
}

package main

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"executor/api"
	"executor/images"
	"executor/oci"
	"executor/sandbox"
	"executor/sandbox/disk"
	"executor/storage"
)

// config is the daemon's configuration, read from OPR_EXECUTOR_* variables.
type config struct {
	Env             string
	Development     bool
	Secret          string
	SecretGenerated bool
	Listen          string
	// MetricsListen is where Prometheus metrics are served (OPR_EXECUTOR_METRICS_LISTEN); "" = nowhere.
	MetricsListen string
	// TracingEndpoint is the OTLP/HTTP collector traces go to (OPR_EXECUTOR_TRACING_ENDPOINT); "" = no tracing.
	TracingEndpoint     string
	DataDir             string
	Networks            []string
	Subnet              netip.Prefix
	CgroupParent        string
	RuntimeVersions     []string
	Storage             string
	BuildCacheStorage   string
	StorageRoots        []string
	InactiveThreshold   time.Duration
	MaintenanceInterval time.Duration
	RetryAttempts       int
	RetryDelay          time.Duration
	DockerHubUsername   string
	DockerHubPassword   string
	Version             string
	Images              []string
	// LoopbackPorts are the host's loopback TCP ports a rootless daemon
	// reaches at its own 127.0.0.1 (pasta forwards them): a local registry.
	LoopbackPorts []uint16
	Runtimes      []string
	PidsLimit     int64
	// BuildSizeLimit caps sources, artifacts and build caches, in bytes.
	BuildSizeLimit int64
	// DiskLimit and DiskInodes cap what one runtime writes (0 = uncapped).
	DiskLimit  int64
	DiskInodes uint64
	StopGrace  time.Duration
	// DrainTimeout is how long a stopping daemon waits for requests in flight.
	DrainTimeout time.Duration
	// EnvFile is the environment file a SIGHUP reads the reloadable settings from; "" = none.
	EnvFile    string
	LogLevel   string
	LogFormat  string // "text" or "json": slog's handlers of those names
	Unconfined bool
	// Network policy and speed (netns.Config).
	AllowRuntimeToRuntime bool
	AllowHostAccess       bool
	AllowLinkLocal        bool
	EgressAllow           []netip.Prefix
	EgressDeny            []netip.Prefix
	DNSServers            []netip.Addr // nil = the host's non-loopback nameservers
	NetworkPool           int
	Prewarm               int
	// LiveRestore keeps runtimes running across a restart (OPR_EXECUTOR_LIVE_RESTORE).
	LiveRestore bool
	// Init is the executor-init binary run as each runtime's PID 1; "" = none.
	Init string
	// LoggingProvider is OPR_EXECUTOR_LOGGING_PROVIDER, lower-cased: "" or "sentry".
	LoggingProvider string
	// SentryDSN is where errors are reported (OPR_EXECUTOR_LOGGING_*); "" = nowhere.
	SentryDSN string
	// UserNS is the host id range runtimes' root maps to; nil when off.
	UserNS *oci.IDMap
	// ImageGCInterval is the time between image garbage collections (0 = off);
	// ImageGCAge how long an image must have been unused to be collected.
	ImageGCInterval time.Duration
	ImageGCAge      time.Duration
	// ImageArchiveDir is the one directory oci:, oci-archive: and
	// docker-archive: references may read; "" refuses them.
	ImageArchiveDir string
	// ImageSizeLimit and ImageMaxEntries cap the bytes and files one image pull unpacks.
	ImageSizeLimit  int64
	ImageMaxEntries int64
	// PullTimeout bounds one image pull (images.Config.PullTimeout).
	PullTimeout time.Duration
	// RegistryAuthFile is the auth.json for registry credentials; "" = the standard lookup.
	RegistryAuthFile string

	// MaxCPUs and MaxMemoryMB bound requests' `cpus` and `memory` (0 = no bound, and a request's 0 is then no
	// limit); BodyTimeout bounds the reading of a request body.
	MaxCPUs     float64
	MaxMemoryMB int64
	BodyTimeout time.Duration
}

// setting is one environment variable of the configuration.
type setting struct {
	name string
	// fallback is read instead when name is blank: a seed-era spelling or a standard variable.
	fallback string
	// def is the value of an unset variable as an operator would write it (the README's default column); ""
	// when there is none, or when parse works it out at start (the host's CPUs, the binary's directory).
	def string
	// rootlessDef, when set, replaces def for a daemon started by an ordinary user.
	rootlessDef func(getenv func(string) string) string
	// raw values are parsed as they are set, surrounding blanks included: secrets and credentials are taken
	// as they are, and some messages quote the value as it was set.
	raw bool
	// parse checks the value and stores it in the config; its errors name the variable it is given.
	parse parser
}

// parser reads the value of variable name.
type parser func(name, value string) error

// loadConfig reads the configuration through getenv. Every error names the
// variable at fault.
func loadConfig(getenv func(string) string) (*config, error) {
	c := &config{}
	for _, s := range c.settings(getenv) {
		name, v := s.name, getenv(s.name)
		if s.fallback != "" && strings.TrimSpace(v) == "" {
			name, v = s.fallback, getenv(s.fallback)
		}
		if !s.raw {
			v = strings.TrimSpace(v)
		}
		if v == "" {
			v = s.def
			if s.rootlessDef != nil && rootless() {
				v = s.rootlessDef(getenv)
			}
		}
		if err := s.parse(name, v); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// settings are the variables of c, in the order they are read and checked: a setting may rely on the ones
// above it. Where a package needs a default too, def is that package's constant. getenv serves the storage
// settings, which the storage package reads together with the seed era's variables.
func (c *config) settings(getenv func(string) string) []setting {
	return []setting{
		{name: "OPR_EXECUTOR_ENV", def: "production", parse: c.setEnv},
		{name: "OPR_EXECUTOR_SECRET", raw: true, parse: c.setSecret},
		{name: "OPR_EXECUTOR_LISTEN", def: "0.0.0.0:9900", parse: c.setListen},
		{name: "OPR_EXECUTOR_METRICS_LISTEN", parse: c.setMetricsListen},
		{name: "OPR_EXECUTOR_TRACING_ENDPOINT", parse: c.setTracingEndpoint},
		{name: "OPR_EXECUTOR_DATA_DIR", def: "/var/lib/executor", rootlessDef: rootlessDataDir, parse: c.setDataDir},
		// Unset: the daemon's own cgroup when systemd delegated it (Delegate=yes, cgroup v2), else /executor.
		{name: "OPR_EXECUTOR_CGROUP_PARENT", parse: c.setCgroupParent},
		{name: "OPR_EXECUTOR_DOCKER_HUB_USERNAME", raw: true, parse: text(&c.DockerHubUsername)},
		{name: "OPR_EXECUTOR_DOCKER_HUB_PASSWORD", raw: true, parse: text(&c.DockerHubPassword)},
		{name: "OPR_EXECUTOR_VERSION", def: api.DefaultExecutorVersion, parse: text(&c.Version)},
		{name: "OPR_EXECUTOR_NETWORK", def: "openruntimes-runtimes", parse: c.setNetworks},
		{name: "OPR_EXECUTOR_SUBNET", def: "10.89.0.0/16", parse: c.setSubnet},
		{name: "OPR_EXECUTOR_RUNTIME_VERSIONS", def: api.DefaultRuntimeVersions, parse: c.setRuntimeVersions},
		// The storage package reads these itself, with the seed era's OPR_EXECUTOR_STORAGE_* variables, and
		// knows their defaults (the local filesystem; the storage DSN; storage.DefaultStorageRoots).
		{name: storage.EnvStorage, parse: storageDSN(&c.Storage, storage.DSNFromEnv, getenv)},
		{name: storage.EnvBuildCacheStorage, parse: storageDSN(&c.BuildCacheStorage, storage.BuildCacheDSNFromEnv, getenv)},
		{name: storage.EnvStorageRoots, parse: c.storageRoots(getenv)},
		{name: "OPR_EXECUTOR_INACTIVE_THRESHOLD", fallback: "OPR_EXECUTOR_INACTIVE_TRESHOLD", def: "60", parse: seconds(&c.InactiveThreshold)},
		{name: "OPR_EXECUTOR_MAINTENANCE_INTERVAL", def: "3600", parse: seconds(&c.MaintenanceInterval)},
		{name: "OPR_EXECUTOR_STOP_GRACE", def: formatSeconds(sandbox.DefaultStopGrace), parse: seconds(&c.StopGrace)},
		{name: "OPR_EXECUTOR_DRAIN_TIMEOUT", def: formatSeconds(defaultDrainTimeout), parse: seconds(&c.DrainTimeout)},
		{name: "OPR_EXECUTOR_ENV_FILE", parse: absPath(&c.EnvFile)},
		{name: "OPR_EXECUTOR_IMAGE_GC_INTERVAL", def: "3600", parse: seconds(&c.ImageGCInterval)},
		{name: "OPR_EXECUTOR_IMAGE_GC_AGE", def: "86400", parse: seconds(&c.ImageGCAge)},
		// containers-auth.json(5)'s REGISTRY_AUTH_FILE is honoured as podman and skopeo do.
		{name: "OPR_EXECUTOR_REGISTRY_AUTH_FILE", fallback: "REGISTRY_AUTH_FILE", parse: absPath(&c.RegistryAuthFile)},
		{name: "OPR_EXECUTOR_IMAGE_ARCHIVE_DIR", parse: absPath(&c.ImageArchiveDir)},
		{name: "OPR_EXECUTOR_IMAGE_SIZE_LIMIT", def: formatSize(images.DefaultSizeLimit), parse: positiveSize(&c.ImageSizeLimit)},
		{name: "OPR_EXECUTOR_IMAGE_MAX_ENTRIES", def: strconv.FormatInt(images.DefaultMaxEntries, 10), parse: positiveCount(&c.ImageMaxEntries)},
		{name: "OPR_EXECUTOR_PULL_TIMEOUT", def: formatSeconds(images.DefaultPullTimeout), parse: positiveSeconds(&c.PullTimeout)},
		{name: "OPR_EXECUTOR_RETRY_ATTEMPTS", def: "5", parse: count(&c.RetryAttempts)},
		{name: "OPR_EXECUTOR_RETRY_DELAY_MS", def: strconv.FormatInt(sandbox.DefaultRetryDelay.Milliseconds(), 10), parse: milliseconds(&c.RetryDelay)},
		{name: "OPR_EXECUTOR_PIDS_LIMIT", def: strconv.FormatInt(sandbox.DefaultPidsLimit, 10), parse: positiveCount(&c.PidsLimit)},
		{name: "OPR_EXECUTOR_MAX_CPUS", parse: c.setMaxCPUs},
		{name: "OPR_EXECUTOR_MAX_MEMORY", parse: c.setMaxMemory},
		{name: "OPR_EXECUTOR_REQUEST_BODY_TIMEOUT", def: formatSeconds(api.DefaultBodyTimeout), parse: positiveSeconds(&c.BodyTimeout)},
		{name: "OPR_EXECUTOR_BUILD_SIZE_LIMIT", def: formatSize(sandbox.DefaultBuildSizeLimit), parse: positiveSize(&c.BuildSizeLimit)},
		// Loop devices and mkfs need real root: a rootless daemon's runtimes share the data dir's file system.
		{name: "OPR_EXECUTOR_DISK_LIMIT", def: formatSize(disk.DefaultSize), rootlessDef: func(func(string) string) string { return "0" }, parse: c.setDiskLimit},
		{name: "OPR_EXECUTOR_DISK_INODES", def: "0", parse: c.setDiskInodes},
		{name: "OPR_EXECUTOR_IMAGES", parse: list(&c.Images)},
		{name: "OPR_EXECUTOR_RUNTIMES", parse: c.setRuntimes},
		{name: "OPR_EXECUTOR_ALLOW_RUNTIME_TO_RUNTIME", raw: true, def: "false", parse: flag(&c.AllowRuntimeToRuntime)},
		{name: "OPR_EXECUTOR_ALLOW_HOST_ACCESS", raw: true, def: "false", parse: flag(&c.AllowHostAccess)},
		{name: "OPR_EXECUTOR_ALLOW_LINK_LOCAL", raw: true, def: "false", parse: flag(&c.AllowLinkLocal)},
		{name: "OPR_EXECUTOR_EGRESS_ALLOW", parse: prefixList(&c.EgressAllow)},
		{name: "OPR_EXECUTOR_EGRESS_DENY", parse: prefixList(&c.EgressDeny)},
		{name: "OPR_EXECUTOR_DNS", parse: c.setDNS},
		{name: "OPR_EXECUTOR_NETWORK_POOL", def: "2", parse: count(&c.NetworkPool)},
		{name: "OPR_EXECUTOR_INIT", parse: c.setInit},
		// Unset with OPR_EXECUTOR_INIT=off, it is 0: sandboxes park executor-init.
		{name: "OPR_EXECUTOR_PREWARM", def: strconv.Itoa(defaultPrewarm), parse: func(name, v string) error {
			if c.Init == "" && strings.TrimSpace(getenv(name)) == "" {
				c.Prewarm = 0
				return nil
			}
			return c.setPrewarm(name, v)
		}},
		{name: "OPR_EXECUTOR_LIVE_RESTORE", raw: true, def: "false", parse: c.setLiveRestore},
		{name: "OPR_EXECUTOR_USERNS", def: "full", parse: c.setUserNS},
		{name: "OPR_EXECUTOR_ROOTLESS_LOOPBACK_PORTS", parse: c.setLoopbackPorts},
		{name: "OPR_EXECUTOR_SECCOMP", def: "default", parse: c.setSeccomp},
		{name: "OPR_EXECUTOR_LOGGING_PROVIDER", raw: true, parse: c.setLoggingProvider},
		{name: "OPR_EXECUTOR_LOGGING_CONFIG", raw: true, parse: c.setLoggingConfig},
		{name: "OPR_EXECUTOR_LOG_LEVEL", def: "info", parse: choice(&c.LogLevel, "debug", "info", "warn", "error")},
		{name: "OPR_EXECUTOR_LOG_FORMAT", def: logFormatText, parse: choice(&c.LogFormat, logFormatText, logFormatJSON)},
	}
}

func (c *config) setEnv(name, v string) error {
	if err := oneOf(name, v, "production", "development"); err != nil {
		return err
	}
	c.Env, c.Development = v, v == "development"
	return nil
}

// setSecret: an empty secret never means open access; only development runs without one, with a generated key.
func (c *config) setSecret(name, v string) error {
	if v != "" {
		c.Secret = v
		return nil
	}
	if !c.Development {
		return fmt.Errorf("%s is empty: set a secret (only OPR_EXECUTOR_ENV=development may run without one, with a generated key)", name)
	}
	c.Secret, c.SecretGenerated = "dev-"+randomKey(), true
	return nil
}

func (c *config) setListen(name, v string) error {
	if _, _, err := net.SplitHostPort(v); err != nil {
		return fmt.Errorf("%s=%q is not host:port: %w", name, v, err)
	}
	c.Listen = v
	return nil
}

// setMetricsListen: metrics have their own listener, never the API's port, which answers only with the key.
func (c *config) setMetricsListen(name, v string) error {
	if v == "" {
		return nil
	}
	_, port, err := net.SplitHostPort(v)
	if err != nil {
		return fmt.Errorf("%s=%q is not host:port: %w", name, v, err)
	}
	if _, apiPort, _ := net.SplitHostPort(c.Listen); port == apiPort && port != "0" {
		return fmt.Errorf("%s=%q is the API's port (OPR_EXECUTOR_LISTEN=%s): metrics are served on a port of their own", name, v, c.Listen)
	}
	c.MetricsListen = v
	return nil
}

// setTracingEndpoint takes an OTLP/HTTP collector's URL; its path defaults to /v1/traces.
func (c *config) setTracingEndpoint(name, v string) error {
	if v == "" {
		return nil
	}
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%s=%q is not an http:// or https:// URL of an OTLP/HTTP collector (such as http://127.0.0.1:4318)", name, v)
	}
	c.TracingEndpoint = v
	return nil
}

func (c *config) setDataDir(name, v string) error {
	if v == "" {
		return fmt.Errorf("%s is not set, and neither XDG_DATA_HOME nor HOME to default it to", name)
	}
	return absPath(&c.DataDir)(name, v)
}

func (c *config) setCgroupParent(name, v string) error {
	if v == "" {
		c.CgroupParent = defaultCgroupParent()
		return nil
	}
	if !filepath.IsAbs(v) || filepath.Clean(v) == "/" {
		return fmt.Errorf("%s=%q must be an absolute cgroup path below the root", name, v)
	}
	c.CgroupParent = filepath.Clean(v)
	return nil
}

func (c *config) setNetworks(name, v string) error {
	if c.Networks = splitList(v); len(c.Networks) == 0 {
		return fmt.Errorf("%s names no network", name)
	}
	return nil
}

// setSubnet also checks that the subnet has room for every network (read before it).
func (c *config) setSubnet(name, v string) error {
	subnet, err := netip.ParsePrefix(v)
	if err != nil || !subnet.Addr().Is4() {
		return fmt.Errorf("%s must be an IPv4 prefix such as 10.89.0.0/16: %v", name, err)
	}
	c.Subnet = subnet.Masked()
	_, err = c.networkSubnets()
	return err
}

// setRuntimeVersions accepts the versions the API speaks, all of them by default.
func (c *config) setRuntimeVersions(name, v string) error {
	known := strings.Split(api.DefaultRuntimeVersions, ",")
	c.RuntimeVersions = splitList(strings.ToLower(v))
	for _, rv := range c.RuntimeVersions {
		if !slices.Contains(known, rv) {
			return fmt.Errorf("%s: unknown protocol version %q (known: %s)", name, rv, strings.Join(known, ", "))
		}
	}
	if len(c.RuntimeVersions) == 0 {
		return fmt.Errorf("%s lists no version", name)
	}
	return nil
}

// storageDSN reads a storage DSN with fromEnv (which falls back on the seed era's variables) and checks it.
func storageDSN(dst *string, fromEnv func(getenv func(string) string) (string, error), getenv func(string) string) parser {
	return func(name, _ string) error {
		dsn, err := fromEnv(getenv)
		if err != nil {
			return err
		}
		if err := storage.Validate(dsn); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		*dst = dsn
		return nil
	}
}

// storageRoots reads the directories the local device keeps to; one missing on this host (no /storage) is no
// error, nothing beneath it is ever found.
func (c *config) storageRoots(getenv func(string) string) parser {
	return func(name, _ string) error {
		roots, err := storage.RootsFromEnv(getenv)
		if err != nil {
			return err
		}
		// API clients read and write beneath the roots: the data dir (every runtime's source, disk and state)
		// must not be reachable that way.
		for _, r := range roots {
			if within(c.DataDir, r) || within(r, c.DataDir) {
				return fmt.Errorf("OPR_EXECUTOR_DATA_DIR=%s overlaps the storage root %s (%s): API clients could read runtimes' files through it; keep the data dir out of every storage root", c.DataDir, r, name)
			}
		}
		c.StorageRoots = roots
		return nil
	}
}

// setMaxCPUs: cores, fractions allowed, 0 for no bound; the host's CPUs by default.
func (c *config) setMaxCPUs(name, v string) (err error) {
	c.MaxCPUs, err = maxCPUs(name, v)
	return err
}

// setMaxMemory: MB, 0 for no bound; the host's memory by default.
func (c *config) setMaxMemory(name, v string) (err error) {
	if v == "" {
		if c.MaxMemoryMB, err = hostMemoryMB(); err != nil {
			return fmt.Errorf("%s: reading the host's memory size, its default: %w", name, err)
		}
		return nil
	}
	c.MaxMemoryMB, err = integer(name, v)
	return err
}

// setDiskLimit: 0 leaves runtimes uncapped; a disk smaller than 16 MiB would not even hold a runtime's files.
func (c *config) setDiskLimit(name, v string) (err error) {
	if c.DiskLimit, err = byteSize(name, v); err != nil {
		return err
	}
	if c.DiskLimit != 0 && c.DiskLimit < 16<<20 {
		return fmt.Errorf("%s must be 0 (no cap) or at least 16MiB", name)
	}
	return nil
}

// setDiskInodes: ext4's limits; the inodes are those of the runtime's own disk, so there must be one.
func (c *config) setDiskInodes(name, v string) error {
	n, err := integer(name, v)
	if err != nil {
		return err
	}
	c.DiskInodes = uint64(n)
	if c.DiskInodes != 0 && (c.DiskInodes < 1024 || c.DiskInodes > 1<<32-1) {
		return fmt.Errorf("%s must be 0 (one per 16 KiB of OPR_EXECUTOR_DISK_LIMIT) or between 1024 and 4294967295", name)
	}
	if c.DiskInodes != 0 && c.DiskLimit == 0 {
		return fmt.Errorf("%s needs OPR_EXECUTOR_DISK_LIMIT: inodes are capped on the runtime's own disk", name)
	}
	return nil
}

func (c *config) setRuntimes(name, v string) error {
	c.Runtimes = splitList(v)
	for _, rt := range c.Runtimes {
		if i := strings.LastIndex(rt, "-"); i <= 0 || i == len(rt)-1 {
			return fmt.Errorf("%s: %q is not <language>-<version> (e.g. node-18.0)", name, rt)
		}
	}
	return nil
}

// setDNS: unset leaves DNSServers nil, the host's own nameservers.
func (c *config) setDNS(name, v string) error {
	if v == "" {
		return nil
	}
	c.DNSServers = []netip.Addr{}
	for _, s := range splitList(v) {
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is4() || a.IsLoopback() {
			return fmt.Errorf("%s: %q is not a non-loopback IPv4 address (runtimes cannot reach the host's loopback)", name, s)
		}
		c.DNSServers = append(c.DNSServers, a)
	}
	return nil
}

func (c *config) setInit(name, v string) error {
	switch v {
	case "off":
	case "":
		c.Init = besideExecutable("executor-init")
	default:
		if !filepath.IsAbs(v) {
			return fmt.Errorf("%s=%q must be an absolute path or off", name, v)
		}
		c.Init = v
	}
	return nil
}

// besideExecutable is the path of the binary name installed beside the executor's own (make build, make install,
// packages), or "" when the executor's own path is unknown.
func besideExecutable(name string) string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	return filepath.Join(filepath.Dir(exe), name)
}

// setLiveRestore: runtimes outlive the daemon only where a restarted one can reach them again. A rootless daemon's
// runtimes live in the network namespace its parent made, which ends with it; without executor-init a runtime's
// output pipe breaks when the daemon stops.
func (c *config) setLiveRestore(name, v string) error {
	on, err := boolean(name, v)
	if err != nil || !on {
		return err
	}
	if rootless() {
		return fmt.Errorf("%s=%s: a rootless executor's runtimes live in a network namespace that ends with it; live restore needs a root daemon", name, v)
	}
	if c.Init == "" {
		return fmt.Errorf("%s=%s needs executor-init (OPR_EXECUTOR_INIT is off): it keeps a runtime's output from breaking while no daemon reads it", name, v)
	}
	c.LiveRestore = true
	return nil
}

func (c *config) setUserNS(name, v string) (err error) {
	// A rootless daemon's "full" is all it has: the user's subordinate ids,
	// as its user namespace maps them.
	if v == "full" && rootlessStage() == stageRun {
		if c.UserNS, err = nsIDMap(); err != nil {
			return fmt.Errorf("%s=full: %w", name, err)
		}
		return nil
	}
	c.UserNS, err = parseUserNS(v)
	return err
}

func (c *config) setLoopbackPorts(name, v string) error {
	c.LoopbackPorts = nil
	for _, p := range splitList(v) {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 {
			return fmt.Errorf("%s: %q is not a TCP port", name, p)
		}
		c.LoopbackPorts = append(c.LoopbackPorts, uint16(n))
	}
	return nil
}

func (c *config) setSeccomp(name, v string) error {
	if err := oneOf(name, v, "default", "unconfined"); err != nil {
		return err
	}
	c.Unconfined = v == "unconfined"
	return nil
}

func (c *config) setLoggingProvider(name, v string) error {
	if c.LoggingProvider = strings.ToLower(v); c.LoggingProvider != "" && c.LoggingProvider != "sentry" {
		return fmt.Errorf("%s=%q is not supported (sentry is)", name, c.LoggingProvider)
	}
	return nil
}

// setLoggingConfig reads the provider's configuration; only sentry has one.
func (c *config) setLoggingConfig(_, v string) (err error) {
	if c.LoggingProvider == "sentry" {
		c.SentryDSN, err = sentryDSN(v)
	}
	return err
}

// prePullImages is OPR_EXECUTOR_IMAGES plus every OPR_EXECUTOR_RUNTIMES entry
// for each accepted version (php-8.0 x v4 -> openruntimes/php:v4-8.0).
func (c *config) prePullImages() []string {
	seen := map[string]bool{}
	var out []string
	add := func(s string) {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	for _, img := range c.Images {
		add(img)
	}
	for _, rt := range c.Runtimes {
		i := strings.LastIndex(rt, "-")
		for _, v := range c.RuntimeVersions {
			add(fmt.Sprintf("openruntimes/%s:%s-%s", rt[:i], v, rt[i+1:]))
		}
	}
	return out
}

// networkSubnets splits the subnet evenly between the networks.
func (c *config) networkSubnets() ([]netip.Prefix, error) {
	n := len(c.Networks)
	extra := 0
	for 1<<extra < n {
		extra++
	}
	bits := c.Subnet.Bits() + extra
	if bits > 28 {
		return nil, fmt.Errorf("OPR_EXECUTOR_SUBNET %s is too small for %d networks", c.Subnet, n)
	}
	out := make([]netip.Prefix, n)
	base := c.Subnet.Addr().As4()
	v := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(base[2])<<8 | uint32(base[3])
	size := uint32(1) << (32 - bits)
	for i := range out {
		a := v + uint32(i)*size
		out[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)}), bits)
	}
	return out, nil
}

// maxPrewarm bounds OPR_EXECUTOR_PREWARM: each prewarmed sandbox holds a
// container, an address and a disk.
const maxPrewarm = 64

// defaultPrewarm is OPR_EXECUTOR_PREWARM unset: an image cold-started in
// the last minute keeps up to this many sandboxes ready; an idle one none.
const defaultPrewarm = 4

func (c *config) setPrewarm(name, v string) error {
	if err := count(&c.Prewarm)(name, v); err != nil {
		return err
	}
	if c.Prewarm > maxPrewarm {
		return fmt.Errorf("%s must be at most %d", name, maxPrewarm)
	}
	return nil
}

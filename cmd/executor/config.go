package main

import (
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"executor/api"
	"executor/images"
	"executor/oci"
	"executor/sandbox"
	"executor/storage"
)

// config is the daemon's configuration, read from OPR_EXECUTOR_* variables.
type config struct {
	Env                 string
	Development         bool
	Secret              string
	SecretGenerated     bool
	Listen              string
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
	Runtimes            []string
	PidsLimit           int64
	// BuildSizeLimit caps sources, artifacts and build caches, in bytes.
	BuildSizeLimit int64
	// DiskLimit and DiskInodes cap what one runtime writes (0 = uncapped).
	DiskLimit  int64
	DiskInodes uint64
	StopGrace  time.Duration
	LogLevel   string
	Unconfined bool
	// Network policy and speed (netns.Config).
	AllowRuntimeToRuntime bool
	AllowHostAccess       bool
	AllowLinkLocal        bool
	EgressAllow           []netip.Prefix
	EgressDeny            []netip.Prefix
	DNSServers            []netip.Addr // nil = the host's non-loopback nameservers
	NetworkPool           int
	// Init is the executor-init binary run as each runtime's PID 1; "" = none.
	Init string
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
	// RegistryAuthFile is the auth.json for registry credentials; "" = the standard lookup.
	RegistryAuthFile string

	// MaxCPUs and MaxMemoryMB bound requests' `cpus` and `memory` (0 = no bound, and a request's 0 is then no
	// limit); BodyTimeout bounds the reading of a request body.
	MaxCPUs     float64
	MaxMemoryMB int64
	BodyTimeout time.Duration
}

// loadConfig reads the configuration through getenv. Every error names the
// variable at fault.
func loadConfig(getenv func(string) string) (*config, error) {
	get := func(name, def string) string {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			return v
		}
		return def
	}
	c := &config{
		Env:          get("OPR_EXECUTOR_ENV", "production"),
		Secret:       getenv("OPR_EXECUTOR_SECRET"),
		Listen:       get("OPR_EXECUTOR_LISTEN", "0.0.0.0:9900"),
		DataDir:      get("OPR_EXECUTOR_DATA_DIR", "/var/lib/executor"),
		CgroupParent: get("OPR_EXECUTOR_CGROUP_PARENT", "/executor"),

		DockerHubUsername: getenv("OPR_EXECUTOR_DOCKER_HUB_USERNAME"),
		DockerHubPassword: getenv("OPR_EXECUTOR_DOCKER_HUB_PASSWORD"),
		Version:           get("OPR_EXECUTOR_VERSION", "unknown"),
		LogLevel:          get("OPR_EXECUTOR_LOG_LEVEL", "info"),
	}
	switch c.Env {
	case "production":
	case "development":
		c.Development = true
	default:
		return nil, fmt.Errorf("OPR_EXECUTOR_ENV must be production or development, not %q", c.Env)
	}
	if c.Secret == "" {
		if !c.Development {
			return nil, fmt.Errorf("OPR_EXECUTOR_SECRET is empty: set a secret (only OPR_EXECUTOR_ENV=development may run without one, with a generated key)")
		}
		c.Secret = "dev-" + randomKey()
		c.SecretGenerated = true
	}
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return nil, fmt.Errorf("OPR_EXECUTOR_LISTEN=%q is not host:port: %w", c.Listen, err)
	}
	if !filepath.IsAbs(c.DataDir) {
		return nil, fmt.Errorf("OPR_EXECUTOR_DATA_DIR=%q must be an absolute path", c.DataDir)
	}
	if !filepath.IsAbs(c.CgroupParent) || filepath.Clean(c.CgroupParent) == "/" {
		return nil, fmt.Errorf("OPR_EXECUTOR_CGROUP_PARENT=%q must be an absolute cgroup path below the root", c.CgroupParent)
	}
	c.CgroupParent = filepath.Clean(c.CgroupParent)
	c.Networks = splitList(get("OPR_EXECUTOR_NETWORK", "openruntimes-runtimes"))
	if len(c.Networks) == 0 {
		return nil, fmt.Errorf("OPR_EXECUTOR_NETWORK names no network")
	}
	subnet, err := netip.ParsePrefix(get("OPR_EXECUTOR_SUBNET", "10.89.0.0/16"))
	if err != nil || !subnet.Addr().Is4() {
		return nil, fmt.Errorf("OPR_EXECUTOR_SUBNET must be an IPv4 prefix such as 10.89.0.0/16: %v", err)
	}
	c.Subnet = subnet.Masked()
	if _, err := c.networkSubnets(); err != nil {
		return nil, err
	}
	c.RuntimeVersions = splitList(strings.ToLower(get("OPR_EXECUTOR_RUNTIME_VERSIONS", "v2,v3,v4,v5")))
	for _, v := range c.RuntimeVersions {
		switch v {
		case "v2", "v3", "v4", "v5":
		default:
			return nil, fmt.Errorf("OPR_EXECUTOR_RUNTIME_VERSIONS: unknown protocol version %q (known: v2, v3, v4, v5)", v)
		}
	}
	if len(c.RuntimeVersions) == 0 {
		return nil, fmt.Errorf("OPR_EXECUTOR_RUNTIME_VERSIONS lists no version")
	}
	// The DSN, or the seed era's OPR_EXECUTOR_STORAGE_* variables when it
	// is empty; the build cache falls back to it.
	if c.Storage, err = storage.DSNFromEnv(getenv); err != nil {
		return nil, err
	}
	if err := storage.Validate(c.Storage); err != nil {
		return nil, fmt.Errorf("OPR_EXECUTOR_CONNECTION_STORAGE: %w", err)
	}
	if c.BuildCacheStorage, err = storage.BuildCacheDSNFromEnv(getenv); err != nil {
		return nil, err
	}
	if err := storage.Validate(c.BuildCacheStorage); err != nil {
		return nil, fmt.Errorf("OPR_EXECUTOR_CONNECTION_BUILD_CACHE_STORAGE: %w", err)
	}
	// The local device keeps to these; one missing on this host (no
	// /storage) is no error, nothing beneath it is ever found.
	if c.StorageRoots, err = storage.RootsFromEnv(getenv); err != nil {
		return nil, err
	}
	// API clients read and write beneath the roots: the data dir (every
	// runtime's source, disk and state) must not be reachable that way.
	for _, r := range c.StorageRoots {
		if within(c.DataDir, r) || within(r, c.DataDir) {
			return nil, fmt.Errorf("OPR_EXECUTOR_DATA_DIR=%s overlaps the storage root %s (OPR_EXECUTOR_STORAGE_ROOTS): API clients could read runtimes' files through it; keep the data dir out of every storage root", c.DataDir, r)
		}
	}
	threshold := getenv("OPR_EXECUTOR_INACTIVE_THRESHOLD")
	name := "OPR_EXECUTOR_INACTIVE_THRESHOLD"
	if strings.TrimSpace(threshold) == "" {
		// The seed era's spelling.
		threshold, name = getenv("OPR_EXECUTOR_INACTIVE_TRESHOLD"), "OPR_EXECUTOR_INACTIVE_TRESHOLD"
	}
	if c.InactiveThreshold, err = seconds(name, threshold, 60); err != nil {
		return nil, err
	}
	if c.MaintenanceInterval, err = seconds("OPR_EXECUTOR_MAINTENANCE_INTERVAL", getenv("OPR_EXECUTOR_MAINTENANCE_INTERVAL"), 3600); err != nil {
		return nil, err
	}
	if c.StopGrace, err = seconds("OPR_EXECUTOR_STOP_GRACE", getenv("OPR_EXECUTOR_STOP_GRACE"), 2); err != nil {
		return nil, err
	}
	if c.ImageGCInterval, err = seconds("OPR_EXECUTOR_IMAGE_GC_INTERVAL", getenv("OPR_EXECUTOR_IMAGE_GC_INTERVAL"), 3600); err != nil {
		return nil, err
	}
	if c.ImageGCAge, err = seconds("OPR_EXECUTOR_IMAGE_GC_AGE", getenv("OPR_EXECUTOR_IMAGE_GC_AGE"), 86400); err != nil {
		return nil, err
	}
	// containers-auth.json(5)'s REGISTRY_AUTH_FILE is honoured as podman and skopeo do.
	name = "OPR_EXECUTOR_REGISTRY_AUTH_FILE"
	if c.RegistryAuthFile = strings.TrimSpace(getenv(name)); c.RegistryAuthFile == "" {
		name, c.RegistryAuthFile = "REGISTRY_AUTH_FILE", strings.TrimSpace(getenv("REGISTRY_AUTH_FILE"))
	}
	if c.RegistryAuthFile != "" && !filepath.IsAbs(c.RegistryAuthFile) {
		return nil, fmt.Errorf("%s=%q must be an absolute path", name, c.RegistryAuthFile)
	}
	if c.ImageArchiveDir = strings.TrimSpace(getenv("OPR_EXECUTOR_IMAGE_ARCHIVE_DIR")); c.ImageArchiveDir != "" && !filepath.IsAbs(c.ImageArchiveDir) {
		return nil, fmt.Errorf("OPR_EXECUTOR_IMAGE_ARCHIVE_DIR=%q must be an absolute path", c.ImageArchiveDir)
	}
	if c.ImageSizeLimit, err = byteSize("OPR_EXECUTOR_IMAGE_SIZE_LIMIT", getenv("OPR_EXECUTOR_IMAGE_SIZE_LIMIT"), images.DefaultSizeLimit); err != nil {
		return nil, err
	}
	if c.ImageSizeLimit == 0 {
		return nil, fmt.Errorf("OPR_EXECUTOR_IMAGE_SIZE_LIMIT must be positive")
	}
	if c.ImageMaxEntries, err = integer("OPR_EXECUTOR_IMAGE_MAX_ENTRIES", getenv("OPR_EXECUTOR_IMAGE_MAX_ENTRIES"), images.DefaultMaxEntries); err != nil {
		return nil, err
	}
	if c.ImageMaxEntries == 0 {
		return nil, fmt.Errorf("OPR_EXECUTOR_IMAGE_MAX_ENTRIES must be positive")
	}
	attempts, err := integer("OPR_EXECUTOR_RETRY_ATTEMPTS", getenv("OPR_EXECUTOR_RETRY_ATTEMPTS"), 5)
	if err != nil {
		return nil, err
	}
	c.RetryAttempts = int(attempts)
	delay, err := integer("OPR_EXECUTOR_RETRY_DELAY_MS", getenv("OPR_EXECUTOR_RETRY_DELAY_MS"), 500)
	if err != nil {
		return nil, err
	}
	c.RetryDelay = time.Duration(delay) * time.Millisecond
	if c.PidsLimit, err = integer("OPR_EXECUTOR_PIDS_LIMIT", getenv("OPR_EXECUTOR_PIDS_LIMIT"), sandbox.DefaultPidsLimit); err != nil {
		return nil, err
	}
	if c.PidsLimit == 0 {
		return nil, fmt.Errorf("OPR_EXECUTOR_PIDS_LIMIT must be positive")
	}
	if c.MaxCPUs, err = maxCPUs(getenv("OPR_EXECUTOR_MAX_CPUS")); err != nil {
		return nil, err
	}
	if strings.TrimSpace(getenv("OPR_EXECUTOR_MAX_MEMORY")) == "" {
		if c.MaxMemoryMB, err = hostMemoryMB(); err != nil {
			return nil, fmt.Errorf("OPR_EXECUTOR_MAX_MEMORY: reading the host's memory size, its default: %w", err)
		}
	} else if c.MaxMemoryMB, err = integer("OPR_EXECUTOR_MAX_MEMORY", getenv("OPR_EXECUTOR_MAX_MEMORY"), 0); err != nil {
		return nil, err
	}
	if c.BodyTimeout, err = seconds("OPR_EXECUTOR_REQUEST_BODY_TIMEOUT", getenv("OPR_EXECUTOR_REQUEST_BODY_TIMEOUT"), int64(api.DefaultBodyTimeout/time.Second)); err != nil {
		return nil, err
	}
	if c.BodyTimeout == 0 {
		return nil, fmt.Errorf("OPR_EXECUTOR_REQUEST_BODY_TIMEOUT must be positive")
	}
	if c.BuildSizeLimit, err = byteSize("OPR_EXECUTOR_BUILD_SIZE_LIMIT", getenv("OPR_EXECUTOR_BUILD_SIZE_LIMIT"), sandbox.DefaultBuildSizeLimit); err != nil {
		return nil, err
	}
	if c.BuildSizeLimit == 0 {
		return nil, fmt.Errorf("OPR_EXECUTOR_BUILD_SIZE_LIMIT must be positive")
	}
	if c.DiskLimit, err = byteSize("OPR_EXECUTOR_DISK_LIMIT", getenv("OPR_EXECUTOR_DISK_LIMIT"), 1<<30); err != nil {
		return nil, err
	}
	if c.DiskLimit != 0 && c.DiskLimit < 16<<20 {
		return nil, fmt.Errorf("OPR_EXECUTOR_DISK_LIMIT must be 0 (no cap) or at least 16MiB")
	}
	inodes, err := integer("OPR_EXECUTOR_DISK_INODES", getenv("OPR_EXECUTOR_DISK_INODES"), 0)
	if err != nil {
		return nil, err
	}
	c.DiskInodes = uint64(inodes)
	if c.DiskInodes != 0 && (c.DiskInodes < 1024 || c.DiskInodes > 1<<32-1) {
		return nil, fmt.Errorf("OPR_EXECUTOR_DISK_INODES must be 0 (one per 16 KiB of OPR_EXECUTOR_DISK_LIMIT) or between 1024 and 4294967295")
	}
	if c.DiskInodes != 0 && c.DiskLimit == 0 {
		return nil, fmt.Errorf("OPR_EXECUTOR_DISK_INODES needs OPR_EXECUTOR_DISK_LIMIT: inodes are capped on the runtime's own disk")
	}
	c.Images = splitList(getenv("OPR_EXECUTOR_IMAGES"))
	c.Runtimes = splitList(getenv("OPR_EXECUTOR_RUNTIMES"))
	for _, rt := range c.Runtimes {
		if i := strings.LastIndex(rt, "-"); i <= 0 || i == len(rt)-1 {
			return nil, fmt.Errorf("OPR_EXECUTOR_RUNTIMES: %q is not <language>-<version> (e.g. node-18.0)", rt)
		}
	}
	for _, b := range []struct {
		name string
		dst  *bool
	}{
		{"OPR_EXECUTOR_ALLOW_RUNTIME_TO_RUNTIME", &c.AllowRuntimeToRuntime},
		{"OPR_EXECUTOR_ALLOW_HOST_ACCESS", &c.AllowHostAccess},
		{"OPR_EXECUTOR_ALLOW_LINK_LOCAL", &c.AllowLinkLocal},
	} {
		if *b.dst, err = boolean(b.name, getenv(b.name)); err != nil {
			return nil, err
		}
	}
	if c.EgressAllow, err = prefixes("OPR_EXECUTOR_EGRESS_ALLOW", getenv("OPR_EXECUTOR_EGRESS_ALLOW")); err != nil {
		return nil, err
	}
	if c.EgressDeny, err = prefixes("OPR_EXECUTOR_EGRESS_DENY", getenv("OPR_EXECUTOR_EGRESS_DENY")); err != nil {
		return nil, err
	}
	if v := strings.TrimSpace(getenv("OPR_EXECUTOR_DNS")); v != "" {
		c.DNSServers = []netip.Addr{}
		for _, s := range splitList(v) {
			a, err := netip.ParseAddr(s)
			if err != nil || !a.Is4() || a.IsLoopback() {
				return nil, fmt.Errorf("OPR_EXECUTOR_DNS: %q is not a non-loopback IPv4 address (runtimes cannot reach the host's loopback)", s)
			}
			c.DNSServers = append(c.DNSServers, a)
		}
	}
	pool, err := integer("OPR_EXECUTOR_NETWORK_POOL", getenv("OPR_EXECUTOR_NETWORK_POOL"), 0)
	if err != nil {
		return nil, err
	}
	c.NetworkPool = int(pool)
	switch v := get("OPR_EXECUTOR_INIT", ""); v {
	case "off":
	case "":
		// Installed beside the executor binary (make build, packages).
		if exe, err := os.Executable(); err == nil {
			c.Init = filepath.Join(filepath.Dir(exe), "executor-init")
		}
	default:
		if !filepath.IsAbs(v) {
			return nil, fmt.Errorf("OPR_EXECUTOR_INIT=%q must be an absolute path or off", v)
		}
		c.Init = v
	}
	if c.UserNS, err = parseUserNS(get("OPR_EXECUTOR_USERNS", "full")); err != nil {
		return nil, err
	}
	switch sc := get("OPR_EXECUTOR_SECCOMP", "default"); sc {
	case "default":
	case "unconfined":
		c.Unconfined = true
	default:
		return nil, fmt.Errorf("OPR_EXECUTOR_SECCOMP must be default or unconfined, not %q", sc)
	}
	switch provider := strings.ToLower(getenv("OPR_EXECUTOR_LOGGING_PROVIDER")); provider {
	case "":
	case "sentry":
		if c.SentryDSN, err = sentryDSN(getenv("OPR_EXECUTOR_LOGGING_CONFIG")); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("OPR_EXECUTOR_LOGGING_PROVIDER=%q is not supported (sentry is)", provider)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return nil, fmt.Errorf("OPR_EXECUTOR_LOG_LEVEL must be debug, info, warn or error, not %q", c.LogLevel)
	}
	return c, nil
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

// parseUserNS reads OPR_EXECUTOR_USERNS: "full" (oci.FullIDMap: every id
// above the host's own 0..65535), "off", "HOSTID:SIZE" (same uid and gid) or
// "HOSTUID:HOSTGID:SIZE".
func parseUserNS(v string) (*oci.IDMap, error) {
	switch v {
	case "off":
		return nil, nil
	case "full":
		return oci.FullIDMap(), nil
	}
	parts := strings.Split(v, ":")
	var n []int64
	for _, p := range parts {
		x, err := strconv.ParseInt(p, 10, 64)
		if err != nil || x <= 0 {
			n = nil
			break
		}
		n = append(n, x)
	}
	var m *oci.IDMap
	switch len(n) {
	case 2:
		m = &oci.IDMap{HostUID: n[0], HostGID: n[0], Size: n[1]}
	case 3:
		m = &oci.IDMap{HostUID: n[0], HostGID: n[1], Size: n[2]}
	default:
		return nil, fmt.Errorf("OPR_EXECUTOR_USERNS=%q must be full, off, HOSTID:SIZE or HOSTUID:HOSTGID:SIZE (e.g. 1000000000:65536)", v)
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("OPR_EXECUTOR_USERNS=%q: %w", v, err)
	}
	return m, nil
}

func boolean(name, v string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "", "false", "0", "no":
		return false, nil
	case "true", "1", "yes":
		return true, nil
	}
	return false, fmt.Errorf("%s=%q must be true or false", name, v)
}

func prefixes(name, v string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range splitList(v) {
		p, err := netip.ParsePrefix(s)
		if err != nil || !p.Addr().Is4() {
			return nil, fmt.Errorf("%s: %q is not an IPv4 prefix such as 203.0.113.0/24", name, s)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func integer(name, v string, def int64) (int64, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%s=%q must be a non-negative integer", name, v)
	}
	return n, nil
}

// within reports whether path is dir or beneath it (both clean and absolute).
func within(path, dir string) bool {
	path, dir = filepath.Clean(path), filepath.Clean(dir)
	return path == dir || dir == "/" || strings.HasPrefix(path, dir+"/")
}

// byteSize reads a size in bytes, with an optional binary suffix (KiB, MiB,
// GiB, TiB; K, M, G, T mean the same): "2GiB", "512M", "1048576".
func byteSize(name, v string, def int64) (int64, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return def, nil
	}
	num, unit := v, int64(1)
	for i, suffix := range []string{"K", "M", "G", "T"} {
		for _, s := range []string{suffix + "iB", suffix + "B", suffix} {
			if strings.HasSuffix(strings.ToUpper(num), strings.ToUpper(s)) && len(num) > len(s) {
				num, unit = strings.TrimSpace(num[:len(num)-len(s)]), int64(1)<<(10*(i+1))
				break
			}
		}
		if unit != 1 {
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/unit {
		return 0, fmt.Errorf("%s=%q must be a size in bytes, optionally with a suffix such as MiB or GiB", name, v)
	}
	return n * unit, nil
}

func seconds(name, v string, def int64) (time.Duration, error) {
	n, err := integer(name, v, def)
	return time.Duration(n) * time.Second, err
}

// maxCPUs reads OPR_EXECUTOR_MAX_CPUS: cores, fractions allowed, 0 for no bound; the host's CPUs by default.
func maxCPUs(v string) (float64, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return float64(runtime.NumCPU()), nil
	}
	n, err := strconv.ParseFloat(v, 64)
	if err != nil || n < 0 || math.IsNaN(n) || math.IsInf(n, 0) {
		return 0, fmt.Errorf("OPR_EXECUTOR_MAX_CPUS=%q must be a non-negative number of cores (0 = no bound)", v)
	}
	return n, nil
}

// hostMemoryMB is the host's total memory in the API's megabytes (1,000,000 bytes).
func hostMemoryMB() (int64, error) {
	var si unix.Sysinfo_t
	if err := unix.Sysinfo(&si); err != nil {
		return 0, err
	}
	return int64(uint64(si.Totalram) * uint64(si.Unit) / 1_000_000), nil
}

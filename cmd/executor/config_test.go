package main

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"executor/oci"
)

func envOf(kv map[string]string) func(string) string {
	return func(k string) string { return kv[k] }
}

// settingNames are the variables of the settings table, in its order.
func settingNames() []string {
	var names []string
	for _, s := range (&config{}).settings(nil) {
		names = append(names, s.name)
	}
	return names
}

// TestLoadConfigDefaults: every setting's value when it is unset (only the secret is set).
func TestLoadConfigDefaults(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		variable string
		got      func(c *config) any
		want     any
	}{
		{"OPR_EXECUTOR_ENV", func(c *config) any { return [2]any{c.Env, c.Development} }, [2]any{"production", false}},
		{"OPR_EXECUTOR_LISTEN", func(c *config) any { return c.Listen }, "0.0.0.0:9900"},
		{"OPR_EXECUTOR_METRICS_LISTEN", func(c *config) any { return c.MetricsListen }, ""},
		{"OPR_EXECUTOR_TRACING_ENDPOINT", func(c *config) any { return c.TracingEndpoint }, ""},
		{"OPR_EXECUTOR_DATA_DIR", func(c *config) any { return c.DataDir }, "/var/lib/executor"},
		// Outside a unit systemd delegated a cgroup v2 subtree to (TestDelegatedUnitCgroup).
		{"OPR_EXECUTOR_CGROUP_PARENT", func(c *config) any { return c.CgroupParent }, "/executor"},
		{"OPR_EXECUTOR_DOCKER_HUB_USERNAME", func(c *config) any { return c.DockerHubUsername }, ""},
		{"OPR_EXECUTOR_DOCKER_HUB_PASSWORD", func(c *config) any { return c.DockerHubPassword }, ""},
		{"OPR_EXECUTOR_VERSION", func(c *config) any { return c.Version }, "unknown"},
		{"OPR_EXECUTOR_NETWORK", func(c *config) any { return c.Networks }, []string{"openruntimes-runtimes"}},
		{"OPR_EXECUTOR_SUBNET", func(c *config) any { return c.Subnet.String() }, "10.89.0.0/16"},
		{"OPR_EXECUTOR_RUNTIME_VERSIONS", func(c *config) any { return c.RuntimeVersions }, []string{"v2", "v3", "v4", "v5"}},
		{"OPR_EXECUTOR_CONNECTION_STORAGE", func(c *config) any { return c.Storage }, ""},
		{"OPR_EXECUTOR_CONNECTION_BUILD_CACHE_STORAGE", func(c *config) any { return c.BuildCacheStorage }, ""},
		{"OPR_EXECUTOR_STORAGE_ROOTS", func(c *config) any { return c.StorageRoots }, []string{"/storage", "/tmp"}},
		{"OPR_EXECUTOR_INACTIVE_THRESHOLD", func(c *config) any { return c.InactiveThreshold }, 60 * time.Second},
		{"OPR_EXECUTOR_MAINTENANCE_INTERVAL", func(c *config) any { return c.MaintenanceInterval }, time.Hour},
		{"OPR_EXECUTOR_STOP_GRACE", func(c *config) any { return c.StopGrace }, 2 * time.Second},
		{"OPR_EXECUTOR_DRAIN_TIMEOUT", func(c *config) any { return c.DrainTimeout }, 600 * time.Second},
		{"OPR_EXECUTOR_ENV_FILE", func(c *config) any { return c.EnvFile }, ""},
		{"OPR_EXECUTOR_IMAGE_GC_INTERVAL", func(c *config) any { return c.ImageGCInterval }, time.Hour},
		{"OPR_EXECUTOR_IMAGE_GC_AGE", func(c *config) any { return c.ImageGCAge }, 24 * time.Hour},
		{"OPR_EXECUTOR_REGISTRY_AUTH_FILE", func(c *config) any { return c.RegistryAuthFile }, ""},
		{"OPR_EXECUTOR_IMAGE_ARCHIVE_DIR", func(c *config) any { return c.ImageArchiveDir }, ""},
		{"OPR_EXECUTOR_IMAGE_SIZE_LIMIT", func(c *config) any { return c.ImageSizeLimit }, int64(16 << 30)},
		{"OPR_EXECUTOR_IMAGE_MAX_ENTRIES", func(c *config) any { return c.ImageMaxEntries }, int64(1_000_000)},
		{"OPR_EXECUTOR_PULL_TIMEOUT", func(c *config) any { return c.PullTimeout }, 10 * time.Minute},
		{"OPR_EXECUTOR_RETRY_ATTEMPTS", func(c *config) any { return c.RetryAttempts }, 5},
		{"OPR_EXECUTOR_RETRY_DELAY_MS", func(c *config) any { return c.RetryDelay }, 500 * time.Millisecond},
		{"OPR_EXECUTOR_PIDS_LIMIT", func(c *config) any { return c.PidsLimit }, int64(1024)},
		{"OPR_EXECUTOR_MAX_CPUS", func(c *config) any { return c.MaxCPUs }, float64(runtime.NumCPU())},
		{"OPR_EXECUTOR_MAX_MEMORY", func(c *config) any { return c.MaxMemoryMB }, memTotalMB(t)},
		{"OPR_EXECUTOR_REQUEST_BODY_TIMEOUT", func(c *config) any { return c.BodyTimeout }, time.Minute},
		{"OPR_EXECUTOR_BUILD_SIZE_LIMIT", func(c *config) any { return c.BuildSizeLimit }, int64(2 << 30)},
		{"OPR_EXECUTOR_DISK_LIMIT", func(c *config) any { return c.DiskLimit }, int64(1 << 30)},
		{"OPR_EXECUTOR_DISK_INODES", func(c *config) any { return c.DiskInodes }, uint64(0)},
		{"OPR_EXECUTOR_IMAGES", func(c *config) any { return c.Images }, []string(nil)},
		{"OPR_EXECUTOR_RUNTIMES", func(c *config) any { return c.Runtimes }, []string(nil)},
		{"OPR_EXECUTOR_ALLOW_RUNTIME_TO_RUNTIME", func(c *config) any { return c.AllowRuntimeToRuntime }, false},
		{"OPR_EXECUTOR_ALLOW_HOST_ACCESS", func(c *config) any { return c.AllowHostAccess }, false},
		{"OPR_EXECUTOR_ALLOW_LINK_LOCAL", func(c *config) any { return c.AllowLinkLocal }, false},
		{"OPR_EXECUTOR_EGRESS_ALLOW", func(c *config) any { return len(c.EgressAllow) }, 0},
		{"OPR_EXECUTOR_EGRESS_DENY", func(c *config) any { return len(c.EgressDeny) }, 0},
		{"OPR_EXECUTOR_DNS", func(c *config) any { return c.DNSServers == nil }, true}, // the host's
		{"OPR_EXECUTOR_NETWORK_POOL", func(c *config) any { return c.NetworkPool }, 2},
		{"OPR_EXECUTOR_INIT", func(c *config) any { return c.Init }, filepath.Join(filepath.Dir(exe), "executor-init")},
		{"OPR_EXECUTOR_PREWARM", func(c *config) any { return c.Prewarm }, defaultPrewarm},
		{"OPR_EXECUTOR_LIVE_RESTORE", func(c *config) any { return c.LiveRestore }, false},
		{"OPR_EXECUTOR_USERNS", func(c *config) any { return c.UserNS }, oci.FullIDMap()},
		{"OPR_EXECUTOR_ROOTLESS_LOOPBACK_PORTS", func(c *config) any { return c.LoopbackPorts }, []uint16(nil)},
		{"OPR_EXECUTOR_SECCOMP", func(c *config) any { return c.Unconfined }, false},
		{"OPR_EXECUTOR_LOGGING_PROVIDER", func(c *config) any { return c.LoggingProvider }, ""},
		{"OPR_EXECUTOR_LOGGING_CONFIG", func(c *config) any { return c.SentryDSN }, ""},
		{"OPR_EXECUTOR_LOG_LEVEL", func(c *config) any { return c.LogLevel }, "info"},
		{"OPR_EXECUTOR_LOG_FORMAT", func(c *config) any { return c.LogFormat }, "text"},
	}
	// The secret has no default: see TestLoadConfigBadValues and the development case of TestLoadConfigValues.
	covered := map[string]bool{"OPR_EXECUTOR_SECRET": true}
	c, err := loadConfig(envOf(map[string]string{"OPR_EXECUTOR_SECRET": "s"}))
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		covered[tt.variable] = true
		if got := tt.got(c); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%s: default %#v, want %#v", tt.variable, got, tt.want)
		}
	}
	for _, name := range settingNames() {
		if !covered[name] {
			t.Errorf("%s: no default checked", name)
		}
	}
}

// TestLoadConfigBadValues: a bad value stops the daemon with a message that names the variable; every
// setting that can be wrong has a case.
func TestLoadConfigBadValues(t *testing.T) {
	tests := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{}, "OPR_EXECUTOR_SECRET"},
		{map[string]string{"OPR_EXECUTOR_ENV": "staging"}, "OPR_EXECUTOR_ENV"},
		{map[string]string{"OPR_EXECUTOR_LISTEN": "9900"}, "OPR_EXECUTOR_LISTEN"},
		{map[string]string{"OPR_EXECUTOR_METRICS_LISTEN": "9901"}, "OPR_EXECUTOR_METRICS_LISTEN"},
		{map[string]string{"OPR_EXECUTOR_LISTEN": "0.0.0.0:9900", "OPR_EXECUTOR_METRICS_LISTEN": "127.0.0.1:9900"}, "the API's port"},
		{map[string]string{"OPR_EXECUTOR_TRACING_ENDPOINT": "127.0.0.1:4318"}, "OPR_EXECUTOR_TRACING_ENDPOINT"},
		{map[string]string{"OPR_EXECUTOR_TRACING_ENDPOINT": "grpc://127.0.0.1:4317"}, "OPR_EXECUTOR_TRACING_ENDPOINT"},
		{map[string]string{"OPR_EXECUTOR_DATA_DIR": "rel/dir"}, "OPR_EXECUTOR_DATA_DIR"},
		{map[string]string{"OPR_EXECUTOR_CGROUP_PARENT": "relative"}, "OPR_EXECUTOR_CGROUP_PARENT"},
		{map[string]string{"OPR_EXECUTOR_CGROUP_PARENT": "/x/.."}, "OPR_EXECUTOR_CGROUP_PARENT"},
		{map[string]string{"OPR_EXECUTOR_NETWORK": " , "}, "OPR_EXECUTOR_NETWORK"},
		{map[string]string{"OPR_EXECUTOR_SUBNET": "not-a-net"}, "OPR_EXECUTOR_SUBNET"},
		{map[string]string{"OPR_EXECUTOR_SUBNET": "10.89.0.0/29"}, "OPR_EXECUTOR_SUBNET"},
		{map[string]string{"OPR_EXECUTOR_RUNTIME_VERSIONS": "v5,v9"}, "OPR_EXECUTOR_RUNTIME_VERSIONS"},
		{map[string]string{"OPR_EXECUTOR_RUNTIME_VERSIONS": ","}, "OPR_EXECUTOR_RUNTIME_VERSIONS"},
		{map[string]string{"OPR_EXECUTOR_CONNECTION_STORAGE": "dospaces://k:s@host/bucket"}, "OPR_EXECUTOR_CONNECTION_STORAGE"},
		{map[string]string{"OPR_EXECUTOR_CONNECTION_BUILD_CACHE_STORAGE": "wasabi://k:s@host/b"}, "OPR_EXECUTOR_CONNECTION_BUILD_CACHE_STORAGE"},
		{map[string]string{"OPR_EXECUTOR_STORAGE_DEVICE": "floppy"}, "OPR_EXECUTOR_STORAGE_DEVICE"},
		{map[string]string{"OPR_EXECUTOR_STORAGE_ROOTS": "storage"}, "OPR_EXECUTOR_STORAGE_ROOTS"},
		{map[string]string{"OPR_EXECUTOR_INACTIVE_THRESHOLD": "soon"}, "OPR_EXECUTOR_INACTIVE_THRESHOLD"},
		{map[string]string{"OPR_EXECUTOR_INACTIVE_TRESHOLD": "-1"}, "OPR_EXECUTOR_INACTIVE_TRESHOLD"},
		{map[string]string{"OPR_EXECUTOR_MAINTENANCE_INTERVAL": "x"}, "OPR_EXECUTOR_MAINTENANCE_INTERVAL"},
		{map[string]string{"OPR_EXECUTOR_STOP_GRACE": "2s"}, "OPR_EXECUTOR_STOP_GRACE"},
		{map[string]string{"OPR_EXECUTOR_DRAIN_TIMEOUT": "10m"}, "OPR_EXECUTOR_DRAIN_TIMEOUT"},
		{map[string]string{"OPR_EXECUTOR_ENV_FILE": "executor.env"}, "OPR_EXECUTOR_ENV_FILE"},
		{map[string]string{"OPR_EXECUTOR_IMAGE_GC_INTERVAL": "hourly"}, "OPR_EXECUTOR_IMAGE_GC_INTERVAL"},
		{map[string]string{"OPR_EXECUTOR_IMAGE_GC_AGE": "-5"}, "OPR_EXECUTOR_IMAGE_GC_AGE"},
		{map[string]string{"OPR_EXECUTOR_REGISTRY_AUTH_FILE": "auth.json"}, "OPR_EXECUTOR_REGISTRY_AUTH_FILE"},
		{map[string]string{"REGISTRY_AUTH_FILE": "auth.json"}, "REGISTRY_AUTH_FILE"},
		{map[string]string{"OPR_EXECUTOR_IMAGE_ARCHIVE_DIR": "relative/dir"}, "OPR_EXECUTOR_IMAGE_ARCHIVE_DIR"},
		{map[string]string{"OPR_EXECUTOR_IMAGE_SIZE_LIMIT": "0"}, "OPR_EXECUTOR_IMAGE_SIZE_LIMIT"},
		{map[string]string{"OPR_EXECUTOR_IMAGE_SIZE_LIMIT": "huge"}, "OPR_EXECUTOR_IMAGE_SIZE_LIMIT"},
		{map[string]string{"OPR_EXECUTOR_IMAGE_MAX_ENTRIES": "lots"}, "OPR_EXECUTOR_IMAGE_MAX_ENTRIES"},
		{map[string]string{"OPR_EXECUTOR_IMAGE_MAX_ENTRIES": "0"}, "OPR_EXECUTOR_IMAGE_MAX_ENTRIES"},
		{map[string]string{"OPR_EXECUTOR_IMAGE_MAX_ENTRIES": "-5"}, "OPR_EXECUTOR_IMAGE_MAX_ENTRIES"},
		{map[string]string{"OPR_EXECUTOR_IMAGE_MAX_ENTRIES": "12 files"}, "OPR_EXECUTOR_IMAGE_MAX_ENTRIES"},
		{map[string]string{"OPR_EXECUTOR_PULL_TIMEOUT": "0"}, "OPR_EXECUTOR_PULL_TIMEOUT"},
		{map[string]string{"OPR_EXECUTOR_PULL_TIMEOUT": "5m"}, "OPR_EXECUTOR_PULL_TIMEOUT"},
		{map[string]string{"OPR_EXECUTOR_RETRY_ATTEMPTS": "many"}, "OPR_EXECUTOR_RETRY_ATTEMPTS"},
		{map[string]string{"OPR_EXECUTOR_RETRY_DELAY_MS": "1.5"}, "OPR_EXECUTOR_RETRY_DELAY_MS"},
		{map[string]string{"OPR_EXECUTOR_PIDS_LIMIT": "0"}, "OPR_EXECUTOR_PIDS_LIMIT"},
		{map[string]string{"OPR_EXECUTOR_MAX_CPUS": "-1"}, "OPR_EXECUTOR_MAX_CPUS"},
		{map[string]string{"OPR_EXECUTOR_MAX_CPUS": "NaN"}, "OPR_EXECUTOR_MAX_CPUS"},
		{map[string]string{"OPR_EXECUTOR_MAX_CPUS": "four"}, "OPR_EXECUTOR_MAX_CPUS"},
		{map[string]string{"OPR_EXECUTOR_MAX_MEMORY": "1.5"}, "OPR_EXECUTOR_MAX_MEMORY"},
		{map[string]string{"OPR_EXECUTOR_MAX_MEMORY": "-512"}, "OPR_EXECUTOR_MAX_MEMORY"},
		{map[string]string{"OPR_EXECUTOR_REQUEST_BODY_TIMEOUT": "0"}, "OPR_EXECUTOR_REQUEST_BODY_TIMEOUT"},
		{map[string]string{"OPR_EXECUTOR_REQUEST_BODY_TIMEOUT": "1m"}, "OPR_EXECUTOR_REQUEST_BODY_TIMEOUT"},
		{map[string]string{"OPR_EXECUTOR_BUILD_SIZE_LIMIT": "0"}, "OPR_EXECUTOR_BUILD_SIZE_LIMIT"},
		{map[string]string{"OPR_EXECUTOR_BUILD_SIZE_LIMIT": "lots"}, "OPR_EXECUTOR_BUILD_SIZE_LIMIT"},
		{map[string]string{"OPR_EXECUTOR_DISK_LIMIT": "1MiB"}, "OPR_EXECUTOR_DISK_LIMIT"},
		{map[string]string{"OPR_EXECUTOR_DISK_LIMIT": "big"}, "OPR_EXECUTOR_DISK_LIMIT"},
		{map[string]string{"OPR_EXECUTOR_DISK_INODES": "10"}, "OPR_EXECUTOR_DISK_INODES"},
		{map[string]string{"OPR_EXECUTOR_DISK_INODES": "4294967296"}, "OPR_EXECUTOR_DISK_INODES"},
		{map[string]string{"OPR_EXECUTOR_DISK_INODES": "many"}, "OPR_EXECUTOR_DISK_INODES"},
		{map[string]string{"OPR_EXECUTOR_DISK_LIMIT": "0", "OPR_EXECUTOR_DISK_INODES": "4096"}, "OPR_EXECUTOR_DISK_INODES needs OPR_EXECUTOR_DISK_LIMIT"},
		{map[string]string{"OPR_EXECUTOR_RUNTIMES": "node"}, "OPR_EXECUTOR_RUNTIMES"},
		{map[string]string{"OPR_EXECUTOR_RUNTIMES": "node-18.0,-18.0"}, `OPR_EXECUTOR_RUNTIMES: "-18.0" is not <language>-<version>`},
		{map[string]string{"OPR_EXECUTOR_RUNTIMES": "node-"}, `OPR_EXECUTOR_RUNTIMES: "node-" is not <language>-<version>`},
		{map[string]string{"OPR_EXECUTOR_ALLOW_RUNTIME_TO_RUNTIME": "sometimes"}, "OPR_EXECUTOR_ALLOW_RUNTIME_TO_RUNTIME"},
		{map[string]string{"OPR_EXECUTOR_ALLOW_HOST_ACCESS": "perhaps"}, "OPR_EXECUTOR_ALLOW_HOST_ACCESS"},
		{map[string]string{"OPR_EXECUTOR_ALLOW_LINK_LOCAL": "2"}, "OPR_EXECUTOR_ALLOW_LINK_LOCAL"},
		{map[string]string{"OPR_EXECUTOR_EGRESS_ALLOW": "fe80::/10"}, "OPR_EXECUTOR_EGRESS_ALLOW"},
		{map[string]string{"OPR_EXECUTOR_EGRESS_DENY": "10.0.0.0/33"}, "OPR_EXECUTOR_EGRESS_DENY"},
		{map[string]string{"OPR_EXECUTOR_DNS": "127.0.0.53"}, "OPR_EXECUTOR_DNS"},
		{map[string]string{"OPR_EXECUTOR_NETWORK_POOL": "-2"}, "OPR_EXECUTOR_NETWORK_POOL"},
		{map[string]string{"OPR_EXECUTOR_PREWARM": "65"}, "OPR_EXECUTOR_PREWARM"},
		{map[string]string{"OPR_EXECUTOR_INIT": "bin/executor-init"}, "OPR_EXECUTOR_INIT"},
		{map[string]string{"OPR_EXECUTOR_LIVE_RESTORE": "maybe"}, "OPR_EXECUTOR_LIVE_RESTORE"},
		{map[string]string{"OPR_EXECUTOR_LIVE_RESTORE": "true", "OPR_EXECUTOR_INIT": "off"}, "OPR_EXECUTOR_LIVE_RESTORE"},
		{map[string]string{"OPR_EXECUTOR_USERNS": "1000:10"}, "OPR_EXECUTOR_USERNS"},
		{map[string]string{"OPR_EXECUTOR_USERNS": "root"}, "OPR_EXECUTOR_USERNS"},
		{map[string]string{"OPR_EXECUTOR_ROOTLESS_LOOPBACK_PORTS": "5000,http"}, "OPR_EXECUTOR_ROOTLESS_LOOPBACK_PORTS"},
		{map[string]string{"OPR_EXECUTOR_ROOTLESS_LOOPBACK_PORTS": "65536"}, "OPR_EXECUTOR_ROOTLESS_LOOPBACK_PORTS"},
		{map[string]string{"OPR_EXECUTOR_SECCOMP": "maybe"}, "OPR_EXECUTOR_SECCOMP"},
		{map[string]string{"OPR_EXECUTOR_LOGGING_PROVIDER": "raygun"}, "OPR_EXECUTOR_LOGGING_PROVIDER"},
		{map[string]string{"OPR_EXECUTOR_LOGGING_PROVIDER": "sentry", "OPR_EXECUTOR_LOGGING_CONFIG": "x"}, "OPR_EXECUTOR_LOGGING_CONFIG"},
		{map[string]string{"OPR_EXECUTOR_LOG_LEVEL": "loud"}, "OPR_EXECUTOR_LOG_LEVEL"},
		{map[string]string{"OPR_EXECUTOR_LOG_FORMAT": "logfmt"}, "OPR_EXECUTOR_LOG_FORMAT"},
	}
	// Any value of these is good.
	covered := map[string]bool{
		"OPR_EXECUTOR_DOCKER_HUB_USERNAME": true, "OPR_EXECUTOR_DOCKER_HUB_PASSWORD": true,
		"OPR_EXECUTOR_VERSION": true, "OPR_EXECUTOR_IMAGES": true,
	}
	for _, tc := range tests {
		name := strings.TrimSuffix(strings.Fields(tc.want)[0], ":")
		covered[name] = true
		t.Run(name, func(t *testing.T) {
			env := map[string]string{}
			if name != "OPR_EXECUTOR_SECRET" {
				env["OPR_EXECUTOR_SECRET"] = "s"
			}
			for k, v := range tc.env {
				env[k] = v
			}
			_, err := loadConfig(envOf(env))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v does not name %s", err, tc.want)
			}
		})
	}
	for _, name := range settingNames() {
		if !covered[name] {
			t.Errorf("%s: no bad value checked", name)
		}
	}
}

// TestLoadConfigValues: set values, seed-era spellings and opt-outs reach the config.
func TestLoadConfigValues(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		got  func(c *config) any
		want any
	}{
		{"development without a secret generates one", map[string]string{"OPR_EXECUTOR_ENV": "development", "OPR_EXECUTOR_SECRET": ""},
			func(c *config) any { return c.Development && c.SecretGenerated && strings.HasPrefix(c.Secret, "dev-") }, true},
		{"a secret is taken as set", map[string]string{"OPR_EXECUTOR_SECRET": " s p "},
			func(c *config) any { return [2]any{c.Secret, c.SecretGenerated} }, [2]any{" s p ", false}},
		{"settings are trimmed", map[string]string{"OPR_EXECUTOR_LISTEN": " 127.0.0.1:80 ", "OPR_EXECUTOR_CGROUP_PARENT": "/a/b/"},
			func(c *config) any { return c.Listen + " " + c.CgroupParent }, "127.0.0.1:80 /a/b"},
		{"metrics and tracing endpoints", map[string]string{"OPR_EXECUTOR_METRICS_LISTEN": "127.0.0.1:9901", "OPR_EXECUTOR_TRACING_ENDPOINT": "http://127.0.0.1:4318"},
			func(c *config) any { return c.MetricsListen + " " + c.TracingEndpoint }, "127.0.0.1:9901 http://127.0.0.1:4318"},
		{"seed-era threshold spelling", map[string]string{"OPR_EXECUTOR_INACTIVE_TRESHOLD": "30"},
			func(c *config) any { return c.InactiveThreshold }, 30 * time.Second},
		{"the right threshold spelling wins", map[string]string{"OPR_EXECUTOR_INACTIVE_THRESHOLD": "45", "OPR_EXECUTOR_INACTIVE_TRESHOLD": "30"},
			func(c *config) any { return c.InactiveThreshold }, 45 * time.Second},
		{"versions lower-cased", map[string]string{"OPR_EXECUTOR_RUNTIME_VERSIONS": "V4"},
			func(c *config) any { return c.RuntimeVersions }, []string{"v4"}},
		{"pre-pull list", map[string]string{"OPR_EXECUTOR_RUNTIME_VERSIONS": "V4", "OPR_EXECUTOR_RUNTIMES": "php-8.0,node-18.0",
			"OPR_EXECUTOR_IMAGES": "openruntimes/node:v5-18.0, x/y:z"},
			func(c *config) any { return strings.Join(c.prePullImages(), " ") },
			"openruntimes/node:v5-18.0 x/y:z openruntimes/php:v4-8.0 openruntimes/node:v4-18.0"},
		{"networks share the subnet", map[string]string{"OPR_EXECUTOR_NETWORK": "a, b,c"},
			func(c *config) any { s, err := c.networkSubnets(); return [3]any{len(s), s[0].String(), err == nil} }, [3]any{3, "10.89.0.0/18", true}},
		{"subnet masked", map[string]string{"OPR_EXECUTOR_SUBNET": "10.1.2.3/16"},
			func(c *config) any { return c.Subnet.String() }, "10.1.0.0/16"},
		{"user namespace and seccomp opt-outs", map[string]string{"OPR_EXECUTOR_USERNS": "off", "OPR_EXECUTOR_SECCOMP": "unconfined"},
			func(c *config) any { return [2]any{c.UserNS == nil, c.Unconfined} }, [2]any{true, true}},
		{"loopback ports", map[string]string{"OPR_EXECUTOR_ROOTLESS_LOOPBACK_PORTS": "5000, 9000"},
			func(c *config) any { return c.LoopbackPorts }, []uint16{5000, 9000}},
		{"user namespace range", map[string]string{"OPR_EXECUTOR_USERNS": "100000:200000:65536"},
			func(c *config) any { return *c.UserNS }, oci.IDMap{HostUID: 100000, HostGID: 200000, Size: 65536}},
		{"legacy storage variables", map[string]string{"OPR_EXECUTOR_STORAGE_DEVICE": "s3", "OPR_EXECUTOR_STORAGE_S3_ACCESS_KEY": "key",
			"OPR_EXECUTOR_STORAGE_S3_SECRET": "secret", "OPR_EXECUTOR_STORAGE_S3_REGION": "eu-west-1", "OPR_EXECUTOR_STORAGE_S3_BUCKET": "bucket"},
			func(c *config) any {
				return [2]any{strings.HasPrefix(c.Storage, "s3://"), c.BuildCacheStorage == c.Storage}
			}, [2]any{true, true}},
		{"network policy", map[string]string{"OPR_EXECUTOR_ALLOW_RUNTIME_TO_RUNTIME": "true", "OPR_EXECUTOR_ALLOW_HOST_ACCESS": " YES ",
			"OPR_EXECUTOR_ALLOW_LINK_LOCAL": "0", "OPR_EXECUTOR_EGRESS_DENY": "0.0.0.0/0", "OPR_EXECUTOR_EGRESS_ALLOW": "203.0.113.7/24, 198.51.100.0/24"},
			func(c *config) any {
				return [5]any{c.AllowRuntimeToRuntime, c.AllowHostAccess, c.AllowLinkLocal, c.EgressDeny[0].String(), len(c.EgressAllow)}
			}, [5]any{true, true, false, "0.0.0.0/0", 2}},
		{"egress prefixes masked", map[string]string{"OPR_EXECUTOR_EGRESS_ALLOW": "203.0.113.7/24"},
			func(c *config) any { return c.EgressAllow[0].String() }, "203.0.113.0/24"},
		{"resolver and pool", map[string]string{"OPR_EXECUTOR_DNS": "192.0.2.53, 198.51.100.53", "OPR_EXECUTOR_NETWORK_POOL": "4"},
			func(c *config) any { return [3]any{len(c.DNSServers), c.DNSServers[0].String(), c.NetworkPool} }, [3]any{2, "192.0.2.53", 4}},
		{"image collection off", map[string]string{"OPR_EXECUTOR_IMAGE_GC_INTERVAL": "0", "OPR_EXECUTOR_IMAGE_GC_AGE": "600"},
			func(c *config) any { return [2]any{c.ImageGCInterval, c.ImageGCAge} }, [2]any{time.Duration(0), 10 * time.Minute}},
		{"our auth file wins", map[string]string{"OPR_EXECUTOR_REGISTRY_AUTH_FILE": "/etc/executor/auth.json", "REGISTRY_AUTH_FILE": "/root/other.json"},
			func(c *config) any { return c.RegistryAuthFile }, "/etc/executor/auth.json"},
		{"REGISTRY_AUTH_FILE fallback", map[string]string{"REGISTRY_AUTH_FILE": "/run/auth.json"},
			func(c *config) any { return c.RegistryAuthFile }, "/run/auth.json"},
		{"image limits and archive dir", map[string]string{"OPR_EXECUTOR_IMAGE_ARCHIVE_DIR": "/srv/images",
			"OPR_EXECUTOR_IMAGE_SIZE_LIMIT": "4GiB", "OPR_EXECUTOR_IMAGE_MAX_ENTRIES": "250000"},
			func(c *config) any { return [3]any{c.ImageArchiveDir, c.ImageSizeLimit, c.ImageMaxEntries} },
			[3]any{"/srv/images", int64(4 << 30), int64(250000)}},
		{"retries", map[string]string{"OPR_EXECUTOR_RETRY_ATTEMPTS": "0", "OPR_EXECUTOR_RETRY_DELAY_MS": "20"},
			func(c *config) any { return [2]any{c.RetryAttempts, c.RetryDelay} }, [2]any{0, 20 * time.Millisecond}},
		{"stop grace", map[string]string{"OPR_EXECUTOR_STOP_GRACE": "10"},
			func(c *config) any { return c.StopGrace }, 10 * time.Second},
		{"build size limit", map[string]string{"OPR_EXECUTOR_BUILD_SIZE_LIMIT": "100MiB"},
			func(c *config) any { return c.BuildSizeLimit }, int64(100 << 20)},
		{"disk opt-out", map[string]string{"OPR_EXECUTOR_DISK_LIMIT": "0"},
			func(c *config) any { return c.DiskLimit }, int64(0)},
		{"disk and inodes", map[string]string{"OPR_EXECUTOR_DISK_LIMIT": "64MiB", "OPR_EXECUTOR_DISK_INODES": "2048"},
			func(c *config) any { return [2]any{c.DiskLimit, c.DiskInodes} }, [2]any{int64(64 << 20), uint64(2048)}},
		{"the smallest disk and fewest inodes", map[string]string{"OPR_EXECUTOR_DISK_LIMIT": "16MiB", "OPR_EXECUTOR_DISK_INODES": "1024"},
			func(c *config) any { return [2]any{c.DiskLimit, c.DiskInodes} }, [2]any{int64(16 << 20), uint64(1024)}},
		{"the most inodes", map[string]string{"OPR_EXECUTOR_DISK_INODES": "4294967295"},
			func(c *config) any { return c.DiskInodes }, uint64(1<<32 - 1)},
		{"init off", map[string]string{"OPR_EXECUTOR_INIT": "off"},
			func(c *config) any { return c.Init }, ""},
		{"init path", map[string]string{"OPR_EXECUTOR_INIT": "/usr/libexec/executor-init"},
			func(c *config) any { return c.Init }, "/usr/libexec/executor-init"},
		{"sentry", map[string]string{"OPR_EXECUTOR_LOGGING_PROVIDER": "Sentry", "OPR_EXECUTOR_LOGGING_CONFIG": "key;42"},
			func(c *config) any { return c.SentryDSN }, "https://key@sentry.io/42"},
		{"logging config without a provider is ignored", map[string]string{"OPR_EXECUTOR_LOGGING_CONFIG": "x"},
			func(c *config) any { return c.SentryDSN }, ""},
		{"log level and version", map[string]string{"OPR_EXECUTOR_LOG_LEVEL": "debug", "OPR_EXECUTOR_VERSION": "1.2.3"},
			func(c *config) any { return c.LogLevel + " " + c.Version }, "debug 1.2.3"},
		{"json logs", map[string]string{"OPR_EXECUTOR_LOG_FORMAT": "json"},
			func(c *config) any { return c.LogFormat }, "json"},
		{"docker hub credentials", map[string]string{"OPR_EXECUTOR_DOCKER_HUB_USERNAME": "u", "OPR_EXECUTOR_DOCKER_HUB_PASSWORD": " p w"},
			func(c *config) any { return c.DockerHubUsername + "/" + c.DockerHubPassword }, "u/ p w"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{"OPR_EXECUTOR_SECRET": "s"}
			for k, v := range tt.env {
				env[k] = v
			}
			c, err := loadConfig(envOf(env))
			if err != nil {
				t.Fatal(err)
			}
			if got := tt.got(c); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %#v, want %#v", got, tt.want)
			}
		})
	}
}

// TestREADMESettings: the README's configuration table documents every setting, with the default the table
// gives it.
func TestREADMESettings(t *testing.T) {
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	name := regexp.MustCompile("`((?:OPR_EXECUTOR|REGISTRY)_[A-Z0-9_]+)`")
	documented := map[string]string{} // variable -> default cell
	for _, line := range strings.Split(string(data), "\n") {
		// | variable(s) | default | meaning |, with \| inside cells
		cells := strings.Split(strings.ReplaceAll(line, `\|`, "/"), "|")
		if len(cells) < 4 || !strings.HasPrefix(line, "| `") {
			continue
		}
		for _, n := range name.FindAllStringSubmatch(cells[1], -1) {
			documented[n[1]] = strings.TrimSpace(cells[2])
		}
	}
	for _, s := range (&config{}).settings(nil) {
		cell, ok := documented[s.name]
		switch {
		case !ok:
			t.Errorf("%s is not in the README's table", s.name)
		case s.def != "" && cell != "`"+s.def+"`":
			t.Errorf("%s: README default %s, the settings table has `%s`", s.name, cell, s.def)
		}
	}
}

func TestLoadConfigResourceBounds(t *testing.T) {
	hostMB := memTotalMB(t)
	tests := []struct {
		name        string
		env         map[string]string
		cpus        float64
		memoryMB    int64
		pids        int64
		bodyTimeout time.Duration
	}{
		{"defaults: the host's size, 1024 processes, 60 s bodies", nil, float64(runtime.NumCPU()), hostMB, 1024, time.Minute},
		{"explicit", map[string]string{"OPR_EXECUTOR_MAX_CPUS": "2.5", "OPR_EXECUTOR_MAX_MEMORY": "2048",
			"OPR_EXECUTOR_PIDS_LIMIT": "256", "OPR_EXECUTOR_REQUEST_BODY_TIMEOUT": "15"}, 2.5, 2048, 256, 15 * time.Second},
		{"0 opts out of the bounds", map[string]string{"OPR_EXECUTOR_MAX_CPUS": "0", "OPR_EXECUTOR_MAX_MEMORY": "0"},
			0, 0, 1024, time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{"OPR_EXECUTOR_SECRET": "s"}
			for k, v := range tt.env {
				env[k] = v
			}
			c, err := loadConfig(envOf(env))
			if err != nil {
				t.Fatal(err)
			}
			if c.MaxCPUs != tt.cpus || c.MaxMemoryMB != tt.memoryMB || c.PidsLimit != tt.pids || c.BodyTimeout != tt.bodyTimeout {
				t.Errorf("cpus %v memory %d pids %d body timeout %v, want %v %d %d %v",
					c.MaxCPUs, c.MaxMemoryMB, c.PidsLimit, c.BodyTimeout, tt.cpus, tt.memoryMB, tt.pids, tt.bodyTimeout)
			}
		})
	}
}

// memTotalMB reads the host's memory from /proc/meminfo, in the API's megabytes (1,000,000 bytes): a second
// source for what the daemon reads through sysinfo(2).
func memTotalMB(t *testing.T) int64 {
	t.Helper()
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "MemTotal:" && f[2] == "kB" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb * 1024 / 1_000_000
		}
	}
	t.Fatalf("no MemTotal in /proc/meminfo:\n%s", data)
	return 0
}

// OPR_EXECUTOR_USERNS: the full range by default, explicit ranges as long as
// the kernel can map them and they hold every id images use up to nobody;
// errors name the variable.
func TestParseUserNS(t *testing.T) {
	tests := []struct {
		v    string
		want *oci.IDMap // nil with ok: off
		ok   bool
	}{
		{"full", &oci.IDMap{HostUID: 65536, HostGID: 65536, Size: 4294901759}, true},
		{"off", nil, true},
		{"1000000000:65536", &oci.IDMap{HostUID: 1000000000, HostGID: 1000000000, Size: 65536}, true},
		{"100000:200000:65536", &oci.IDMap{HostUID: 100000, HostGID: 200000, Size: 65536}, true},
		// The last host id is 4294967294: (uid_t)-1 stays unmapped.
		{"65536:4294901759", &oci.IDMap{HostUID: 65536, HostGID: 65536, Size: 4294901759}, true},
		{"65536:4294901760", nil, false},
		{"4294901759:65536", &oci.IDMap{HostUID: 4294901759, HostGID: 4294901759, Size: 65536}, true},
		{"4294901760:65536", nil, false},
		{"1:4294967294", &oci.IDMap{HostUID: 1, HostGID: 1, Size: 4294967294}, true},
		{"1:4294967295", nil, false},
		{"100000:1:4294967295", nil, false},
		{"1000:10", nil, false},
		{"1000000000:65535", nil, false},
		{"0:65536", nil, false},
		{"-1:65536", nil, false},
		{"1000000000", nil, false},
		{"1:2:3:4", nil, false},
		{"auto", nil, false},
		{"", nil, false},
	}
	for _, tt := range tests {
		got, err := parseUserNS(tt.v)
		if (err == nil) != tt.ok {
			t.Errorf("parseUserNS(%q) = %+v, %v; want ok=%v", tt.v, got, err, tt.ok)
			continue
		}
		if err != nil {
			if !strings.Contains(err.Error(), "OPR_EXECUTOR_USERNS") {
				t.Errorf("parseUserNS(%q): %v does not name the variable", tt.v, err)
			}
			continue
		}
		if (got == nil) != (tt.want == nil) || got != nil && *got != *tt.want {
			t.Errorf("parseUserNS(%q) = %+v, want %+v", tt.v, got, tt.want)
		}
	}
}

// The pool is on by default, but sandboxes park executor-init: with
// OPR_EXECUTOR_INIT=off an unset OPR_EXECUTOR_PREWARM is 0, while one set
// explicitly is kept (the daemon then refuses the pair, saying why).
func TestPrewarmDefaultFollowsInit(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		want int
	}{
		{"defaults", nil, defaultPrewarm},
		{"init off", map[string]string{"OPR_EXECUTOR_INIT": "off"}, 0},
		{"init off, prewarm set", map[string]string{"OPR_EXECUTOR_INIT": "off", "OPR_EXECUTOR_PREWARM": "2"}, 2},
		{"prewarm 0", map[string]string{"OPR_EXECUTOR_PREWARM": "0"}, 0},
		{"prewarm at its bound", map[string]string{"OPR_EXECUTOR_PREWARM": "64"}, 64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{"OPR_EXECUTOR_SECRET": "s"}
			for k, v := range tc.env {
				env[k] = v
			}
			c, err := loadConfig(func(k string) string { return env[k] })
			if err != nil {
				t.Fatal(err)
			}
			if c.Prewarm != tc.want {
				t.Errorf("Prewarm = %d, want %d", c.Prewarm, tc.want)
			}
		})
	}
}

// TestLiveRestoreSetting: live restore is off unless asked for, and needs
// executor-init (the rootless refusal is a case of TestRootlessRefusesWhatIsMissing,
// in tests/e2e, where a daemon really is rootless).
func TestLiveRestoreSetting(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		want bool
		err  string
	}{
		{"default", nil, false, ""},
		{"true", map[string]string{"OPR_EXECUTOR_LIVE_RESTORE": "true"}, true, ""},
		{"yes", map[string]string{"OPR_EXECUTOR_LIVE_RESTORE": "yes"}, true, ""},
		{"false", map[string]string{"OPR_EXECUTOR_LIVE_RESTORE": "false"}, false, ""},
		{"false without init", map[string]string{"OPR_EXECUTOR_LIVE_RESTORE": "false", "OPR_EXECUTOR_INIT": "off"}, false, ""},
		{"true without init", map[string]string{"OPR_EXECUTOR_LIVE_RESTORE": "true", "OPR_EXECUTOR_INIT": "off"}, false, "needs executor-init"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]string{"OPR_EXECUTOR_SECRET": "s"}
			for k, v := range tc.env {
				env[k] = v
			}
			c, err := loadConfig(func(k string) string { return env[k] })
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want one with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.LiveRestore != tc.want {
				t.Errorf("LiveRestore = %v, want %v", c.LiveRestore, tc.want)
			}
		})
	}
}

// TestCheckStartCgroup: live restore is refused where the next daemon would
// be started in a cgroup the kept runtimes make unusable for processes.
func TestCheckStartCgroup(t *testing.T) {
	const unit = "/system.slice/executor.service"
	for _, tc := range []struct {
		name, procCgroup, parent string
		refused                  bool
	}{
		{"systemd before 254: started in the unit, runtimes below it", "0::" + unit + "\n", unit, true},
		{"runtimes deeper below the daemon's cgroup", "0::" + unit + "\n", unit + "/runtimes", true},
		{"DelegateSubgroup=supervisor", "0::" + unit + "/supervisor\n", unit, false},
		{"a cgroup parent elsewhere", "0::" + unit + "\n", "/executor", false},
		{"a sibling whose name extends the daemon's", "0::/executor\n", "/executor-runtimes", false},
		{"the root cgroup (a container's namespace)", "0::/\n", "/executor", false},
		{"hybrid v1 host", "4:memory:" + unit + "\n0::" + unit + "\n", unit, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkStartCgroup(tc.procCgroup, tc.parent)
			if (err != nil) != tc.refused {
				t.Fatalf("checkStartCgroup: %v, refused %v", err, tc.refused)
			}
			if err != nil && !strings.Contains(err.Error(), "DelegateSubgroup=supervisor") {
				t.Errorf("the refusal names no way out: %v", err)
			}
		})
	}
}

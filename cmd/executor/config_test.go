package main

import (
	"os"
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

func TestLoadConfigDefaults(t *testing.T) {
	c, err := loadConfig(envOf(map[string]string{"OPR_EXECUTOR_SECRET": "s"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "0.0.0.0:9900" || c.DataDir != "/var/lib/executor" || c.Networks[0] != "openruntimes-runtimes" ||
		c.InactiveThreshold != 60*time.Second || c.MaintenanceInterval != 3600*time.Second || c.RetryAttempts != 5 ||
		c.RetryDelay != 500*time.Millisecond || c.Version != "unknown" || strings.Join(c.RuntimeVersions, ",") != "v2,v3,v4,v5" ||
		c.Development || c.Subnet.String() != "10.89.0.0/16" {
		t.Fatalf("defaults: %+v", c)
	}
}

func TestLoadConfigErrorsNameTheVariable(t *testing.T) {
	tests := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{}, "OPR_EXECUTOR_SECRET"},
		{map[string]string{"OPR_EXECUTOR_SECRET": "s", "OPR_EXECUTOR_ENV": "staging"}, "OPR_EXECUTOR_ENV"},
		{map[string]string{"OPR_EXECUTOR_SECRET": "s", "OPR_EXECUTOR_LISTEN": "9900"}, "OPR_EXECUTOR_LISTEN"},
		{map[string]string{"OPR_EXECUTOR_SECRET": "s", "OPR_EXECUTOR_DATA_DIR": "rel/dir"}, "OPR_EXECUTOR_DATA_DIR"},
		{map[string]string{"OPR_EXECUTOR_SECRET": "s", "OPR_EXECUTOR_RUNTIME_VERSIONS": "v5,v9"}, "OPR_EXECUTOR_RUNTIME_VERSIONS"},
		{map[string]string{"OPR_EXECUTOR_SECRET": "s", "OPR_EXECUTOR_INACTIVE_THRESHOLD": "soon"}, "OPR_EXECUTOR_INACTIVE_THRESHOLD"},
		{map[string]string{"OPR_EXECUTOR_SECRET": "s", "OPR_EXECUTOR_INACTIVE_TRESHOLD": "-1"}, "OPR_EXECUTOR_INACTIVE_TRESHOLD"},
		{map[string]string{"OPR_EXECUTOR_SECRET": "s", "OPR_EXECUTOR_MAINTENANCE_INTERVAL": "x"}, "OPR_EXECUTOR_MAINTENANCE_INTERVAL"},
		{map[string]string{"OPR_EXECUTOR_SECRET": "s", "OPR_EXECUTOR_RETRY_ATTEMPTS": "many"}, "OPR_EXECUTOR_RETRY_ATTEMPTS"},
		{map[string]string{"OPR_EXECUTOR_SECRET": "s", "OPR_EXECUTOR_RETRY_DELAY_MS": "1.5"}, "OPR_EXECUTOR_RETRY_DELAY_MS"},
		{map[string]string{"OPR_EXECUTOR_SECRET": "s", "OPR_EXECUTOR_SUBNET": "not-a-net"}, "OPR_EXECUTOR_SUBNET"},
		{map[string]string{"OPR_EXECUTOR_SECRET": "s", "OPR_EXECUTOR_CGROUP_PARENT": "relative"}, "OPR_EXECUTOR_CGROUP_PARENT"},
		{map[string]string{"OPR_EXECUTOR_SECRET": "s", "OPR_EXECUTOR_RUNTIMES": "node"}, "OPR_EXECUTOR_RUNTIMES"},
		{map[string]string{"OPR_EXECUTOR_SECRET": "s", "OPR_EXECUTOR_LOG_LEVEL": "loud"}, "OPR_EXECUTOR_LOG_LEVEL"},
		{map[string]string{"OPR_EXECUTOR_SECRET": "s", "OPR_EXECUTOR_PIDS_LIMIT": "0"}, "OPR_EXECUTOR_PIDS_LIMIT"},
		{map[string]string{"OPR_EXECUTOR_SECRET": "s", "OPR_EXECUTOR_CONNECTION_STORAGE": "dospaces://k:s@host/bucket"}, "OPR_EXECUTOR_CONNECTION_STORAGE"},
		{map[string]string{"OPR_EXECUTOR_SECRET": "s", "OPR_EXECUTOR_CONNECTION_BUILD_CACHE_STORAGE": "wasabi://k:s@host/b"}, "OPR_EXECUTOR_CONNECTION_BUILD_CACHE_STORAGE"},
		{map[string]string{"OPR_EXECUTOR_SECRET": "s", "OPR_EXECUTOR_STORAGE_DEVICE": "floppy"}, "OPR_EXECUTOR_STORAGE_DEVICE"},
		{map[string]string{"OPR_EXECUTOR_SECRET": "s", "OPR_EXECUTOR_USERNS": "1000:10"}, "OPR_EXECUTOR_USERNS"},
		{map[string]string{"OPR_EXECUTOR_SECRET": "s", "OPR_EXECUTOR_USERNS": "root"}, "OPR_EXECUTOR_USERNS"},
		{map[string]string{"OPR_EXECUTOR_SECRET": "s", "OPR_EXECUTOR_SECCOMP": "maybe"}, "OPR_EXECUTOR_SECCOMP"},
		{map[string]string{"OPR_EXECUTOR_SECRET": "s", "OPR_EXECUTOR_LOGGING_PROVIDER": "raygun"}, "OPR_EXECUTOR_LOGGING_PROVIDER"},
		{map[string]string{"OPR_EXECUTOR_SECRET": "s", "OPR_EXECUTOR_ALLOW_HOST_ACCESS": "perhaps"}, "OPR_EXECUTOR_ALLOW_HOST_ACCESS"},
		{map[string]string{"OPR_EXECUTOR_SECRET": "s", "OPR_EXECUTOR_EGRESS_DENY": "10.0.0.0/33"}, "OPR_EXECUTOR_EGRESS_DENY"},
		{map[string]string{"OPR_EXECUTOR_SECRET": "s", "OPR_EXECUTOR_EGRESS_ALLOW": "fe80::/10"}, "OPR_EXECUTOR_EGRESS_ALLOW"},
		{map[string]string{"OPR_EXECUTOR_SECRET": "s", "OPR_EXECUTOR_DNS": "127.0.0.53"}, "OPR_EXECUTOR_DNS"},
		{map[string]string{"OPR_EXECUTOR_SECRET": "s", "OPR_EXECUTOR_NETWORK_POOL": "-2"}, "OPR_EXECUTOR_NETWORK_POOL"},
		{map[string]string{"OPR_EXECUTOR_SECRET": "s", "OPR_EXECUTOR_LOGGING_PROVIDER": "sentry", "OPR_EXECUTOR_LOGGING_CONFIG": "x"}, "OPR_EXECUTOR_LOGGING_CONFIG"},
		{map[string]string{"OPR_EXECUTOR_SECRET": "s", "OPR_EXECUTOR_IMAGE_GC_INTERVAL": "hourly"}, "OPR_EXECUTOR_IMAGE_GC_INTERVAL"},
		{map[string]string{"OPR_EXECUTOR_SECRET": "s", "OPR_EXECUTOR_IMAGE_GC_AGE": "-5"}, "OPR_EXECUTOR_IMAGE_GC_AGE"},
		{map[string]string{"OPR_EXECUTOR_SECRET": "s", "OPR_EXECUTOR_REGISTRY_AUTH_FILE": "auth.json"}, "OPR_EXECUTOR_REGISTRY_AUTH_FILE"},
		{map[string]string{"OPR_EXECUTOR_SECRET": "s", "REGISTRY_AUTH_FILE": "auth.json"}, "REGISTRY_AUTH_FILE"},
		{map[string]string{"OPR_EXECUTOR_SECRET": "s", "OPR_EXECUTOR_MAX_CPUS": "-1"}, "OPR_EXECUTOR_MAX_CPUS"},
		{map[string]string{"OPR_EXECUTOR_SECRET": "s", "OPR_EXECUTOR_MAX_CPUS": "NaN"}, "OPR_EXECUTOR_MAX_CPUS"},
		{map[string]string{"OPR_EXECUTOR_SECRET": "s", "OPR_EXECUTOR_MAX_CPUS": "four"}, "OPR_EXECUTOR_MAX_CPUS"},
		{map[string]string{"OPR_EXECUTOR_SECRET": "s", "OPR_EXECUTOR_MAX_MEMORY": "1.5"}, "OPR_EXECUTOR_MAX_MEMORY"},
		{map[string]string{"OPR_EXECUTOR_SECRET": "s", "OPR_EXECUTOR_MAX_MEMORY": "-512"}, "OPR_EXECUTOR_MAX_MEMORY"},
		{map[string]string{"OPR_EXECUTOR_SECRET": "s", "OPR_EXECUTOR_REQUEST_BODY_TIMEOUT": "0"}, "OPR_EXECUTOR_REQUEST_BODY_TIMEOUT"},
		{map[string]string{"OPR_EXECUTOR_SECRET": "s", "OPR_EXECUTOR_REQUEST_BODY_TIMEOUT": "1m"}, "OPR_EXECUTOR_REQUEST_BODY_TIMEOUT"},
	}
	for _, tc := range tests {
		t.Run(tc.want, func(t *testing.T) {
			_, err := loadConfig(envOf(tc.env))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v does not name %s", err, tc.want)
			}
		})
	}
}

func TestLoadConfigSettings(t *testing.T) {
	c, err := loadConfig(envOf(map[string]string{
		"OPR_EXECUTOR_ENV":               "development",
		"OPR_EXECUTOR_INACTIVE_TRESHOLD": "30",
		"OPR_EXECUTOR_RUNTIME_VERSIONS":  "V4",
		"OPR_EXECUTOR_NETWORK":           "a, b,c",
		"OPR_EXECUTOR_RUNTIMES":          "php-8.0,node-18.0",
		"OPR_EXECUTOR_IMAGES":            "openruntimes/node:v5-18.0, x/y:z",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if !c.SecretGenerated || !strings.HasPrefix(c.Secret, "dev-") {
		t.Errorf("development without a secret should generate one: %q", c.Secret)
	}
	if c.InactiveThreshold != 30*time.Second {
		t.Errorf("seed-era threshold spelling ignored: %v", c.InactiveThreshold)
	}
	if got := strings.Join(c.prePullImages(), " "); got != "openruntimes/node:v5-18.0 x/y:z openruntimes/php:v4-8.0 openruntimes/node:v4-18.0" {
		t.Errorf("pre-pull list %q", got)
	}
	if c.UserNS == nil || *c.UserNS != *oci.FullIDMap() {
		t.Errorf("user namespace default %+v, want the full range", c.UserNS)
	}
	subnets, err := c.networkSubnets()
	if err != nil || len(subnets) != 3 || subnets[0].String() != "10.89.0.0/18" || subnets[2].String() != "10.89.128.0/18" {
		t.Errorf("subnets %v %v", subnets, err)
	}
}

func TestLoadConfigOptOutsAndLegacyStorage(t *testing.T) {
	c, err := loadConfig(envOf(map[string]string{
		"OPR_EXECUTOR_SECRET":                "s",
		"OPR_EXECUTOR_USERNS":                "off",
		"OPR_EXECUTOR_SECCOMP":               "unconfined",
		"OPR_EXECUTOR_STORAGE_DEVICE":        "s3",
		"OPR_EXECUTOR_STORAGE_S3_ACCESS_KEY": "key",
		"OPR_EXECUTOR_STORAGE_S3_SECRET":     "secret",
		"OPR_EXECUTOR_STORAGE_S3_REGION":     "eu-west-1",
		"OPR_EXECUTOR_STORAGE_S3_BUCKET":     "bucket",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.UserNS != nil || !c.Unconfined {
		t.Errorf("opt-outs not applied: %+v %v", c.UserNS, c.Unconfined)
	}
	if !strings.HasPrefix(c.Storage, "s3://") || c.BuildCacheStorage != c.Storage {
		t.Errorf("legacy storage variables: %q, cache %q", c.Storage, c.BuildCacheStorage)
	}
}

func TestLoadConfigNetworkPolicy(t *testing.T) {
	c, err := loadConfig(envOf(map[string]string{
		"OPR_EXECUTOR_SECRET":                   "s",
		"OPR_EXECUTOR_ALLOW_RUNTIME_TO_RUNTIME": "true",
		"OPR_EXECUTOR_EGRESS_DENY":              "0.0.0.0/0",
		"OPR_EXECUTOR_EGRESS_ALLOW":             "203.0.113.7/24, 198.51.100.0/24",
		"OPR_EXECUTOR_DNS":                      "192.0.2.53",
		"OPR_EXECUTOR_NETWORK_POOL":             "4",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if !c.AllowRuntimeToRuntime || c.AllowHostAccess || c.AllowLinkLocal || c.NetworkPool != 4 ||
		len(c.EgressDeny) != 1 || len(c.EgressAllow) != 2 || c.EgressAllow[0].String() != "203.0.113.0/24" ||
		len(c.DNSServers) != 1 || c.DNSServers[0].String() != "192.0.2.53" {
		t.Fatalf("network policy %+v", c)
	}
	d, err := loadConfig(envOf(map[string]string{"OPR_EXECUTOR_SECRET": "s"}))
	if err != nil || d.AllowRuntimeToRuntime || d.AllowHostAccess || d.AllowLinkLocal || d.DNSServers != nil || d.NetworkPool != 0 {
		t.Fatalf("safe defaults: %+v %v", d, err)
	}
}

func TestLoadConfigImageGCAndAuthFile(t *testing.T) {
	c, err := loadConfig(envOf(map[string]string{"OPR_EXECUTOR_SECRET": "s"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.ImageGCInterval != time.Hour || c.ImageGCAge != 24*time.Hour || c.RegistryAuthFile != "" {
		t.Errorf("defaults: interval %v, age %v, auth file %q", c.ImageGCInterval, c.ImageGCAge, c.RegistryAuthFile)
	}
	c, err = loadConfig(envOf(map[string]string{
		"OPR_EXECUTOR_SECRET":             "s",
		"OPR_EXECUTOR_IMAGE_GC_INTERVAL":  "0",
		"OPR_EXECUTOR_IMAGE_GC_AGE":       "600",
		"OPR_EXECUTOR_REGISTRY_AUTH_FILE": "/etc/executor/auth.json",
		"REGISTRY_AUTH_FILE":              "/root/other.json",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.ImageGCInterval != 0 || c.ImageGCAge != 10*time.Minute || c.RegistryAuthFile != "/etc/executor/auth.json" {
		t.Errorf("settings: interval %v, age %v, auth file %q", c.ImageGCInterval, c.ImageGCAge, c.RegistryAuthFile)
	}
	c, err = loadConfig(envOf(map[string]string{"OPR_EXECUTOR_SECRET": "s", "REGISTRY_AUTH_FILE": "/run/auth.json"}))
	if err != nil || c.RegistryAuthFile != "/run/auth.json" {
		t.Errorf("REGISTRY_AUTH_FILE fallback: %q %v", c.RegistryAuthFile, err)
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

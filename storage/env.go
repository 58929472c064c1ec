package storage

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// Environment variables that name the storage devices.
const (
	EnvStorage           = "OPR_EXECUTOR_CONNECTION_STORAGE"
	EnvBuildCacheStorage = "OPR_EXECUTOR_CONNECTION_BUILD_CACHE_STORAGE"
	EnvLegacyDevice      = "OPR_EXECUTOR_STORAGE_DEVICE"
	EnvStorageRoots      = "OPR_EXECUTOR_STORAGE_ROOTS"
)

// DefaultStorageRoots are the directories the local device may use when
// OPR_EXECUTOR_STORAGE_ROOTS is unset: the ones the reference's compose
// file shares with its executor.
const DefaultStorageRoots = "/storage,/tmp"

// RootsFromEnv returns the local storage roots, OPR_EXECUTOR_STORAGE_ROOTS
// (a comma list of absolute directories, DefaultStorageRoots when unset).
// A root that does not exist is kept (it never matches an existing file, and
// starts to once it is made), so a host without /storage still starts; one
// that exists but is not a directory, or is a symbolic link, is an error.
// Errors name the variable.
func RootsFromEnv(getenv func(string) string) ([]string, error) {
	v := strings.TrimSpace(getenv(EnvStorageRoots))
	if v == "" {
		v = DefaultStorageRoots
	}
	var roots []string
	seen := map[string]bool{}
	for _, r := range strings.Split(v, ",") {
		if r = strings.TrimSpace(r); r == "" {
			continue
		}
		if c := filepath.Clean(r); filepath.IsAbs(r) && !hasDotDot(r) {
			r = c
		}
		if !seen[r] {
			seen[r] = true
			roots = append(roots, r)
		}
	}
	if len(roots) == 0 {
		return nil, fmt.Errorf("%s=%q names no directory", EnvStorageRoots, v)
	}
	if _, err := cleanRoots(roots); err != nil {
		return nil, fmt.Errorf("%s: %w", EnvStorageRoots, err)
	}
	for _, r := range roots {
		st, err := os.Lstat(r)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return nil, fmt.Errorf("%s: %w", EnvStorageRoots, err)
		case st.Mode()&fs.ModeSymlink != 0:
			return nil, fmt.Errorf("%s: %s is a symbolic link: name the directory it leads to", EnvStorageRoots, r)
		case !st.IsDir():
			return nil, fmt.Errorf("%s: %s is not a directory", EnvStorageRoots, r)
		}
	}
	return roots, nil
}

// legacyPrefixes are the variable prefixes of the legacy devices
// (OPR_EXECUTOR_STORAGE_<X>_{ACCESS_KEY,SECRET,REGION,BUCKET}).
var legacyPrefixes = map[string]string{
	"s3":        "OPR_EXECUTOR_STORAGE_S3_",
	"dospaces":  "OPR_EXECUTOR_STORAGE_DO_SPACES_",
	"backblaze": "OPR_EXECUTOR_STORAGE_BACKBLAZE_",
	"linode":    "OPR_EXECUTOR_STORAGE_LINODE_",
	"wasabi":    "OPR_EXECUTOR_STORAGE_WASABI_",
}

// DSNFromEnv returns the effective storage DSN: OPR_EXECUTOR_CONNECTION_STORAGE,
// or, when that is empty or only the local placeholder (file://, local://,
// which Appwrite's compose file ships) and OPR_EXECUTOR_STORAGE_DEVICE names a
// remote device, a DSN built from the legacy OPR_EXECUTOR_STORAGE_* variables.
// "" means the local filesystem. Errors name the variable at fault and never
// contain credentials.
func DSNFromEnv(getenv func(string) string) (string, error) {
	return withLegacy(strings.TrimSpace(getenv(EnvStorage)), getenv)
}

// BuildCacheDSNFromEnv returns the effective build-cache DSN:
// OPR_EXECUTOR_CONNECTION_BUILD_CACHE_STORAGE, falling back to the storage
// DSN (DSNFromEnv) when empty.
func BuildCacheDSNFromEnv(getenv func(string) string) (string, error) {
	if dsn := strings.TrimSpace(getenv(EnvBuildCacheStorage)); dsn != "" {
		return withLegacy(dsn, getenv)
	}
	return DSNFromEnv(getenv)
}

func withLegacy(dsn string, getenv func(string) string) (string, error) {
	device := strings.ToLower(strings.TrimSpace(getenv(EnvLegacyDevice)))
	if device == "" || device == "local" {
		return dsn, nil
	}
	if dsn != "" {
		d, ok := ParseDSN(dsn)
		if !ok || (d.Scheme != "file" && d.Scheme != "local") {
			return dsn, nil
		}
	}
	return LegacyDSN(device, getenv)
}

// LegacyDSN builds the DSN equivalent to the legacy variables of a device
// (s3, dospaces, backblaze, linode, wasabi; local gives "").
func LegacyDSN(device string, getenv func(string) string) (string, error) {
	device = strings.ToLower(strings.TrimSpace(device))
	if device == "" || device == "local" {
		return "", nil
	}
	prefix, ok := legacyPrefixes[device]
	if !ok {
		return "", fmt.Errorf("%s=%q is not a storage device (local, s3, dospaces, backblaze, linode, wasabi)", EnvLegacyDevice, device)
	}
	get := func(name string) string { return strings.TrimSpace(getenv(prefix + name)) }
	var user *url.Userinfo
	if key, secret := get("ACCESS_KEY"), get("SECRET"); key != "" || secret != "" {
		user = url.UserPassword(key, secret)
	}
	region, bucket := get("REGION"), strings.Trim(get("BUCKET"), "/")
	q := url.Values{}
	if region != "" {
		q.Set("region", region)
	}

	if device == "s3" {
		endpoint := get("ENDPOINT")
		if endpoint == "" {
			endpoint = get("HOST") // the reference reads this one too
		}
		if endpoint != "" {
			if !strings.Contains(endpoint, "://") {
				endpoint = "https://" + endpoint
			}
			u, err := url.Parse(endpoint)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
				return "", fmt.Errorf("%sENDPOINT must be an http:// or https:// URL", prefix)
			}
			u.User = nil
			q.Set("url", u.String())
			return (&url.URL{Scheme: "s3", User: user, Host: u.Host, Path: "/" + bucket, RawQuery: q.Encode()}).String(), nil
		}
		// AWS: the virtual-hosted bucket host; the root is not rewritten.
		if bucket == "" {
			return "", fmt.Errorf("%sBUCKET is empty (set it, or %sENDPOINT for an S3-compatible service)", prefix, prefix)
		}
		if region == "" {
			region = "us-east-1"
			q.Set("region", region)
		}
		host := bucket + ".s3." + region + ".amazonaws.com"
		return (&url.URL{Scheme: "s3", User: user, Host: host, RawQuery: q.Encode()}).String(), nil
	}

	if bucket == "" {
		return "", fmt.Errorf("%sBUCKET is empty", prefix)
	}
	if region == "" {
		return "", fmt.Errorf("%sREGION is empty", prefix)
	}
	host := fmt.Sprintf(providerEndpoints[device], region)
	return (&url.URL{Scheme: device, User: user, Host: host, Path: "/" + bucket, RawQuery: q.Encode()}).String(), nil
}

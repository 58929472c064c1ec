package main

import (
	"fmt"
	"math"
	"net/netip"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"executor/oci"
)

// The parsers of the settings table: each stores the value of one variable in the config field it is given.
// loadConfig has trimmed the value (unless the setting is raw) and put the default in place of a blank one.

// text stores the value as it is.
func text(dst *string) parser {
	return func(_, v string) error {
		*dst = v
		return nil
	}
}

// absPath stores an absolute path; blank stays blank (unset).
func absPath(dst *string) parser {
	return func(name, v string) error {
		if v != "" && !filepath.IsAbs(v) {
			return fmt.Errorf("%s=%q must be an absolute path", name, v)
		}
		*dst = v
		return nil
	}
}

// choice stores one of values.
func choice(dst *string, values ...string) parser {
	return func(name, v string) error {
		if err := oneOf(name, v, values...); err != nil {
			return err
		}
		*dst = v
		return nil
	}
}

// oneOf refuses a value that is not one of values (two at least).
func oneOf(name, v string, values ...string) error {
	if slices.Contains(values, v) {
		return nil
	}
	last := len(values) - 1
	return fmt.Errorf("%s must be %s or %s, not %q", name, strings.Join(values[:last], ", "), values[last], v)
}

// list stores a comma list; blank is an empty one.
func list(dst *[]string) parser {
	return func(_, v string) error {
		*dst = splitList(v)
		return nil
	}
}

// prefixList stores a comma list of IPv4 prefixes, masked.
func prefixList(dst *[]netip.Prefix) parser {
	return func(name, v string) (err error) {
		*dst, err = prefixes(name, v)
		return err
	}
}

// flag stores a boolean.
func flag(dst *bool) parser {
	return func(name, v string) (err error) {
		*dst, err = boolean(name, v)
		return err
	}
}

// count stores a non-negative integer.
func count[T int | int64](dst *T) parser {
	return func(name, v string) error {
		n, err := integer(name, v)
		*dst = T(n)
		return err
	}
}

// seconds stores a non-negative number of seconds.
func seconds(dst *time.Duration) parser {
	return func(name, v string) error {
		n, err := integer(name, v)
		*dst = time.Duration(n) * time.Second
		return err
	}
}

// milliseconds stores a non-negative number of milliseconds.
func milliseconds(dst *time.Duration) parser {
	return func(name, v string) error {
		n, err := integer(name, v)
		*dst = time.Duration(n) * time.Millisecond
		return err
	}
}

// size stores a size in bytes (see byteSize).
func size(dst *int64) parser {
	return func(name, v string) (err error) {
		*dst, err = byteSize(name, v)
		return err
	}
}

// positiveCount, positiveSeconds and positiveSize refuse 0, for limits that cannot be turned off.
func positiveCount(dst *int64) parser           { return positive(count(dst), dst) }
func positiveSeconds(dst *time.Duration) parser { return positive(seconds(dst), dst) }
func positiveSize(dst *int64) parser            { return positive(size(dst), dst) }

// positive refuses the value parse stored in dst if it is 0 (the parsers refuse negative values).
func positive[T int64 | time.Duration](parse parser, dst *T) parser {
	return func(name, v string) error {
		if err := parse(name, v); err != nil {
			return err
		}
		if *dst == 0 {
			return fmt.Errorf("%s must be positive", name)
		}
		return nil
	}
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

// integer reads a non-negative integer.
func integer(name, v string) (int64, error) {
	v = strings.TrimSpace(v)
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

// binaryUnits are byteSize's suffixes, largest first.
var binaryUnits = []struct {
	prefix string
	shift  uint
}{{"T", 40}, {"G", 30}, {"M", 20}, {"K", 10}}

// byteSize reads a size in bytes, with an optional binary suffix (KiB, MiB,
// GiB, TiB; K, M, G, T mean the same): "2GiB", "512M", "1048576".
func byteSize(name, v string) (int64, error) {
	v = strings.TrimSpace(v)
	num, unit := v, int64(1)
	for _, u := range slices.Backward(binaryUnits) {
		for _, s := range []string{u.prefix + "iB", u.prefix + "B", u.prefix} {
			if strings.HasSuffix(strings.ToUpper(num), strings.ToUpper(s)) && len(num) > len(s) {
				num, unit = strings.TrimSpace(num[:len(num)-len(s)]), int64(1)<<u.shift
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

// formatSize writes n as byteSize reads it, in the largest binary unit that divides it ("16GiB"): how the
// README gives defaults.
func formatSize(n int64) string {
	for _, u := range binaryUnits {
		if n != 0 && n%(1<<u.shift) == 0 {
			return strconv.FormatInt(n>>u.shift, 10) + u.prefix + "iB"
		}
	}
	return strconv.FormatInt(n, 10)
}

// formatSeconds writes d in whole seconds, as seconds reads it.
func formatSeconds(d time.Duration) string { return strconv.FormatInt(int64(d/time.Second), 10) }

// maxCPUs reads cores, fractions allowed, 0 for no bound; blank is the host's CPUs.
func maxCPUs(name, v string) (float64, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return float64(runtime.NumCPU()), nil
	}
	n, err := strconv.ParseFloat(v, 64)
	if err != nil || n < 0 || math.IsNaN(n) || math.IsInf(n, 0) {
		return 0, fmt.Errorf("%s=%q must be a non-negative number of cores (0 = no bound)", name, v)
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

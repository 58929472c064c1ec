package oci

import (
	"sort"
	"strings"
)

// InitPath is where the executor's init is mounted in every runtime.
const InitPath = "/.executor-init"

// WithInit runs args under the executor's init, which forwards signals and
// reaps orphans as PID 1.
func WithInit(args []string) []string {
	return append([]string{InitPath, "--"}, args...)
}

// Shell is the shell used for runtimeEntrypoint and commands.
func Shell(hasBash bool) string {
	if hasBash {
		return "bash"
	}
	return "sh"
}

// Env merges the image's environment with the runtime's variables (which win),
// keeping the image's order and appending new names sorted, so the result is
// deterministic. Names outside [A-Za-z0-9_.-] are dropped, as the reference does.
func Env(image []string, vars map[string]string) []string {
	out := make([]string, 0, len(image)+len(vars))
	seen := make(map[string]bool, len(vars))
	for _, kv := range image {
		name, _, _ := strings.Cut(kv, "=")
		if v, ok := vars[name]; ok {
			out = append(out, name+"="+v)
			seen[name] = true
			continue
		}
		out = append(out, kv)
	}
	names := make([]string, 0, len(vars))
	for k := range vars {
		if !seen[k] && validEnvName(k) {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	for _, k := range names {
		out = append(out, k+"="+vars[k])
	}
	return out
}

func validEnvName(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '.', r == '-':
		default:
			return false
		}
	}
	return true
}

// HasPATH reports whether env sets PATH.
func HasPATH(env []string) bool {
	for _, kv := range env {
		if strings.HasPrefix(kv, "PATH=") {
			return true
		}
	}
	return false
}

// DefaultPATH is used when the image sets none.
const DefaultPATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

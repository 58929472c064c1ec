package oci

import (
	"sort"
	"strings"
)

// ImageConfig is the part of an image's configuration a runtime uses.
type ImageConfig struct {
	Env        []string
	Entrypoint []string
	Cmd        []string
	WorkingDir string
	User       string
}

// Command chooses a runtime's main process, as the reference executor does:
// a runtimeEntrypoint runs under the image's bash (else sh); a v2 runtime
// without a build command runs the image's own entrypoint and cmd; anything
// else idles so that build commands can be run in it.
func Command(img ImageConfig, runtimeEntrypoint, version string, hasBuildCommand, hasBash bool) []string {
	switch {
	case runtimeEntrypoint != "":
		return []string{Shell(hasBash), "-c", runtimeEntrypoint}
	case version == "v2" && !hasBuildCommand:
		args := append(append([]string(nil), img.Entrypoint...), img.Cmd...)
		if len(args) > 0 {
			return args
		}
	}
	return []string{"tail", "-f", "/dev/null"}
}

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

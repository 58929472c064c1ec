package protocol

import (
	"errors"
	"fmt"
	"maps"
	"strconv"
)

// Version is a protocol version: the prefix of a runtime image's tag
// ("openruntimes/node:v4-18.0" speaks v4).
type Version string

// The supported versions.
const (
	V2 Version = "v2"
	V3 Version = "v3"
	V4 Version = "v4"
	V5 Version = "v5"
)

// ErrUnknownVersion is returned by ParseVersion for a version this package
// does not speak.
var ErrUnknownVersion = errors.New("protocol: unknown version")

// rules is what one version asks of the executor. Every rule that differs
// between versions is a field here, so that a new version is one more entry
// in versions and nothing outside this package changes.
type rules struct {
	version Version

	// codeDir is where the runtime finds its source and leaves its artifact.
	codeDir string
	// logsDir is where the runtime writes one pair of log files per
	// execution; "" when its logs travel otherwise.
	logsDir string
	// workInCodeDir: the main process starts in codeDir, not in the
	// image's working directory.
	workInCodeDir bool
	// imageCommand: without a build command the image's own entrypoint and
	// cmd start the server (later versions are started by a
	// runtimeEntrypoint, or idle).
	imageCommand bool

	secretVar, entrypointVar, hostnameVar string
	// resourceVars: OPEN_RUNTIMES_CPUS and OPEN_RUNTIMES_MEMORY are set.
	resourceVars bool

	// envelope: an execution is a JSON envelope POSTed to /, not the
	// caller's request passed through.
	envelope bool
	// headerLogs: the logs come back URL-encoded in response headers.
	headerLogs bool
	// authHeaders: Authorization and x-open-runtimes-logging are sent.
	authHeaders bool

	warningsAfterOutput bool
	timestampedOutput   bool
	streamsBuildLogs    bool
}

// versions holds every supported version, oldest first.
var versions = []rules{
	{
		version:       V2,
		codeDir:       "/usr/code",
		workInCodeDir: true,
		imageCommand:  true,
		secretVar:     "INTERNAL_RUNTIME_KEY",
		entrypointVar: "INTERNAL_RUNTIME_ENTRYPOINT",
		// The reference's spelling, which v2 images were built against.
		hostnameVar:         "INERNAL_EXECUTOR_HOSTNAME",
		envelope:            true,
		warningsAfterOutput: true,
	},
	{
		version:          V3,
		codeDir:          "/mnt/code",
		secretVar:        "OPEN_RUNTIMES_SECRET",
		entrypointVar:    "OPEN_RUNTIMES_ENTRYPOINT",
		hostnameVar:      "OPEN_RUNTIMES_HOSTNAME",
		headerLogs:       true,
		streamsBuildLogs: true,
	},
	{
		version:          V4,
		codeDir:          "/mnt/code",
		logsDir:          "/mnt/logs",
		secretVar:        "OPEN_RUNTIMES_SECRET",
		entrypointVar:    "OPEN_RUNTIMES_ENTRYPOINT",
		hostnameVar:      "OPEN_RUNTIMES_HOSTNAME",
		resourceVars:     true,
		authHeaders:      true,
		streamsBuildLogs: true,
	},
	{
		version:           V5,
		codeDir:           "/mnt/code",
		logsDir:           "/mnt/logs",
		secretVar:         "OPEN_RUNTIMES_SECRET",
		entrypointVar:     "OPEN_RUNTIMES_ENTRYPOINT",
		hostnameVar:       "OPEN_RUNTIMES_HOSTNAME",
		resourceVars:      true,
		authHeaders:       true,
		timestampedOutput: true,
		streamsBuildLogs:  true,
	},
}

// ParseVersion returns the version s names. Only the exact names of
// supported versions are accepted ("v4", not "V4" or "4").
func ParseVersion(s string) (Version, error) {
	for _, r := range versions {
		if string(r.version) == s {
			return r.version, nil
		}
	}
	return "", fmt.Errorf("%w %q", ErrUnknownVersion, s)
}

// Versions returns the supported versions, oldest first.
func Versions() []Version {
	out := make([]Version, len(versions))
	for i, r := range versions {
		out[i] = r.version
	}
	return out
}

// rules returns v's entry. A version ParseVersion refuses gets the newest
// version's rules: callers validate versions where they enter, and a
// runtime must not be half one version and half another.
func (v Version) rules() *rules {
	for i := range versions {
		if versions[i].version == v {
			return &versions[i]
		}
	}
	return &versions[len(versions)-1]
}

// CodeDir is where the runtime's code directory is mounted: the build's
// source is unpacked there and its artifact left there.
func (v Version) CodeDir() string { return v.rules().codeDir }

// ArtifactPath is where the runtime sees the artifact a build leaves.
func (v Version) ArtifactPath() string { return v.rules().codeDir + "/" + ArtifactName }

// LogsDir is where the runtime's log directory is mounted; "" when the
// version writes no log files (its logs travel in the response).
func (v Version) LogsDir() string { return v.rules().logsDir }

// WorkingDir is the working directory of the runtime's main process, given
// the image's. v2 runtimes work in their code directory; the others in the
// image's, or "/" when it names none.
func (v Version) WorkingDir(imageDir string) string {
	if r := v.rules(); r.workInCodeDir {
		return r.codeDir
	}
	if imageDir == "" {
		return "/"
	}
	return imageDir
}

// WarningsAfterOutput reports whether the build-cache warnings follow a
// build's output (v2) rather than precede it.
func (v Version) WarningsAfterOutput() bool { return v.rules().warningsAfterOutput }

// TimestampedOutput reports whether clients get build output as timestamped
// entries; older versions get it as one string.
func (v Version) TimestampedOutput() bool { return v.rules().timestampedOutput }

// StreamsBuildLogs reports whether a build's output can be followed while it
// runs. v2 clients expect an empty stream.
func (v Version) StreamsBuildLogs() bool { return v.rules().streamsBuildLogs }

// EnvParams is what a runtime's environment is made of.
type EnvParams struct {
	Variables       map[string]string // the user's; the protocol's own win over them
	Secret          string            // the runtime's secret, checked on every execution
	Entrypoint      string            // the user's code file, relative to the function's directory
	Hostname        string            // the executor's hostname
	OutputDirectory string            // the build's output directory; "" or "0" for none
	CPUs            float64
	MemoryMB        int64
}

// Env returns the variables of a runtime: the user's, then the protocol's,
// which win, then OPEN_RUNTIMES_OUTPUT_DIRECTORY and CI=true.
func (v Version) Env(p EnvParams) map[string]string {
	r := v.rules()
	env := make(map[string]string, len(p.Variables)+8)
	maps.Copy(env, p.Variables)
	env[r.secretVar] = p.Secret
	env[r.entrypointVar] = p.Entrypoint
	env[r.hostnameVar] = p.Hostname
	if r.resourceVars {
		env["OPEN_RUNTIMES_CPUS"] = strconv.FormatFloat(p.CPUs, 'f', -1, 64)
		env["OPEN_RUNTIMES_MEMORY"] = strconv.FormatInt(p.MemoryMB, 10)
	}
	// "0" is how some clients say "none": the reference skips it too.
	if p.OutputDirectory != "" && p.OutputDirectory != "0" {
		env["OPEN_RUNTIMES_OUTPUT_DIRECTORY"] = p.OutputDirectory
	}
	env["CI"] = "true"
	return env
}

// Command returns the runtime's main process, as the reference executor
// chooses it: a runtimeEntrypoint runs under shell ("bash" or "sh"; "" is
// sh); a v2 runtime without a build command runs the image's own entrypoint
// and cmd; anything else idles, so that build commands can be run in it.
func (v Version) Command(imageEntrypoint, imageCmd []string, runtimeEntrypoint, shell string, hasBuildCommand bool) []string {
	if runtimeEntrypoint != "" {
		if shell == "" {
			shell = "sh"
		}
		return []string{shell, "-c", runtimeEntrypoint}
	}
	if v.rules().imageCommand && !hasBuildCommand {
		args := append(append([]string(nil), imageEntrypoint...), imageCmd...)
		if len(args) > 0 {
			return args
		}
	}
	return []string{"tail", "-f", "/dev/null"}
}

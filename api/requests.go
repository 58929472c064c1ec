package api

import (
	"errors"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// The reference's parameter defaults (§3.2, §3.6, §3.7, §3.8). defaultCPUs and defaultMemoryMB are capped by the
// configured bounds (see New).
const (
	defaultCPUs     = 1.0
	defaultMemoryMB = 512
	// defaultBuildTimeout is a creation's `timeout`, and the build timeout of a runtime an execution
	// cold-starts (what the reference's self-call gets).
	defaultBuildTimeout     = 600 * time.Second
	defaultExecutionTimeout = 15 * time.Second
	defaultLogsTimeout      = 600 * time.Second
	defaultCommandTimeout   = 600 * time.Second
	defaultRestartPolicy    = "no"
)

// wholeSeconds is d as the integer number of seconds a `timeout` parameter holds.
func wholeSeconds(d time.Duration) int64 { return int64(d / time.Second) }

// Each endpoint's request struct holds its validated parameters; its declaration (the func beside it) lists the
// parameters in the reference's validation order, each bound to one field. checkParams, run by New (through
// newEndpoints), refuses a declaration and a struct that do not match one to one.

// createRuntimeRequest is POST /v1/runtimes (§3.2).
type createRuntimeRequest struct {
	RuntimeID         string
	Image             string
	Entrypoint        string
	Source            string
	Destination       string
	OutputDirectory   string
	Variables         map[string]any
	RuntimeEntrypoint string
	Command           string
	CacheKey          string
	Timeout           int64 // seconds
	Remove            bool
	CPUs              float64
	Memory            int64 // MB
	Version           string
	RestartPolicy     string
}

func (s *Server) createParams(req *createRuntimeRequest) []param {
	return []param{
		runtimeIDParam(&req.RuntimeID),
		{name: "image", check: textOf(128), dst: &req.Image},
		{name: "entrypoint", optional: true, def: "", check: optionalText(256), dst: &req.Entrypoint},
		{name: "source", optional: true, def: "", check: optionalText(0), dst: &req.Source},
		{name: "destination", optional: true, def: "", check: optionalText(0), dst: &req.Destination},
		{name: "outputDirectory", optional: true, def: "", check: optionalText(0), dst: &req.OutputDirectory},
		{name: "variables", optional: true, def: map[string]any{}, check: assoc{length: 65535}, dst: &req.Variables},
		{name: "runtimeEntrypoint", optional: true, def: "", check: optionalText(1024), dst: &req.RuntimeEntrypoint},
		{name: "command", optional: true, def: "", check: optionalText(1024), dst: &req.Command},
		{name: "cacheKey", optional: true, def: "", check: optionalText(128), dst: &req.CacheKey},
		{name: "timeout", optional: true, def: wholeSeconds(defaultBuildTimeout), check: integer{}, dst: &req.Timeout},
		{name: "remove", optional: true, def: false, check: boolean{}, dst: &req.Remove},
		{name: "cpus", optional: true, def: s.defaultCPUs, check: float{loose: true}, dst: &req.CPUs},
		{name: "memory", optional: true, def: s.defaultMemoryMB, check: integer{}, dst: &req.Memory},
		{name: "version", optional: true, def: s.defaultVersion, check: whitelist{list: s.versions}, dst: &req.Version},
		{name: "restartPolicy", optional: true, def: defaultRestartPolicy, check: restartPolicies(), dst: &req.RestartPolicy},
	}
}

// executionRequest is POST /v1/runtimes/:runtimeId/executions (§3.6).
type executionRequest struct {
	RuntimeID string
	Body      string
	Path      string
	Method    string
	// Headers and Variables are a JSON string or an object; objectParam decodes them after the other checks,
	// as the reference does.
	Headers           any
	Timeout           int64 // seconds
	Image             string
	Source            string
	Entrypoint        string
	Variables         any
	CPUs              float64
	Memory            int64 // MB
	Version           string
	RuntimeEntrypoint string
	Logging           bool
	RestartPolicy     string
}

func (s *Server) executionParams(req *executionRequest) []param {
	object := anyOf{textOf(65535), assoc{length: 65535}}
	return []param{
		runtimeIDParam(&req.RuntimeID),
		{name: "body", optional: true, def: "", check: textOf(20 << 20), dst: &req.Body},
		{name: "path", optional: true, def: "/", check: textOf(2048), dst: &req.Path},
		{name: "method", optional: true, def: "GET", check: whitelist{
			list: []string{"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"}, strict: true}, dst: &req.Method},
		{name: "headers", optional: true, def: map[string]any{}, check: object, dst: &req.Headers},
		{name: "timeout", optional: true, def: wholeSeconds(defaultExecutionTimeout), check: integer{loose: true}, dst: &req.Timeout},
		{name: "image", optional: true, def: "", check: textOf(128), dst: &req.Image},
		{name: "source", optional: true, def: "", check: textOf(0), dst: &req.Source},
		{name: "entrypoint", optional: true, def: "", check: optionalText(256), dst: &req.Entrypoint},
		{name: "variables", optional: true, def: map[string]any{}, check: object, dst: &req.Variables},
		{name: "cpus", optional: true, def: s.defaultCPUs, check: float{loose: true}, dst: &req.CPUs},
		{name: "memory", optional: true, def: s.defaultMemoryMB, check: integer{loose: true}, dst: &req.Memory},
		{name: "version", optional: true, def: s.defaultVersion, check: whitelist{list: s.versions}, dst: &req.Version},
		{name: "runtimeEntrypoint", optional: true, def: "", check: optionalText(1024), dst: &req.RuntimeEntrypoint},
		{name: "logging", optional: true, def: true, check: boolean{loose: true}, dst: &req.Logging},
		{name: "restartPolicy", optional: true, def: defaultRestartPolicy, check: restartPolicies(), dst: &req.RestartPolicy},
	}
}

// runtimeRequest is GET and DELETE /v1/runtimes/:runtimeId.
type runtimeRequest struct {
	RuntimeID string
}

func runtimeParams(req *runtimeRequest) []param {
	return []param{runtimeIDParam(&req.RuntimeID)}
}

// logsRequest is GET /v1/runtimes/:runtimeId/logs (§3.7).
type logsRequest struct {
	RuntimeID string
	// Timeout is text, as in the reference, which reads it with PHP's intval (see streamLogs).
	Timeout string
}

func logsParams(req *logsRequest) []param {
	return []param{
		runtimeIDParam(&req.RuntimeID),
		{name: "timeout", optional: true, def: strconv.FormatInt(wholeSeconds(defaultLogsTimeout), 10), check: textOf(16), dst: &req.Timeout},
	}
}

// commandRequest is POST /v1/runtimes/:runtimeId/commands (§3.8).
type commandRequest struct {
	RuntimeID string
	Command   string
	Timeout   int64 // seconds
}

func commandParams(req *commandRequest) []param {
	return []param{
		runtimeIDParam(&req.RuntimeID),
		{name: "command", check: textOf(1024), dst: &req.Command},
		{name: "timeout", optional: true, def: wholeSeconds(defaultCommandTimeout), check: integer{}, dst: &req.Timeout},
	}
}

// endpoints are the server's endpoint declarations, checked and resolved once (see newEndpoint).
type endpoints struct {
	create    *endpoint[createRuntimeRequest]
	execution *endpoint[executionRequest]
	runtime   *endpoint[runtimeRequest]
	logs      *endpoint[logsRequest]
	command   *endpoint[commandRequest]
	pullImage *endpoint[pullImageRequest]
}

// newEndpoints checks every endpoint's declaration against its request struct (see checkParams); the
// declarations depend on the server's versions and bounds.
func (s *Server) newEndpoints() (endpoints, error) {
	var e endpoints
	var errs [6]error
	e.create, errs[0] = newEndpoint(s.createParams)
	e.execution, errs[1] = newEndpoint(s.executionParams)
	e.runtime, errs[2] = newEndpoint(runtimeParams)
	e.logs, errs[3] = newEndpoint(logsParams)
	e.command, errs[4] = newEndpoint(commandParams)
	e.pullImage, errs[5] = newEndpoint(pullImageParams)
	return e, errors.Join(errs[:]...)
}

// runtimeIDParam is the `runtimeId` parameter of every runtime route, wherever it comes from (the path, or the
// body of POST /v1/runtimes).
func runtimeIDParam(dst *string) param {
	return param{name: "runtimeId", check: runtimeIDRule{}, dst: dst}
}

// restartPolicies are the accepted `restartPolicy` values.
func restartPolicies() whitelist {
	return whitelist{list: []string{"no", "always", "on-failure", "unless-stopped"}, strict: true}
}

// cacheKeyPattern is the reference's build-cache key rule.
var cacheKeyPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

const cacheKeyMessage = "Cache key must start with a letter or number and may only contain letters, numbers, dots, underscores, and hyphens."

// storagePath is a request's storage path and the parameter it came in.
type storagePath struct{ name, path string }

// checkStoragePaths refuses storage paths with a `..` segment before anything uses them (Part 0 safety), so
// that no storage root can be escaped whatever the storage backend makes of them. The first one at fault is
// named.
func checkStoragePaths(paths ...storagePath) error {
	for _, p := range paths {
		if hasDotDotSegment(p.path) {
			return executorError(typeExecutionBadRequest, "Invalid `"+p.name+"`: path segments \"..\" are not allowed.")
		}
	}
	return nil
}

func hasDotDotSegment(p string) bool {
	for _, seg := range strings.FieldsFunc(p, func(r rune) bool { return r == '/' || r == '\\' }) {
		if seg == ".." {
			return true
		}
	}
	return false
}

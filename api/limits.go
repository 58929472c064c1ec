package api

import (
	"fmt"
	"net/url"
	"strconv"
)

// resources resolves a request's `cpus` and `memory` (validated, defaults applied; memory in MB) into the
// concrete limits the runtime gets. Under a configured bound, 0 means the bound, so that no runtime's cgroup is
// left without a CPU and memory limit; a value above the bound is refused. Without a bound (the operator's opt-in), 0 means no
// limit, as in the reference.
func (s *Server) resources(cpus float64, memoryMB int64) (float64, int64, error) {
	switch {
	case cpus < 0:
		return 0, 0, errInvalidParam("cpus", "Value must not be negative")
	case s.maxCPUs == 0:
	case cpus == 0:
		cpus = s.maxCPUs
	case cpus > s.maxCPUs:
		return 0, 0, errInvalidParam("cpus", "Value must be at most "+formatCPUs(s.maxCPUs)+
			", the executor's maximum (OPR_EXECUTOR_MAX_CPUS); 0 means that maximum")
	}
	switch {
	case memoryMB < 0:
		return 0, 0, errInvalidParam("memory", "Value must not be negative")
	case s.maxMemoryMB == 0:
	case memoryMB == 0:
		memoryMB = s.maxMemoryMB
	case memoryMB > s.maxMemoryMB:
		return 0, 0, errInvalidParam("memory", "Value must be at most "+strconv.FormatInt(s.maxMemoryMB, 10)+
			" (MB), the executor's maximum (OPR_EXECUTOR_MAX_MEMORY); 0 means that maximum")
	}
	return cpus, memoryMB, nil
}

func formatCPUs(c float64) string { return strconv.FormatFloat(c, 'f', -1, 64) }

// checkForwarded refuses an execution whose `headers` or `path` cannot be put on the wire to the runtime, which
// would otherwise fail late, as an internal error, when the request to the runtime is built or sent: a CR or LF
// would split a header (Go refuses to send it), and so would any other control character.
func checkForwarded(headers map[string]string, path string) error {
	for name, value := range headers {
		if !validHeaderName(name) {
			return executorError(typeExecutionBadRequest,
				fmt.Sprintf("Invalid `headers`: %q is not a valid header name (letters, digits and !#$%%&'*+-.^_`|~ only).", name))
		}
		if !validHeaderValue(value) {
			return executorError(typeExecutionBadRequest,
				fmt.Sprintf("Invalid `headers`: the value of %q contains a control character (CR, LF, NUL, ...).", name))
		}
	}
	// The path is appended to the runtime's address and parsed as a URL, as the forwarding does.
	if _, err := url.Parse("http://runtime" + path); err != nil || !validPath(path) {
		return executorError(typeExecutionBadRequest,
			"Invalid `path`: it must be a URL path with an optional query, without control characters or malformed %-escapes.")
	}
	return nil
}

// validHeaderName is RFC 9110's token: what Go's client accepts as a field name.
func validHeaderName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c < 0x80 && isTokenPunct(c):
		default:
			return false
		}
	}
	return true
}

func isTokenPunct(c byte) bool {
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

// validHeaderValue refuses the control characters Go's client refuses in a field value: all but horizontal tab,
// and DEL. Bytes from 0x80 up (obs-text, UTF-8) are allowed.
func validHeaderValue(value string) bool {
	for i := 0; i < len(value); i++ {
		if c := value[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// validPath refuses every control character, which url.Parse refuses too; spelled out so that the rule does not
// rest on the parser alone.
func validPath(path string) bool {
	for i := 0; i < len(path); i++ {
		if c := path[i]; c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}

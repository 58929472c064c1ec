package api

import (
	"errors"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/julienschmidt/httprouter"

	"executor/sandbox"
	"executor/sandbox/protocol"
)

// execute is POST /v1/runtimes/:runtimeId/executions (and the /execution alias), §3.6 and §6.
func (s *Server) execute(w http.ResponseWriter, r *http.Request, ps httprouter.Params) error {
	req, err := s.endpoints.execution.bind(r, ps)
	if err != nil {
		return err
	}
	if err := checkStoragePaths(storagePath{"source", req.Source}); err != nil {
		return err
	}
	execReq, err := s.execRequest(req)
	if err != nil {
		return err
	}
	res, err := s.backend.Execute(r.Context(), execReq)
	if err != nil {
		return err
	}
	if res == nil {
		return errors.New("backend returned no execution result")
	}
	return writeExecution(w, r, res)
}

// execRequest applies the pre-processing of §6.1 to validated parameters.
func (s *Server) execRequest(in *executionRequest) (sandbox.ExecRequest, error) {
	headers, err := objectParam(in.Headers)
	if err != nil {
		return sandbox.ExecRequest{}, err
	}
	variables, err := objectParam(in.Variables)
	if err != nil {
		return sandbox.ExecRequest{}, err
	}
	vars, err := envVariables(variables)
	if err != nil {
		return sandbox.ExecRequest{}, err
	}
	vars["INERNAL_EXECUTOR_HOSTNAME"] = s.hostname // sic: the reference's spelling, runtimes read it

	body := in.Body
	if body == "0" { // the reference's PHP truthiness: "0" is no body
		body = ""
	}
	path := in.Path
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	forwarded := stringMap(headers)
	if err := checkForwarded(forwarded, path); err != nil {
		return sandbox.ExecRequest{}, err
	}
	// Checked whether or not this request cold-starts the runtime, so that a request is valid or not whatever
	// the state of the runtime.
	cpus, memoryMB, err := s.resources(in.CPUs, in.Memory)
	if err != nil {
		return sandbox.ExecRequest{}, err
	}
	req := sandbox.ExecRequest{
		RuntimeID: in.RuntimeID,
		Method:    in.Method,
		Path:      path,
		Headers:   forwarded,
		Body:      []byte(body),
		Timeout:   time.Duration(in.Timeout) * time.Second,
		Logging:   in.Logging,
		Variables: vars,
	}
	// Without both an image and a source the runtime cannot be cold-started; the backend answers 404 then.
	if in.Image != "" && in.Source != "" {
		req.Cold = &sandbox.Spec{
			RuntimeID:         req.RuntimeID,
			Image:             in.Image,
			Entrypoint:        in.Entrypoint,
			Source:            in.Source,
			Variables:         maps.Clone(vars),
			RuntimeEntrypoint: in.RuntimeEntrypoint,
			Timeout:           defaultBuildTimeout, // what the reference's self-call gets; there is no build command
			CPUs:              cpus,
			MemoryMB:          memoryMB,
			Version:           protocol.Version(in.Version),
			RestartPolicy:     in.RestartPolicy,
		}
	}
	return req, nil
}

// writeExecution answers with the result as JSON or multipart, per the request's Accept header, with repeated
// headers collapsed per x-executor-response-format.
func writeExecution(w http.ResponseWriter, r *http.Request, res *sandbox.ExecResult) error {
	headers := newHeaderSet(res.Headers, keepHeaderArrays(r.Header.Get("x-executor-response-format")))
	duration, start := finite(seconds(res.Duration)), finite(unixSeconds(res.StartTime))

	if wantsJSON(r.Header.Values("Accept")) {
		// JSON strings cannot carry arbitrary bytes; the reference fails json_encode and reports it.
		if !utf8.Valid(res.Body) || !utf8.ValidString(res.Logs) || !utf8.ValidString(res.Errors) || !headers.validUTF8() {
			return executorError(typeExecutionBadJSON, "")
		}
		data := appendExecJSON(make([]byte, 0, 256+len(res.Body)+len(res.Logs)+len(res.Errors)), execJSON{
			StatusCode: res.StatusCode,
			Headers:    headers,
			Body:       string(res.Body),
			Logs:       res.Logs,
			Errors:     res.Errors,
			Duration:   duration,
			StartTime:  start,
		})
		w.Header().Set("Content-Type", contentTypeExecJSON)
		writeBody(w, http.StatusOK, data)
		return nil
	}

	headersJSON := headers.appendPHP(nil)
	logs, errs := []byte(res.Logs), []byte(res.Errors)
	boundary := multipartBoundary(headersJSON, res.Body, logs, errs)
	data := encodeMultipart(boundary, []multipartPart{
		{name: "statusCode", value: []byte(strconv.Itoa(res.StatusCode))},
		{name: "headers", value: headersJSON, json: true},
		{name: "body", value: res.Body},
		{name: "logs", value: logs},
		{name: "errors", value: errs},
		{name: "duration", value: []byte(phpFloatString(duration))},
		{name: "startTime", value: []byte(phpFloatString(start))},
	})
	w.Header().Set("Content-Type", "multipart/form-data; boundary="+boundary)
	writeBody(w, http.StatusOK, data)
	return nil
}

// wantsJSON is the reference's Accept rule: the header split on exactly ", " (so "a,b" is one item), JSON when
// an item starts with application/json or application/*, multipart otherwise and by default. Repeated Accept
// lines are treated as one list.
func wantsJSON(accept []string) bool {
	for _, item := range strings.Split(strings.Join(accept, ", "), ", ") {
		if strings.HasPrefix(item, "application/json") || strings.HasPrefix(item, "application/*") {
			return true
		}
	}
	return false
}

// keepHeaderArrays reports whether the client's response format (x-executor-response-format, default 0.10.0)
// is at least 0.11.0, which keeps repeated headers as arrays. Versions are compared as numeric
// major.minor.patch (missing parts are 0); a pre-release of a version sorts below it, as in PHP's
// version_compare; an unreadable value counts as the default.
func keepHeaderArrays(format string) bool {
	format = strings.TrimSpace(format)
	if format == "" {
		return false
	}
	core, pre := format, false
	if i := strings.IndexAny(format, "-+"); i >= 0 {
		core, pre = format[:i], format[i] == '-'
	}
	parts := strings.Split(core, ".")
	if len(parts) > 3 {
		return false
	}
	var n [3]int
	for i, p := range parts {
		x, err := strconv.Atoi(p)
		if err != nil || x < 0 {
			return false
		}
		n[i] = x
	}
	want := [3]int{0, 11, 0}
	for i := range n {
		if n[i] != want[i] {
			return n[i] > want[i]
		}
	}
	return !pre
}

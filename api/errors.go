package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"strconv"

	"executor/sandbox"
	"executor/sandbox/protocol"
)

// The executor's error types (spec §2.5): the `type` of an error document.
const (
	typeGeneralUnknown      = "general_unknown"
	typeUnauthorized        = "general_unauthorized"
	typeRouteNotFound       = "general_route_not_found"
	typeBuildFailed         = "build_failed"
	typeRuntimeFailed       = "runtime_failed"
	typeRuntimeTimeout      = "runtime_timeout"
	typeRuntimeNotFound     = "runtime_not_found"
	typeRuntimeConflict     = "runtime_conflict"
	typeExecutionBadRequest = "execution_bad_request"
	typeExecutionBadJSON    = "execution_bad_json"
	typeExecutionTimeout    = "execution_timeout"
	typeLogsTimeout         = "logs_timeout"
	typeCommandTimeout      = "command_timeout"
	typeCommandFailed       = "command_failed"
)

// catalogueEntry is the default HTTP status and message of an executor error type (spec §2.5).
type catalogueEntry struct {
	code    int
	message string
}

// catalogue returns the defaults of an executor error type. It is a function rather than a package-level map so
// that the table cannot be mutated at run time.
func catalogue(typ string) (catalogueEntry, bool) {
	switch typ {
	case typeGeneralUnknown:
		return catalogueEntry{500, "Internal server error."}, true
	case typeRouteNotFound:
		return catalogueEntry{404, "The requested route was not found."}, true
	case typeUnauthorized:
		return catalogueEntry{401, "You are not authorized to access this resource."}, true
	case typeBuildFailed:
		return catalogueEntry{400, "Build failed."}, true
	case typeRuntimeFailed:
		return catalogueEntry{400, "Runtime failed."}, true
	case typeRuntimeTimeout:
		return catalogueEntry{400, "Timed out waiting for runtime."}, true
	case typeRuntimeNotFound:
		return catalogueEntry{404, "Runtime not found"}, true
	case typeRuntimeConflict:
		// The trailing space is the reference's and clients may compare the text.
		return catalogueEntry{409, "Runtime already exists "}, true
	case typeExecutionBadRequest:
		return catalogueEntry{400, "Execution request was invalid."}, true
	case typeExecutionBadJSON:
		return catalogueEntry{400, `Execution resulted in binary response, but JSON response does not allow binaries. Use "Accept: multipart/form-data" header to support binaries.`}, true
	case typeExecutionTimeout:
		return catalogueEntry{400, "Timed out waiting for execution."}, true
	case typeLogsTimeout:
		return catalogueEntry{504, "Timed out waiting for logs."}, true
	case typeCommandTimeout:
		return catalogueEntry{500, "Operation timed out."}, true
	case typeCommandFailed:
		return catalogueEntry{500, "Failed to execute command."}, true
	}
	return catalogueEntry{}, false
}

// apiError is an error of the executor's catalogue: its type, the message a client sees (empty means the
// catalogue's) and the status (zero means the catalogue's).
type apiError struct {
	typ     string
	message string
	code    int
	err     error
}

func (e *apiError) Error() string {
	if e.err != nil {
		return e.typ + ": " + e.message + ": " + e.err.Error()
	}
	return e.typ + ": " + e.message
}

func (e *apiError) Unwrap() error { return e.err }

// executorError builds a catalogue error raised by the HTTP layer itself (auth, cacheKey, bad JSON reply...).
// An empty message means the catalogue's default.
func executorError(typ, message string) *apiError {
	return &apiError{typ: typ, message: message}
}

// kindError maps a failure the sandbox describes by its kind to the reference's error type and status. The
// message is the sandbox's where it has one, else the reference's fixed text for that kind.
func kindError(e *sandbox.Error) *apiError {
	out := &apiError{message: e.Message, err: e}
	switch e.Kind {
	case sandbox.NotFound:
		out.typ = typeRuntimeNotFound
	case sandbox.Exists:
		out.typ, out.message = typeRuntimeConflict, ""
	case sandbox.Creating:
		out.typ, out.message = typeRuntimeConflict, "A runtime with the same ID is already being created. Attempt a execution soon."
	case sandbox.ShuttingDown:
		out.typ, out.code, out.message = typeRuntimeFailed, http.StatusServiceUnavailable, "Executor is shutting down."
	case sandbox.Capacity:
		// As for shutting down: the catalogue's type clients know, with
		// the status that says "not now, not your request's fault".
		out.typ, out.code = typeRuntimeFailed, http.StatusServiceUnavailable
		if out.message == "" {
			out.message = "Executor is at capacity."
		}
	case sandbox.Timeout:
		// The sandbox's message, when it has one, says why the runtime was
		// not ready; else the reference's text.
		out.typ = typeRuntimeTimeout
	case sandbox.RuntimeFailed:
		out.typ = typeRuntimeFailed
	case sandbox.HostFailed, sandbox.OutOfMemory:
		out.typ, out.code = typeRuntimeFailed, http.StatusInternalServerError
	case sandbox.BuildFailed:
		out.typ = typeBuildFailed
	case sandbox.CommandTimeout:
		out.typ, out.message = typeCommandTimeout, ""
	case sandbox.CommandFailed:
		out.typ, out.message = typeCommandFailed, ""
	default:
		out.typ, out.code = typeGeneralUnknown, http.StatusInternalServerError
	}
	return out
}

// clientError returns the catalogue error err stands for, nil for an internal failure: an error of the HTTP
// layer, a failure the sandbox describes by its kind, or a failed exchange with the runtime.
func clientError(err error) *apiError {
	var ae *apiError
	var se *sandbox.Error
	var timeout *protocol.TimeoutError
	var transport *protocol.TransportError
	var tooLarge *protocol.ResponseTooLargeError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &se):
		return kindError(se)
	case errors.As(err, &timeout):
		return &apiError{typ: typeExecutionTimeout, err: err,
			message: "Operation timed out after " + strconv.FormatInt(timeout.After.Milliseconds(), 10) + " milliseconds"}
	case errors.As(err, &transport):
		// The reference's message names the curl error number clients have learnt to read.
		return &apiError{typ: typeGeneralUnknown, code: http.StatusInternalServerError, err: err,
			message: fmt.Sprintf("Internal curl error has occurred within the executor! Error Number: %d", transport.Curl)}
	case errors.As(err, &tooLarge):
		return &apiError{typ: typeRuntimeFailed, code: http.StatusInternalServerError, err: err,
			message: fmt.Sprintf("Runtime response is larger than %d bytes.", tooLarge.Limit)}
	}
	return nil
}

// requestError is a framework-level failure of the request itself: a missing or invalid parameter, an unknown
// route, an unreadable body. The reference renders those as `general_unknown` with their own code, and Part 0 of
// the spec says they are shown as they are in production too (unlike the reference, which masks them).
type requestError struct {
	code    int
	message string
	pcs     []uintptr // where it was raised, for the development-mode trace
}

func (e *requestError) Error() string { return e.message }

func newRequestError(code int, message string) *requestError {
	return raiseRequestError(1, code, message)
}

// raiseRequestError records the stack above its caller's skip frames, so that helpers point at their caller.
func raiseRequestError(skip, code int, message string) *requestError {
	pcs := make([]uintptr, maxTraceFrames)
	n := runtime.Callers(2+skip, pcs)
	return &requestError{code: code, message: message, pcs: pcs[:n]}
}

func errNotOptional(name string) *requestError {
	return raiseRequestError(1, http.StatusBadRequest, `Param "`+name+`" is not optional.`)
}

func errInvalidParam(name, description string) *requestError {
	return raiseRequestError(1, http.StatusBadRequest, "Invalid `"+name+"` param: "+description)
}

// errorBody is the error document, keys in the order clients expect.
type errorBody struct {
	Type    string `json:"type"`
	Message string `json:"message"`
	Code    int    `json:"code"`
	Version string `json:"version"`
}

// devErrorBody adds the development-mode details. They only ever hold Go caller information (file, line,
// function), never request data or configuration, so they cannot leak the secret.
type devErrorBody struct {
	errorBody
	File  string       `json:"file"`
	Line  int          `json:"line"`
	Trace []traceFrame `json:"trace"`
}

type traceFrame struct {
	File     string `json:"file"`
	Line     int    `json:"line"`
	Function string `json:"function"`
}

const maxTraceFrames = 16

func frames(pcs []uintptr) []traceFrame {
	out := []traceFrame{}
	it := runtime.CallersFrames(pcs)
	for {
		f, more := it.Next()
		if f.Function != "" {
			out = append(out, traceFrame{File: f.File, Line: f.Line, Function: f.Function})
		}
		if !more {
			break
		}
	}
	return out
}

// classify maps an error to what the client sees. internal reports an unexpected failure, the only kind that is
// masked in production.
func (s *Server) classify(err error) (body errorBody, internal bool) {
	body.Version = s.version

	var re *requestError
	if ce := clientError(err); ce != nil {
		body.Type = ce.typ
		def, known := catalogue(body.Type)
		body.Message = ce.message
		if body.Message == "" {
			body.Message = def.message
		}
		body.Code = ce.code
		if body.Code == 0 && known {
			body.Code = def.code
		}
	} else if errors.As(err, &re) {
		body.Type, body.Message, body.Code = typeGeneralUnknown, re.message, re.code
	} else {
		internal = true
		body.Type, body.Code = typeGeneralUnknown, http.StatusInternalServerError
		body.Message = "Internal server error."
		if s.dev {
			body.Message = err.Error()
		}
	}
	// The code doubles as the HTTP status: anything that is not an error status would produce a nonsensical
	// response, so it is treated as an internal failure code.
	if body.Code < 400 || body.Code > 599 {
		body.Code = http.StatusInternalServerError
	}
	return body, internal
}

// writeError renders err as the executor's JSON error document. It must only be called before anything of the
// response has been written.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	body, internal := s.classify(err)
	s.logError(r, err, body, internal)

	var v any = body
	if s.dev {
		var pcs []uintptr
		var re *requestError
		if errors.As(err, &re) {
			pcs = re.pcs
		} else {
			pcs = make([]uintptr, maxTraceFrames)
			pcs = pcs[:runtime.Callers(2, pcs)]
		}
		d := devErrorBody{errorBody: body, Trace: frames(pcs)}
		if len(d.Trace) > 0 {
			d.File, d.Line = d.Trace[0].File, d.Trace[0].Line
		}
		v = d
	}

	data, mErr := marshalPHP(v)
	if mErr != nil {
		// Cannot happen with these types; keep the status meaningful anyway.
		s.log.ErrorContext(r.Context(), "encoding error response", "err", mErr)
		data = []byte(`{"type":"general_unknown","message":"Internal server error.","code":500,"version":""}`)
		body.Code = http.StatusInternalServerError
	}
	h := w.Header()
	h.Set("Content-Type", contentTypeJSON)
	h.Set("Cache-Control", "no-cache, no-store, must-revalidate")
	h.Set("Expires", "0")
	h.Set("Pragma", "no-cache")
	writeBody(w, body.Code, data)
}

// logError records a failed request on its access line (see accesslog.go), which says why it failed at a level
// above debug: an operator looking for rejected requests finds them at the default level.
func (s *Server) logError(r *http.Request, err error, body errorBody, internal bool) {
	ctx := r.Context()
	f := &failure{body: body, err: err, internal: internal,
		abandoned: internal && errors.Is(err, context.Canceled) && ctx.Err() != nil}
	if rec := accessOf(r); rec != nil {
		rec.failure = f
		return
	}
	// Not served through ServeHTTP: no access line will say it.
	s.log.Log(ctx, f.level(), "request failed", "method", r.Method, "path", clip(r.URL.Path), "code", body.Code,
		"type", body.Type, "message", body.Message, "err", err)
}

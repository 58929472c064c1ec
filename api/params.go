package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"

	"github.com/julienschmidt/httprouter"

	"executor/sandbox"
)

// maxRequestBody bounds request bodies: the reference's 22 MiB package limit, which leaves room for a 20 MiB
// execution `body` plus the other fields and the multipart framing.
const maxRequestBody = 22 << 20

// field declares one endpoint parameter, in the order the reference validates them.
type field struct {
	name     string
	optional bool
	def      any // value used when the parameter is absent (or JSON null); typed like the validator's output
	check    validator
}

// values holds the validated, typed parameters of a request.
type values map[string]any

func (v values) str(name string) string            { s, _ := v[name].(string); return s }
func (v values) int(name string) int64             { n, _ := v[name].(int64); return n }
func (v values) float(name string) float64         { f, _ := v[name].(float64); return f }
func (v values) bool(name string) bool             { b, _ := v[name].(bool); return b }
func (v values) object(name string) map[string]any { m, _ := v[name].(map[string]any); return m }

// bind collects the parameters of r (§2.2), lets path parameters win over body ones (Appwrite sends
// `runtimeId` in both), and validates them against fields. Unknown parameters are ignored.
func bind(r *http.Request, ps httprouter.Params, fields []field) (values, error) {
	raw := map[string]any{}
	if needsRequestParams(ps, fields) {
		var err error
		if raw, err = requestParams(r); err != nil {
			return nil, err
		}
	}
	// Whatever of the body the parameters did not use is read too: reaching its end lifts the body's read
	// deadline (see limitBodyTime) and lets net/http notice a client that leaves during a long execution.
	if err := drain(r.Body); err != nil {
		return nil, err
	}
	for _, p := range ps {
		raw[p.Key] = p.Value
	}

	out := make(values, len(fields))
	for _, f := range fields {
		rv, present := raw[f.name]
		// The framework skips validation of an optional null: treat it as absent.
		if present && rv == nil && f.optional {
			present = false
		}
		if !present {
			if !f.optional {
				return nil, errNotOptional(f.name)
			}
			out[f.name] = f.def
			continue
		}
		v, ok := f.check.convert(rv)
		if !ok {
			return nil, errInvalidParam(f.name, f.check.description())
		}
		out[f.name] = v
	}
	return out, nil
}

// needsRequestParams reports whether any field is not a path parameter, so that endpoints taking only path
// parameters never read (or fail on) a body.
func needsRequestParams(ps httprouter.Params, fields []field) bool {
	for _, f := range fields {
		if ps.ByName(f.name) == "" {
			return true
		}
	}
	return false
}

// requestParams returns the raw parameters: the query string for GET/HEAD, the body otherwise.
func requestParams(r *http.Request) (map[string]any, error) {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return lastValues(r.URL.Query()), nil
	}

	ct := r.Header.Get("Content-Type")
	mediaType := strings.ToLower(strings.TrimSpace(strings.SplitN(ct, ";", 2)[0]))
	switch mediaType {
	case "application/json":
		data, err := readBody(r.Body)
		if err != nil {
			return nil, err
		}
		var obj map[string]any
		if v, ok := decodeJSON(data); ok {
			obj, _ = v.(map[string]any)
		}
		// Invalid, empty or non-object JSON means no parameters, as in the reference.
		if obj == nil {
			obj = map[string]any{}
		}
		return obj, nil
	case "application/x-www-form-urlencoded":
		data, err := readBody(r.Body)
		if err != nil {
			return nil, err
		}
		// Malformed pairs are skipped, like PHP's parser does; the error is only about those.
		q, _ := url.ParseQuery(string(data))
		return lastValues(q), nil
	case "multipart/form-data":
		return multipartParams(r.Body, ct)
	}
	// Any other content type carries no parameters.
	return map[string]any{}, nil
}

// lastValues keeps the last value of repeated keys, as PHP does.
func lastValues(q url.Values) map[string]any {
	out := make(map[string]any, len(q))
	for k, vs := range q {
		if len(vs) > 0 {
			out[k] = vs[len(vs)-1]
		}
	}
	return out
}

// multipartParams reads every part as a string value, file parts included: Appwrite sends the execution `body`
// as a part, and it must come through byte for byte.
func multipartParams(body io.Reader, contentType string) (map[string]any, error) {
	_, mp, err := mime.ParseMediaType(contentType)
	if err != nil || mp["boundary"] == "" {
		return nil, newRequestError(http.StatusBadRequest, "Invalid multipart/form-data body: missing boundary.")
	}
	out := map[string]any{}
	mr := multipart.NewReader(body, mp["boundary"])
	for {
		// NextRawPart: no Content-Transfer-Encoding decoding, the bytes are taken as sent.
		part, err := mr.NextRawPart()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, bodyError(err)
		}
		name := part.FormName()
		data, err := io.ReadAll(part)
		if err != nil {
			return nil, bodyError(err)
		}
		if name != "" {
			out[name] = string(data)
		}
	}
}

func drain(body io.Reader) error {
	if body == nil {
		return nil
	}
	if _, err := io.Copy(io.Discard, body); err != nil {
		return bodyError(err)
	}
	return nil
}

func readBody(body io.Reader) ([]byte, error) {
	data, err := io.ReadAll(body)
	if err != nil {
		return nil, bodyError(err)
	}
	return data, nil
}

// bodyError turns a failure to read the body into a client error: 413 past the size limit, 408 when the client
// did not send it within the body timeout, 400 otherwise (truncated or malformed body). Partial parameters are
// never used.
func bodyError(err error) error {
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return newRequestError(http.StatusRequestEntityTooLarge, "Request body is too large.")
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return newRequestError(http.StatusRequestTimeout, "Request body was not received in time.")
	}
	return newRequestError(http.StatusBadRequest, "Invalid request body: "+err.Error())
}

// decodeJSON decodes exactly one JSON value, keeping numbers as json.Number so that integers and floats can be
// told apart as PHP does. ok is false for invalid JSON, including trailing data.
func decodeJSON(data []byte) (v any, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return nil, false
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, false
	}
	return v, true
}

// objectParam turns a `headers`/`variables` value (AnyOf(Text, Assoc)) into an object (§6.1): a string is
// JSON-decoded (undecodable -> empty object), and the result must be an object.
func objectParam(v any) (map[string]any, error) {
	switch x := v.(type) {
	case map[string]any:
		return x, nil
	case string:
		decoded, ok := decodeJSON([]byte(x))
		if !ok || decoded == nil {
			return map[string]any{}, nil
		}
		if m, ok := (assoc{length: 65535}).convert(decoded); ok {
			return m.(map[string]any), nil
		}
	case nil:
		return map[string]any{}, nil
	}
	return nil, executorError(sandbox.ErrExecutionBadRequest, "Value must be a valid object.")
}

// cacheKeyPattern is the reference's build-cache key rule.
var cacheKeyPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

const cacheKeyMessage = "Cache key must start with a letter or number and may only contain letters, numbers, dots, underscores, and hyphens."

// checkStoragePaths refuses storage paths with a `..` segment before anything uses them (Part 0 safety), so
// that no storage root can be escaped whatever the storage backend makes of them.
func checkStoragePaths(v values, names ...string) error {
	for _, name := range names {
		if hasDotDotSegment(v.str(name)) {
			return executorError(sandbox.ErrExecutionBadRequest, "Invalid `"+name+"`: path segments \"..\" are not allowed.")
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

// runtimeIDField is the `runtimeId` parameter of every runtime route, wherever it comes from (the path, or the
// body of POST /v1/runtimes).
func runtimeIDField() field { return field{name: "runtimeId", check: runtimeIDRule{}} }

// restartPolicies are the accepted `restartPolicy` values.
func restartPolicies() whitelist {
	return whitelist{list: []string{"no", "always", "on-failure", "unless-stopped"}, strict: true}
}

// createFields are the parameters of POST /v1/runtimes (§3.2).
func (s *Server) createFields() []field {
	return []field{
		runtimeIDField(),
		{name: "image", check: textOf(128)},
		{name: "entrypoint", optional: true, def: "", check: optionalText(256)},
		{name: "source", optional: true, def: "", check: optionalText(0)},
		{name: "destination", optional: true, def: "", check: optionalText(0)},
		{name: "outputDirectory", optional: true, def: "", check: optionalText(0)},
		{name: "variables", optional: true, def: map[string]any{}, check: assoc{length: 65535}},
		{name: "runtimeEntrypoint", optional: true, def: "", check: optionalText(1024)},
		{name: "command", optional: true, def: "", check: optionalText(1024)},
		{name: "cacheKey", optional: true, def: "", check: optionalText(128)},
		{name: "timeout", optional: true, def: int64(600), check: integer{}},
		{name: "remove", optional: true, def: false, check: boolean{}},
		{name: "cpus", optional: true, def: s.defaultCPUs, check: float{loose: true}},
		{name: "memory", optional: true, def: s.defaultMemoryMB, check: integer{}},
		{name: "version", optional: true, def: s.defaultVersion, check: whitelist{list: s.versions}},
		{name: "restartPolicy", optional: true, def: "no", check: restartPolicies()},
	}
}

// executionFields are the parameters of POST /v1/runtimes/:runtimeId/executions (§3.6).
func (s *Server) executionFields() []field {
	object := anyOf{textOf(65535), assoc{length: 65535}}
	return []field{
		runtimeIDField(),
		{name: "body", optional: true, def: "", check: textOf(20 << 20)},
		{name: "path", optional: true, def: "/", check: textOf(2048)},
		{name: "method", optional: true, def: "GET", check: whitelist{
			list: []string{"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"}, strict: true}},
		{name: "headers", optional: true, def: map[string]any{}, check: object},
		{name: "timeout", optional: true, def: int64(15), check: integer{loose: true}},
		{name: "image", optional: true, def: "", check: textOf(128)},
		{name: "source", optional: true, def: "", check: textOf(0)},
		{name: "entrypoint", optional: true, def: "", check: optionalText(256)},
		{name: "variables", optional: true, def: map[string]any{}, check: object},
		{name: "cpus", optional: true, def: s.defaultCPUs, check: float{loose: true}},
		{name: "memory", optional: true, def: s.defaultMemoryMB, check: integer{loose: true}},
		{name: "version", optional: true, def: s.defaultVersion, check: whitelist{list: s.versions}},
		{name: "runtimeEntrypoint", optional: true, def: "", check: optionalText(1024)},
		{name: "logging", optional: true, def: true, check: boolean{loose: true}},
		{name: "restartPolicy", optional: true, def: "no", check: restartPolicies()},
	}
}

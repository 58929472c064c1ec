package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"reflect"
	"strings"

	"github.com/julienschmidt/httprouter"

	"executor/sandbox/protocol"
)

// maxRequestBody bounds request bodies: the reference's 22 MiB package limit, which leaves room for a 20 MiB
// execution `body` plus the other fields and the multipart framing.
const maxRequestBody = 22 << 20

// param declares one endpoint parameter, in the order the reference validates them, and the field of the
// endpoint's request struct its value is stored in. Handlers read that struct, never a parameter by name, so a
// misspelled name cannot read as a zero value; checkParams keeps a declaration and its struct in step.
type param struct {
	name     string
	optional bool
	def      any // value used when the parameter is absent (or JSON null); typed like the field
	check    validator
	dst      any // pointer to the request struct's field
}

// endpoint is an endpoint's declaration, checked and resolved once when the server is made: each parameter with
// the index of the field of T it fills. Building a declaration per request made the execution route allocate a
// tenth of its bytes before reading a parameter.
type endpoint[T any] struct {
	params []param // made over a template struct: dst is not used past newEndpoint
	fields []int   // params[i] fills field fields[i] of T
}

// newEndpoint checks declare's parameters against T (see checkParams) and resolves the field each fills.
func newEndpoint[T any](declare func(*T) []param) (*endpoint[T], error) {
	tmpl := new(T)
	params := declare(tmpl)
	if err := checkParams(tmpl, params); err != nil {
		return nil, err
	}
	sv := reflect.ValueOf(tmpl).Elem()
	fields := make([]int, len(params))
	for i, p := range params {
		fields[i] = fieldIndex(sv, p.dst)
	}
	return &endpoint[T]{params: params, fields: fields}, nil
}

// bind binds the parameters of r into a new request struct.
func (e *endpoint[T]) bind(r *http.Request, ps httprouter.Params) (*T, error) {
	req := new(T)
	sv := reflect.ValueOf(req).Elem()
	err := bind(r, ps, e.params, func(i int, v any) {
		// checkParams has made sure, when the server was made, that every default and every validator's value
		// fits its field.
		sv.Field(e.fields[i]).Set(reflect.ValueOf(v))
	})
	if err != nil {
		return nil, err
	}
	return req, nil
}

// bind collects the parameters of r (§2.2), lets path parameters win over body ones (Appwrite sends
// `runtimeId` in both), validates them against params and gives each value to set with its parameter's index.
// Unknown parameters are ignored.
func bind(r *http.Request, ps httprouter.Params, params []param, set func(i int, v any)) error {
	raw := map[string]any{}
	if needsRequestParams(ps, params) {
		var err error
		if raw, err = requestParams(r); err != nil {
			return err
		}
	}
	// Whatever of the body the parameters did not use is read too: reaching its end lifts the body's read
	// deadline (see limitBodyTime) and lets net/http notice a client that leaves during a long execution.
	if err := drain(r.Body); err != nil {
		return err
	}
	for _, p := range ps {
		raw[p.Key] = p.Value
	}

	for i, p := range params {
		rv, present := raw[p.name]
		// The framework skips validation of an optional null: treat it as absent.
		if present && rv == nil && p.optional {
			present = false
		}
		if !present {
			if !p.optional {
				return errNotOptional(p.name)
			}
			set(i, fresh(p.def))
			continue
		}
		v, ok := p.check.convert(rv)
		if !ok {
			return errInvalidParam(p.name, p.check.description())
		}
		set(i, v)
	}
	return nil
}

// fresh is a default as a request may hold it: an object default is copied, as every request's struct must
// have its own map, not one the endpoint's other requests share.
func fresh(def any) any {
	if m, ok := def.(map[string]any); ok {
		return maps.Clone(m)
	}
	return def
}

// checkParams reports how params and the struct req points to have drifted apart: a parameter declared twice,
// one not bound to a field of req, a field bound to no parameter or to two, a validator or default whose value
// does not fit its field, or a required parameter with a default (it would never be used).
func checkParams(req any, params []param) error {
	rv := reflect.ValueOf(req)
	if rv.Kind() != reflect.Pointer || rv.IsNil() || rv.Elem().Kind() != reflect.Struct {
		return fmt.Errorf("request %T is not a pointer to a struct", req)
	}
	sv := rv.Elem()
	st := sv.Type()
	bound := make([]string, st.NumField()) // the parameter of each field
	declared := map[string]bool{}
	for _, p := range params {
		if declared[p.name] {
			return fmt.Errorf("%s: parameter %q is declared twice", st, p.name)
		}
		declared[p.name] = true
		i := fieldIndex(sv, p.dst)
		if i < 0 {
			return fmt.Errorf("%s: parameter %q is not bound to one of its fields", st, p.name)
		}
		f := st.Field(i)
		if bound[i] != "" {
			return fmt.Errorf("%s.%s is bound to both %q and %q", st, f.Name, bound[i], p.name)
		}
		bound[i] = p.name
		if vt := p.check.valueType(); !vt.AssignableTo(f.Type) {
			return fmt.Errorf("%s.%s is a %s, parameter %q gives a %s", st, f.Name, f.Type, p.name, vt)
		}
		switch {
		case !p.optional && p.def != nil:
			return fmt.Errorf("%s: required parameter %q has a default", st, p.name)
		case p.optional && (p.def == nil || !reflect.TypeOf(p.def).AssignableTo(f.Type)):
			return fmt.Errorf("%s.%s is a %s, the default of parameter %q is %#v", st, f.Name, f.Type, p.name, p.def)
		}
	}
	for i, name := range bound {
		if name == "" {
			return fmt.Errorf("%s.%s is bound to no parameter", st, st.Field(i).Name)
		}
	}
	return nil
}

// fieldIndex is the index of the field of sv that dst points to, or -1. The type is compared too: a struct's
// first field has the struct's address.
func fieldIndex(sv reflect.Value, dst any) int {
	d := reflect.ValueOf(dst)
	if d.Kind() != reflect.Pointer || d.IsNil() {
		return -1
	}
	for i := range sv.NumField() {
		f := sv.Field(i)
		if f.Addr().UnsafePointer() == d.UnsafePointer() && f.Type() == d.Type().Elem() {
			return i
		}
	}
	return -1
}

// needsRequestParams reports whether any parameter is not a path parameter, so that endpoints taking only path
// parameters never read (or fail on) a body.
func needsRequestParams(ps httprouter.Params, params []param) bool {
	for _, p := range params {
		if ps.ByName(p.name) == "" {
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
	mediaType, _, _ := strings.Cut(ct, ";")
	mediaType = strings.ToLower(strings.TrimSpace(mediaType))
	switch mediaType {
	case "application/json":
		data, err := readBody(r.Body, r.ContentLength)
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
		data, err := readBody(r.Body, r.ContentLength)
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

// readBody reads a whole body that declared size bytes (-1: unknown).
func readBody(body io.Reader, size int64) ([]byte, error) {
	data, err := protocol.ReadAll(body, size)
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
	return nil, executorError(typeExecutionBadRequest, "Value must be a valid object.")
}

package api

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"executor/sandbox/protocol"
)

const (
	contentTypeJSON = "application/json; charset=UTF-8"
	// Executions answer with the bare type, as the reference does (§2.4).
	contentTypeExecJSON = "application/json"
)

// marshalPHP encodes v the way the reference's PHP json_encode(..., JSON_UNESCAPED_UNICODE) does: UTF-8 left
// as is, `<>&` not escaped, and forward slashes escaped as `\/`. Struct field order gives the key order.
func marshalPHP(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	out := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	// A '/' can only occur inside a JSON string, so escaping every one keeps the document valid.
	return bytes.ReplaceAll(out, []byte("/"), []byte(`\/`)), nil
}

// writeBody sends a complete response. Content-Length is set so that clients never see a chunked reply for a
// document that is already in memory.
func writeBody(w http.ResponseWriter, status int, data []byte) {
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.WriteHeader(status)
	_, _ = w.Write(data)
}

// writeJSON sends v as a PHP-style JSON document.
func writeJSON(w http.ResponseWriter, status int, v any) error {
	data, err := marshalPHP(v)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", contentTypeJSON)
	writeBody(w, status, data)
	return nil
}

// unixSeconds is the reference's microtime(true): float seconds with microsecond precision.
func unixSeconds(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixMicro()) / 1e6
}

// seconds is a duration as float seconds, microsecond precision like microtime() differences.
func seconds(d time.Duration) float64 {
	return float64(d.Round(time.Microsecond).Microseconds()) / 1e6
}

// finite keeps NaN and ±Inf (which JSON cannot carry) out of documents.
func finite(f float64) float64 {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return 0
	}
	return f
}

// logTimestamp is the build-output timestamp format: `YYYY-MM-DDTHH:MM:SS.mmm+00:00`, always UTC.
func logTimestamp(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000") + "+00:00"
}

// phpFloatString is PHP's (string) conversion of a float (precision=14, %.14G): 1753300000.123456 ->
// "1753300000.1235", 12.0 -> "12", 0.00001 -> "1.0E-5".
func phpFloatString(f float64) string {
	switch {
	case math.IsNaN(f):
		return "NAN"
	case math.IsInf(f, 1):
		return "INF"
	case math.IsInf(f, -1):
		return "-INF"
	}
	s := strconv.FormatFloat(f, 'g', 14, 64)
	e := strings.IndexByte(s, 'e')
	if e < 0 {
		return s
	}
	mant, exp := s[:e], s[e+1:]
	if !strings.Contains(mant, ".") {
		mant += ".0"
	}
	sign, digits := exp[:1], strings.TrimLeft(exp[1:], "0")
	if digits == "" {
		digits = "0"
	}
	return mant + "E" + sign + digits
}

// phpString is PHP's strval() of a decoded JSON value, used for variables and headers: strings as they are,
// integers in decimal, floats as phpFloatString (so 2.5 -> "2.5" and 1.0 -> "1"), true -> "1", false and null ->
// "". Nested arrays/objects (where PHP would print "Array") are JSON-encoded, which is at least useful.
func phpString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case json.Number:
		if n, err := strconv.ParseInt(string(x), 10, 64); err == nil {
			return strconv.FormatInt(n, 10)
		}
		f, _ := strconv.ParseFloat(string(x), 64)
		return phpFloatString(f)
	case bool:
		if x {
			return "1"
		}
		return ""
	case nil:
		return ""
	default:
		b, err := marshalPHP(x)
		if err != nil {
			return ""
		}
		return string(b)
	}
}

// envVariables is a `variables` object as the runtime's environment. A NUL
// byte in a name or value is refused: no environment entry can carry one
// through execve, and the runtime would fail to start far from the cause.
func envVariables(m map[string]any) (map[string]string, error) {
	vars := stringMap(m)
	for k, v := range vars {
		if strings.IndexByte(k, 0) >= 0 || strings.IndexByte(v, 0) >= 0 {
			return nil, errInvalidParam("variables", "a variable's name or value holds a NUL byte.")
		}
	}
	return vars, nil
}

// stringMap stringifies the values of a decoded JSON object.
func stringMap(m map[string]any) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = phpString(v)
	}
	return out
}

// headerSet is the `headers` object of an execution result: keys in order of first appearance, each value a
// string, or an array of strings for a repeated header when arrays are kept (x-executor-response-format >=
// 0.11.0; older clients get the last value). Empty encodes as `[]`, like a PHP empty array.
type headerSet struct {
	fields []protocol.Header
	arrays bool
}

func newHeaderSet(hs []protocol.Header, arrays bool) headerSet {
	// Merge repeated names defensively: a JSON object must not have duplicate keys.
	var fields []protocol.Header
	index := make(map[string]int, len(hs))
	for _, h := range hs {
		if i, ok := index[h.Name]; ok {
			fields[i].Values = append(fields[i].Values, h.Values...)
			continue
		}
		index[h.Name] = len(fields)
		// Capped: a merge onto them copies rather than writes to hs's values.
		fields = append(fields, protocol.Header{Name: h.Name, Values: slices.Clip(h.Values)})
	}
	return headerSet{fields: fields, arrays: arrays}
}

// validUTF8 reports whether every header name and value is valid UTF-8 (JSON replies cannot carry others).
func (h headerSet) validUTF8() bool {
	for _, f := range h.fields {
		if !utf8.ValidString(f.Name) {
			return false
		}
		for _, v := range f.Values {
			if !utf8.ValidString(v) {
				return false
			}
		}
	}
	return true
}

// execJSON is the execution result in JSON form, keys in the order of §3.6.
type execJSON struct {
	StatusCode int       `json:"statusCode"`
	Headers    headerSet `json:"headers"`
	Body       string    `json:"body"`
	Logs       string    `json:"logs"`
	Errors     string    `json:"errors"`
	Duration   float64   `json:"duration"`
	StartTime  float64   `json:"startTime"`
}

// multipartBoundary returns a boundary in the reference's shape (29 dashes + 13 hex digits, as PHP uniqid()
// gives) that does not occur in any of the parts: random rather than clock-based so that a function cannot
// predict it and forge parts.
func multipartBoundary(parts ...[]byte) string {
	var raw [7]byte
	for {
		_, _ = rand.Read(raw[:]) // crypto/rand.Read never fails
		b := strings.Repeat("-", 29) + hex.EncodeToString(raw[:])[:13]
		clash := false
		for _, p := range parts {
			if bytes.Contains(p, []byte(b)) {
				clash = true
				break
			}
		}
		if !clash {
			return b
		}
	}
}

// multipartPart is one field of the multipart execution reply.
type multipartPart struct {
	name  string
	value []byte
	json  bool // carries `Content-Type: application/json`
}

// encodeMultipart lays the parts out exactly like the reference's BodyMultipart (§3.6): `--B`, then per part
// CRLF, Content-Disposition [CRLF Content-Type], CRLF CRLF, value, CRLF, `--B`; finally `--` CRLF.
func encodeMultipart(boundary string, parts []multipartPart) []byte {
	var buf bytes.Buffer
	buf.WriteString("--" + boundary)
	for _, p := range parts {
		buf.WriteString("\r\nContent-Disposition: form-data; name=\"" + p.name + "\"")
		if p.json {
			buf.WriteString("\r\nContent-Type: application/json")
		}
		buf.WriteString("\r\n\r\n")
		buf.Write(p.value)
		buf.WriteString("\r\n--" + boundary)
	}
	buf.WriteString("--\r\n")
	return buf.Bytes()
}

// appendExecJSON appends marshalPHP(e) without reflection: the JSON reply of every execution is written this
// way (on the warm path, encoding/json's reflection was a tenth of the API's own work). FuzzExecJSON holds it
// to marshalPHP.
func appendExecJSON(dst []byte, e execJSON) []byte {
	dst = append(dst, `{"statusCode":`...)
	dst = strconv.AppendInt(dst, int64(e.StatusCode), 10)
	dst = append(dst, `,"headers":`...)
	dst = e.Headers.appendPHP(dst)
	dst = append(dst, `,"body":`...)
	dst = appendPHPString(dst, e.Body)
	dst = append(dst, `,"logs":`...)
	dst = appendPHPString(dst, e.Logs)
	dst = append(dst, `,"errors":`...)
	dst = appendPHPString(dst, e.Errors)
	dst = append(dst, `,"duration":`...)
	dst = appendJSONFloat(dst, e.Duration)
	dst = append(dst, `,"startTime":`...)
	dst = appendJSONFloat(dst, e.StartTime)
	return append(dst, '}')
}

// appendPHP appends h as the reference's json_encode writes it (marshalPHP's escapes).
func (h headerSet) appendPHP(dst []byte) []byte {
	if len(h.fields) == 0 {
		return append(dst, "[]"...)
	}
	dst = append(dst, '{')
	for i, f := range h.fields {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendPHPString(dst, f.Name)
		dst = append(dst, ':')
		switch {
		case h.arrays && len(f.Values) > 1:
			dst = append(dst, '[')
			for j, v := range f.Values {
				if j > 0 {
					dst = append(dst, ',')
				}
				dst = appendPHPString(dst, v)
			}
			dst = append(dst, ']')
		case len(f.Values) == 0:
			dst = append(dst, `""`...)
		default:
			dst = appendPHPString(dst, f.Values[len(f.Values)-1])
		}
	}
	return append(dst, '}')
}

// phpPlain says which bytes appendPHPString copies as they are: the ASCII
// ones but controls, `"`, `\` and `/`. One load a byte rather than four
// comparisons: the strings of a list of a thousand runtimes went through
// here at 7 ns a byte. Never written after its initialisation.
var phpPlain = func() (t [256]bool) {
	for b := 0x20; b < utf8.RuneSelf; b++ {
		t[b] = b != '"' && b != '\\' && b != '/'
	}
	return t
}()

// appendPHPString appends s as marshalPHP encodes a string: encoding/json's escapes without the HTML ones
// (invalid UTF-8 becomes U+FFFD, U+2028 and U+2029 are escaped), and `/` as `\/`.
func appendPHPString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		b := s[i]
		if phpPlain[b] {
			i++
			continue
		}
		if b < utf8.RuneSelf {
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\', '/':
				dst = append(dst, '\\', b)
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hex[b>>4], hex[b&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// appendJSONFloat appends a finite f as encoding/json writes a float64: plain decimal between 1e-6 and 1e21,
// exponent form (without a leading zero in the exponent) outside.
func appendJSONFloat(dst []byte, f float64) []byte {
	format := byte('f')
	if abs := math.Abs(f); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	dst = strconv.AppendFloat(dst, f, format, -1, 64)
	if format == 'e' {
		// e-07 to e-7
		if n := len(dst); n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst
}

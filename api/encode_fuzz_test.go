package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"executor/sandbox"
	"executor/sandbox/protocol"
)

// phpJSONString is PHP's json_encode() of a valid UTF-8 string with JSON_UNESCAPED_UNICODE, written from php-src's
// php_json_escape_string (ext/json/json_encoder.c): the oracle marshalPHP is held to. `"`, `\` and `/` are
// escaped, the five short escapes are used, the other controls are \u00xx in lower-case hex, DEL and `<>&'` stay
// as they are, and U+2028/U+2029 are escaped (JSON_UNESCAPED_LINE_TERMINATORS is not set).
func phpJSONString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '/':
			b.WriteString(`\/`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '\u2028', '\u2029':
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			if r < 0x20 {
				fmt.Fprintf(&b, `\u%04x`, r)
			} else {
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}

// FuzzMarshalPHP holds the encoder to PHP's json_encode for every valid UTF-8 string, alone and as a field, and
// checks that what it writes decodes back to the same string. Invalid UTF-8 (which PHP refuses; the JSON reply
// refuses it before encoding) must still give valid JSON.
func FuzzMarshalPHP(f *testing.F) {
	for _, s := range []string{
		"", "hello", "/storage/builds/app/code.tar.gz", `<b>&'"\`, "line\nbreak\ttab\r\b\f\x00\x1f\x7f",
		"👋 é 中文", "\u2028\u2029", "\xff\xfe", "a\xc3", "</script>", "\\/",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := marshalPHP(s)
		if err != nil {
			t.Fatalf("marshalPHP(%q): %v", s, err)
		}
		if !json.Valid(got) {
			t.Fatalf("marshalPHP(%q) = %s, not JSON", s, got)
		}
		if !utf8.ValidString(s) {
			return
		}
		if want := phpJSONString(s); string(got) != want {
			t.Fatalf("marshalPHP(%q)\n got  %s\n want %s (PHP)", s, got, want)
		}
		var back string
		if err := json.Unmarshal(got, &back); err != nil || back != s {
			t.Fatalf("round trip of %q: %q (%v)", s, back, err)
		}
		doc, err := marshalPHP(struct {
			K string `json:"k/v"`
			V string `json:"v"`
		}{s, s})
		if want := `{"k\/v":` + phpJSONString(s) + `,"v":` + phpJSONString(s) + `}`; err != nil || string(doc) != want {
			t.Fatalf("field of %q:\n got  %s (%v)\n want %s", s, doc, err, want)
		}
	})
}

// phpFloatPattern is the shape of PHP's %.14G: no trailing zeros in a plain fraction, a mantissa that always has a
// fraction ("1.0E+20") and an exponent without leading zeros.
var phpFloatPattern = regexp.MustCompile(`^-?(0|[1-9][0-9]*)(\.[0-9]*[1-9])?$|^-?[1-9]\.([0-9]*[1-9]|0)E[+-][1-9][0-9]*$`)

// FuzzPHPFloatString checks that phpFloatString has PHP's shape and keeps 14 significant digits.
func FuzzPHPFloatString(f *testing.F) {
	for _, v := range []float64{0, 1, -1, 12, 1.5, 0.0015, 0.00001, 1.5e-7, 1e14, 1e13, 1e20, 1753300000.123456,
		123456789012345678, math.MaxFloat64, math.SmallestNonzeroFloat64, -0.0001, 99999999999999.5} {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, v float64) {
		s := phpFloatString(v)
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return
		}
		if !phpFloatPattern.MatchString(s) {
			t.Fatalf("phpFloatString(%v) = %q: not PHP's shape", v, s)
		}
		back, err := strconv.ParseFloat(s, 64)
		if err != nil {
			t.Fatalf("phpFloatString(%v) = %q: %v", v, s, err)
		}
		// Rounded to 14 significant digits: off by at most half a unit of the 14th (of the larger of the two,
		// when rounding carried into a new digit), plus the floats' own rounding (a few ulps).
		big := math.Max(math.Abs(v), math.Abs(back))
		ulp := math.Nextafter(big, math.Inf(1)) - big
		if e := math.Floor(math.Log10(big)); v != 0 && math.Abs(back-v) > 0.5*math.Pow(10, e-13)+4*ulp {
			t.Fatalf("phpFloatString(%v) = %q reads back as %v", v, s, back)
		}
		if v == 0 && back != 0 {
			t.Fatalf("phpFloatString(%v) = %q", v, s)
		}
	})
}

// headersFrom turns fuzz input into response headers: one per line, "name:value".
func headersFrom(spec string) []protocol.Header {
	var hs []protocol.Header
	for line := range strings.SplitSeq(spec, "\n") {
		name, value, _ := strings.Cut(line, ":")
		hs = append(hs, protocol.Header{Name: name, Values: []string{value}})
	}
	return hs
}

// checkHeadersJSON decodes a `headers` document and compares it with what headerSet promises: names in order of
// first appearance, each the last value, or all of them as an array when arrays are kept and there are several;
// an empty set is `[]`.
func checkHeadersJSON(data []byte, hs []protocol.Header, arrays bool) error {
	type field struct {
		name   string
		values []string
	}
	var want []field
	index := map[string]int{}
	for _, h := range hs {
		if i, ok := index[h.Name]; ok {
			want[i].values = append(want[i].values, h.Values...)
			continue
		}
		index[h.Name] = len(want)
		want = append(want, field{h.Name, append([]string(nil), h.Values...)})
	}
	if len(want) == 0 {
		if string(data) != "[]" {
			return fmt.Errorf("empty headers encoded as %s", data)
		}
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return fmt.Errorf("headers %s: not an object (%v)", data, err)
	}
	n := 0
	for i := 0; dec.More(); i++ {
		n++
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		if i >= len(want) || tok != want[i].name {
			return fmt.Errorf("headers %s: key %d is %q", data, i, tok)
		}
		var v any
		if err := dec.Decode(&v); err != nil {
			return err
		}
		w := want[i].values
		var expect any = w[len(w)-1]
		if arrays && len(w) > 1 {
			arr := make([]any, len(w))
			for j, s := range w {
				arr[j] = s
			}
			expect = arr
		}
		if fmt.Sprint(v) != fmt.Sprint(expect) {
			return fmt.Errorf("headers %s: %q is %#v, want %#v", data, want[i].name, v, expect)
		}
	}
	if n != len(want) {
		return fmt.Errorf("headers %s: %d keys, want %d", data, n, len(want))
	}
	return nil
}

// replySeeds are execution results as runtimes give them: text, JSON, binary with CRLF and boundary-like dashes,
// repeated headers, logs with newlines.
func addReplySeeds(f *testing.F) {
	f.Add(200, "content-type:application/json\nx-a:1\nx-a:2", []byte(`{"ok":true}`), "log line\n", "", int64(250*time.Millisecond), int64(1753300000123456), true)
	f.Add(500, "", []byte("\x00\xff\r\n--\r\n-----------------------------0123456789abc\r\n"), "", "Error: boom\n  at x.js:1", int64(1), int64(0), false)
	f.Add(204, "set-cookie:a=1\nset-cookie:b=2\nx/y:<a>&", []byte{}, "é", "\r\n", int64(15*time.Second), int64(1), true)
	f.Add(-1, ":\n:", []byte("\r\n\r\n"), "--", "--\r\n", int64(math.MaxInt64), int64(-1), false)
}

// FuzzMultipartReply encodes an execution result as the multipart reply (the default) and parses it back twice,
// with mime/multipart and the way Appwrite's client splits it: every field comes back as it was, byte for byte.
func FuzzMultipartReply(f *testing.F) {
	addReplySeeds(f)
	f.Fuzz(func(t *testing.T, status int, headerSpec string, body []byte, logs, errs string, durationNs, startMicro int64, arrays bool) {
		hs := headersFrom(headerSpec)
		res := &sandbox.ExecResult{StatusCode: status, Headers: hs, Body: body, Logs: logs, Errors: errs,
			StartTime: time.UnixMicro(startMicro), Duration: time.Duration(durationNs)}
		r := httptest.NewRequest(http.MethodPost, "/v1/runtimes/r/executions", nil)
		if arrays {
			r.Header.Set("x-executor-response-format", "0.11.0")
		}
		w := httptest.NewRecorder()
		if err := writeExecution(w, r, res); err != nil {
			t.Fatalf("writeExecution: %v", err)
		}
		ct := w.Header().Get("Content-Type")
		_, params, err := mime.ParseMediaType(ct)
		if err != nil || params["boundary"] == "" {
			t.Fatalf("content type %q: %v", ct, err)
		}
		reply := w.Body.Bytes()
		if cl := w.Header().Get("Content-Length"); cl != strconv.Itoa(len(reply)) {
			t.Fatalf("Content-Length %s for %d bytes", cl, len(reply))
		}

		type part struct {
			name  string
			value []byte
		}
		var parts []part
		mr := multipart.NewReader(bytes.NewReader(reply), params["boundary"])
		for {
			p, err := mr.NextRawPart()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("mime/multipart: %v\nreply %q", err, reply)
			}
			v, err := io.ReadAll(p)
			if err != nil {
				t.Fatalf("mime/multipart part %s: %v", p.FormName(), err)
			}
			parts = append(parts, part{p.FormName(), v})
		}
		appwrite, err := splitAppwrite(params["boundary"], reply)
		if err != nil {
			t.Fatalf("Appwrite split: %v\nreply %q", err, reply)
		}

		duration, start := finite(seconds(res.Duration)), finite(unixSeconds(res.StartTime))
		want := []part{
			{"statusCode", []byte(strconv.Itoa(status))},
			{"headers", nil}, // checked below
			{"body", body},
			{"logs", []byte(logs)},
			{"errors", []byte(errs)},
			{"duration", []byte(phpFloatString(duration))},
			{"startTime", []byte(phpFloatString(start))},
		}
		if len(parts) != len(want) || len(appwrite) != len(want) {
			t.Fatalf("%d parts (Appwrite: %d), want %d\nreply %q", len(parts), len(appwrite), len(want), reply)
		}
		for i, p := range want {
			if parts[i].name != p.name {
				t.Fatalf("part %d is %q, want %q", i, parts[i].name, p.name)
			}
			if !bytes.Equal(appwrite[p.name], parts[i].value) {
				t.Fatalf("part %q: Appwrite reads %q, mime/multipart %q", p.name, appwrite[p.name], parts[i].value)
			}
			if p.name != "headers" && !bytes.Equal(parts[i].value, p.value) {
				t.Fatalf("part %q is %q, want %q", p.name, parts[i].value, p.value)
			}
		}
		if headersValid(hs) {
			if err := checkHeadersJSON(parts[1].value, hs, arrays); err != nil {
				t.Fatal(err)
			}
		} else if !json.Valid(parts[1].value) {
			t.Fatalf("headers part %q is not JSON", parts[1].value)
		}
		for _, i := range []int{5, 6} {
			if _, err := strconv.ParseFloat(string(parts[i].value), 64); err != nil {
				t.Fatalf("%s %q: %v", parts[i].name, parts[i].value, err)
			}
		}

		checkJSONReply(t, res, hs, arrays)
	})
}

func headersValid(hs []protocol.Header) bool {
	for _, h := range hs {
		if !utf8.ValidString(h.Name) || !utf8.ValidString(h.Values[0]) {
			return false
		}
	}
	return true
}

// checkJSONReply asks for the same result as JSON: it decodes back to the result when everything is valid UTF-8,
// and is the reference's binary-response error otherwise.
func checkJSONReply(t *testing.T, res *sandbox.ExecResult, hs []protocol.Header, arrays bool) {
	t.Helper()
	r := httptest.NewRequest(http.MethodPost, "/v1/runtimes/r/executions", nil)
	r.Header.Set("Accept", "application/json")
	if arrays {
		r.Header.Set("x-executor-response-format", "0.11.0")
	}
	w := httptest.NewRecorder()
	err := writeExecution(w, r, res)
	valid := utf8.Valid(res.Body) && utf8.ValidString(res.Logs) && utf8.ValidString(res.Errors) && headersValid(hs)
	if !valid {
		var ae *apiError
		if !errors.As(err, &ae) || ae.typ != typeExecutionBadJSON {
			t.Fatalf("JSON reply of invalid UTF-8: %v", err)
		}
		return
	}
	if err != nil {
		t.Fatalf("JSON reply: %v", err)
	}
	var doc struct {
		StatusCode int             `json:"statusCode"`
		Headers    json.RawMessage `json:"headers"`
		Body       string          `json:"body"`
		Logs       string          `json:"logs"`
		Errors     string          `json:"errors"`
		Duration   float64         `json:"duration"`
		StartTime  float64         `json:"startTime"`
	}
	dec := json.NewDecoder(w.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		t.Fatalf("JSON reply does not decode: %v", err)
	}
	if doc.StatusCode != res.StatusCode || doc.Body != string(res.Body) || doc.Logs != res.Logs || doc.Errors != res.Errors ||
		doc.Duration != finite(seconds(res.Duration)) || doc.StartTime != finite(unixSeconds(res.StartTime)) {
		t.Fatalf("JSON reply %+v does not match %+v", doc, res)
	}
	if err := checkHeadersJSON(doc.Headers, hs, arrays); err != nil {
		t.Fatalf("JSON reply: %v", err)
	}
}

// splitAppwrite is Appwrite's executor client's reading of a multipart reply (parseAppwriteMultipart without a
// testing.T): split on `--<boundary>`, strip one leading and trailing CRLF, headers end at the first blank line,
// the name from Content-Disposition.
func splitAppwrite(boundary string, reply []byte) (map[string][]byte, error) {
	nameRE := regexp.MustCompile(`name="([^"]+)"`)
	out := map[string][]byte{}
	for _, chunk := range bytes.Split(reply, []byte("--"+boundary)) {
		chunk = bytes.TrimPrefix(chunk, []byte("\r\n"))
		chunk = bytes.TrimSuffix(chunk, []byte("\r\n"))
		if len(chunk) == 0 || string(chunk) == "--" {
			continue
		}
		head, value, ok := bytes.Cut(chunk, []byte("\r\n\r\n"))
		if !ok {
			return nil, fmt.Errorf("part without blank line: %q", chunk)
		}
		m := nameRE.FindSubmatch(head)
		if m == nil {
			return nil, fmt.Errorf("part without name: %q", head)
		}
		if _, dup := out[string(m[1])]; dup {
			return nil, fmt.Errorf("part %q twice", m[1])
		}
		out[string(m[1])] = value
	}
	return out, nil
}

// FuzzExecJSON holds the execution reply's hand-written encoder to marshalPHP of the same document, for any
// strings (invalid UTF-8 included: both must write the same), headers and floats.
func FuzzExecJSON(f *testing.F) {
	f.Add(200, "x-a:1\nx-a:2\ncontent-type:text/plain", true, "body/ü\u2028", "log\n\x00\x1f\x7f", "\xff\xfeerr", 0.001234, 1753300000.123456)
	f.Add(0, "", false, "", "", "", 0.0, 0.0)
	f.Add(-1, ":\n:", true, `<>&'"\`, "\b\f\r\t", "👋", 1e-7, 1e21)
	f.Fuzz(func(t *testing.T, status int, headers string, arrays bool, body, logs, errs string, duration, start float64) {
		e := execJSON{
			StatusCode: status,
			Headers:    newHeaderSet(headersFrom(headers), arrays),
			Body:       body,
			Logs:       logs,
			Errors:     errs,
			Duration:   finite(duration),
			StartTime:  finite(start),
		}
		want, err := marshalPHP(e)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendExecJSON(nil, e); string(got) != string(want) {
			t.Fatalf("appendExecJSON\n got  %s\n want %s (marshalPHP)", got, want)
		}
	})
}

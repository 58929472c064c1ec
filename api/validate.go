package api

import (
	"encoding/json"
	"math"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"
)

// validator mirrors a utopia-php/validators 0.3.1 validator (spec §2.2): the accepted raw values, the typed value
// handed to the handler, and the exact description quoted in `Invalid `<name>` param: <description>`. valueType
// is the type of every value convert returns, so that checkParams can match it with the field it is stored in.
//
// Raw values are what the request decoding yields: string (query, urlencoded, multipart, JSON strings),
// json.Number, bool, nil, map[string]any or []any (JSON).
type validator interface {
	convert(raw any) (value any, ok bool)
	description() string
	valueType() reflect.Type
}

// text is Text(max, min): a string of min..max characters (runes, like mb_strlen); max 0 means unlimited.
type text struct{ max, min int }

// textOf is Text(max) with the library's default min of 1: an explicit empty string is refused.
func textOf(max int) text { return text{max: max, min: 1} }

// optionalText is Text(max, 0): empty strings allowed.
func optionalText(max int) text { return text{max: max, min: 0} }

func (t text) convert(raw any) (any, bool) {
	s, ok := raw.(string)
	if !ok {
		return nil, false
	}
	n := utf8.RuneCountInString(s)
	if n < t.min || (t.max > 0 && n > t.max) {
		return nil, false
	}
	return s, true
}

func (t text) description() string {
	d := "Value must be a valid string"
	if t.min > 0 {
		d += " and at least " + strconv.Itoa(t.min) + " chars"
	}
	if t.max > 0 {
		d += " and no longer than " + strconv.Itoa(t.max) + " chars"
	}
	return d
}

func (text) valueType() reflect.Type { return reflect.TypeFor[string]() }

// integer is Integer(loose): a signed 32-bit integer. Strict accepts only JSON integers; loose also accepts
// numeric strings whose value is an integer ("600", " 600", "+600"; not "600.0" or "6e2", which PHP turns
// into floats). The value is an int64.
type integer struct{ loose bool }

// intString matches PHP integer-numeric strings once surrounding whitespace is removed.
var intString = regexp.MustCompile(`^[+-]?[0-9]+$`)

// phpSpace is the whitespace PHP allows around numeric strings.
const phpSpace = " \t\n\r\v\f"

func (v integer) convert(raw any) (any, bool) {
	var s string
	switch x := raw.(type) {
	case json.Number:
		s = string(x)
		// A JSON literal with a fraction or exponent decodes to a PHP float, which is not an int.
		if strings.ContainsAny(s, ".eE") {
			return nil, false
		}
	case string:
		if !v.loose {
			return nil, false
		}
		s = strings.Trim(x, phpSpace)
		if !intString.MatchString(s) {
			return nil, false
		}
	default:
		return nil, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < math.MinInt32 || n > math.MaxInt32 {
		return nil, false
	}
	return n, true
}

func (integer) description() string {
	return "Value must be a valid signed 32-bit integer between -2,147,483,648 and 2,147,483,647"
}

func (integer) valueType() reflect.Type { return reflect.TypeFor[int64]() }

// float is FloatValidator(loose): a JSON number or a numeric string. The value is a float64.
type float struct{ loose bool }

// floatString matches PHP numeric strings once surrounding whitespace is removed ("2.5", ".5", "5.", "1e3").
var floatString = regexp.MustCompile(`^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$`)

func (v float) convert(raw any) (any, bool) {
	var s string
	switch x := raw.(type) {
	case json.Number:
		s = string(x)
	case string:
		if !v.loose {
			return nil, false
		}
		s = strings.Trim(x, phpSpace)
		if !floatString.MatchString(s) {
			return nil, false
		}
	default:
		return nil, false
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return nil, false
	}
	return f, true
}

func (float) description() string { return "Value must be a valid float" }

func (float) valueType() reflect.Type { return reflect.TypeFor[float64]() }

// boolean is Boolean(loose). Strict accepts JSON booleans only; loose also "true", "false", "1", "0", 1 and 0.
// Unlike PHP (where the string "false" is truthy) "false", "0" and 0 map to false.
type boolean struct{ loose bool }

func (v boolean) convert(raw any) (any, bool) {
	switch x := raw.(type) {
	case bool:
		return x, true
	case string:
		if v.loose {
			switch x {
			case "true", "1":
				return true, true
			case "false", "0":
				return false, true
			}
		}
	case json.Number:
		if v.loose {
			switch x {
			case "1":
				return true, true
			case "0":
				return false, true
			}
		}
	}
	return nil, false
}

func (boolean) description() string { return "Value must be a valid boolean" }

func (boolean) valueType() reflect.Type { return reflect.TypeFor[bool]() }

// assoc is Assoc(length): a JSON object whose PHP json_encode() is at most length bytes. An empty JSON array
// passes too (PHP cannot tell it from an empty object); other arrays fail. The value is a map[string]any.
type assoc struct{ length int }

func (v assoc) convert(raw any) (any, bool) {
	switch x := raw.(type) {
	case map[string]any:
		if phpJSONLen(x) > v.length {
			return nil, false
		}
		return x, true
	case []any:
		if len(x) == 0 {
			return map[string]any{}, true
		}
	}
	return nil, false
}

func (assoc) description() string { return "Value must be a valid object." }

func (assoc) valueType() reflect.Type { return reflect.TypeFor[map[string]any]() }

// phpJSONLen estimates strlen(json_encode($v)) with PHP's default flags: non-ASCII escaped as \uXXXX (a
// surrogate pair above the BMP) and '/' as "\/".
func phpJSONLen(v any) int {
	b, err := json.Marshal(v)
	if err != nil {
		return math.MaxInt
	}
	n := 0
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		b = b[size:]
		switch {
		case r == '/':
			n += 2
		case r < utf8.RuneSelf:
			n++
		case r > 0xFFFF:
			n += 12
		default:
			n += 6
		}
	}
	return n
}

// whitelist is WhiteList(list, strict). Strict compares exactly; otherwise case-insensitively, and the value
// handed on is the canonical list entry (e.g. `V5` -> `v5`).
type whitelist struct {
	list   []string
	strict bool
}

func (v whitelist) convert(raw any) (any, bool) {
	var s string
	switch x := raw.(type) {
	case string:
		s = x
	case json.Number, bool:
		if v.strict {
			return nil, false
		}
		s = phpString(x) // PHP's (string) cast, as the library does
	default:
		return nil, false
	}
	for _, item := range v.list {
		if s == item || (!v.strict && strings.EqualFold(s, item)) {
			return item, true
		}
	}
	return nil, false
}

func (v whitelist) description() string {
	return "Value must be one of (" + strings.Join(v.list, ", ") + ")"
}

func (whitelist) valueType() reflect.Type { return reflect.TypeFor[string]() }

// anyOf is AnyOf(validators): the first validator that accepts wins. On failure the library describes the last
// rule it tried, i.e. the last one.
type anyOf []validator

func (v anyOf) convert(raw any) (any, bool) {
	for _, rule := range v {
		if out, ok := rule.convert(raw); ok {
			return out, true
		}
	}
	return nil, false
}

func (v anyOf) description() string {
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1].description()
}

// valueType is the rules' common type, or any when they differ.
func (v anyOf) valueType() reflect.Type {
	if len(v) == 0 {
		return reflect.TypeFor[any]()
	}
	t := v[0].valueType()
	for _, rule := range v[1:] {
		if rule.valueType() != t {
			return reflect.TypeFor[any]()
		}
	}
	return t
}

// runtimeIDRule is the `runtimeId` rule: the reference's Text(64) narrowed to Appwrite's id alphabet (its Key/UID
// validators: letters, digits, period, hyphen, underscore, no special character first). The reference takes any
// text and leaves it to Docker's container-name rule; we have no Docker to refuse `a/b`, `..`, NUL or newline, and
// an id the router cannot match again would make a runtime nobody can reach or delete.
type runtimeIDRule struct{}

// maxRuntimeID is the reference's Text(64) limit.
const maxRuntimeID = 64

func (runtimeIDRule) convert(raw any) (any, bool) {
	s, ok := raw.(string)
	if !ok || !validRuntimeID(s) {
		return nil, false
	}
	return s, true
}

func (runtimeIDRule) description() string {
	return "Parameter must contain at most " + strconv.Itoa(maxRuntimeID) +
		" chars. Valid chars are a-z, A-Z, 0-9, period, hyphen, and underscore. Can't start with a special char"
}

func (runtimeIDRule) valueType() reflect.Type { return reflect.TypeFor[string]() }

func validRuntimeID(s string) bool {
	if s == "" || len(s) > maxRuntimeID {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case (c == '.' || c == '-' || c == '_') && i > 0:
		default:
			return false
		}
	}
	return true
}

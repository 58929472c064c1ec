package api

import (
	"bytes"
	"encoding/json"
)

// MarshalJSON is how the execution reply's headers were encoded before appendPHP, through encoding/json: kept
// as the oracle FuzzExecJSON holds appendExecJSON to (marshalPHP of an execJSON reaches it).
func (h headerSet) MarshalJSON() ([]byte, error) {
	if len(h.fields) == 0 {
		return []byte("[]"), nil
	}
	var buf bytes.Buffer
	buf.WriteByte('{')
	for i, f := range h.fields {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.Write(jsonString(f.Name))
		buf.WriteByte(':')
		switch {
		case h.arrays && len(f.Values) > 1:
			buf.WriteByte('[')
			for j, v := range f.Values {
				if j > 0 {
					buf.WriteByte(',')
				}
				buf.Write(jsonString(v))
			}
			buf.WriteByte(']')
		case len(f.Values) == 0:
			buf.WriteString(`""`)
		default:
			buf.Write(jsonString(f.Values[len(f.Values)-1]))
		}
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

// jsonString encodes s as a JSON string without HTML escaping (slashes are escaped later by marshalPHP).
func jsonString(s string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // encoding a string cannot fail
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

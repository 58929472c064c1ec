package protocol

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
)

// executeEnvelope sends a v2 execution: a JSON envelope POSTed to /.
func (c *Client) executeEnvelope(ctx context.Context, t Target, req Request) (*Response, error) {
	vars := req.Variables
	if vars == nil {
		vars = map[string]string{}
	}
	payload, err := json.Marshal(struct {
		Variables map[string]string `json:"variables"`
		Payload   string            `json:"payload"`
		Headers   map[string]string `json:"headers"`
	}{vars, string(req.Body), map[string]string{}})
	if err != nil {
		return nil, err
	}
	build := func(ctx context.Context) (*http.Request, error) {
		hr, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+t.Addr+"/", bytes.NewReader(payload))
		if err != nil {
			return nil, err
		}
		hr.Header["User-Agent"] = []string{""}
		hr.Header.Set("Content-Type", "application/json")
		hr.Header.Set("x-internal-challenge", t.Secret)
		hr.Host = "null" // what the reference sends
		injectTrace(ctx, hr)
		return hr, nil
	}
	resp, attempts, err := c.send(ctx, req, build, req.Timeout)
	if err != nil {
		var te *TransportError
		if errors.As(err, &te) && errors.Is(err, context.DeadlineExceeded) {
			return nil, &TimeoutError{After: req.Timeout, Err: err}
		}
		return nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBody))
	if err != nil {
		return nil, transportError(err, attempts)
	}
	// A body that is not the envelope (a framework's "Invalid JSON", an
	// envelope cut at MaxResponseBody) answers with its status alone.
	var env struct {
		Response json.RawMessage `json:"response"`
		Stdout   any             `json:"stdout"`
		Stderr   any             `json:"stderr"`
	}
	_ = json.Unmarshal(raw, &env)
	return &Response{
		StatusCode: resp.StatusCode,
		Headers:    []Header{},
		Body:       envelopeBody(env.Response),
		Logs:       capBytes(stringify(env.Stdout), MaxV2Logs),
		Errors:     capBytes(stringify(env.Stderr), MaxV2Logs),
	}, nil
}

// envelopeBody turns the envelope's `response` into the body: a string as
// it is, anything else JSON-encoded, null or nothing as an empty body.
func envelopeBody(raw json.RawMessage) []byte {
	if len(raw) == 0 || string(raw) == "null" {
		return []byte{}
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return []byte(s)
	}
	// Compacting keeps the runtime's key order, which decoding into a Go map
	// would lose.
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return raw
	}
	return b.Bytes()
}

// stringify is the envelope's stdout or stderr as text: a string as it is,
// anything else JSON-encoded.
func stringify(v any) string {
	switch t := v.(type) {
	case nil:
		return ""
	case string:
		return t
	default:
		b, _ := json.Marshal(t)
		return string(b)
	}
}

// capBytes cuts s at n bytes, even inside a character, as the reference
// does.
func capBytes(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

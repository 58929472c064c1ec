package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// v2Request is the body the executor POSTs to a v2 runtime.
type v2Request struct {
	Variables map[string]any `json:"variables"`
	Payload   string         `json:"payload"`
	Headers   map[string]any `json:"headers"`
}

// v2Response is the v2 reply envelope; the executor turns Response into the
// body and Stdout/Stderr into logs/errors.
type v2Response struct {
	Response any    `json:"response,omitempty"`
	Stdout   string `json:"stdout,omitempty"`
	Stderr   string `json:"stderr"`
}

// v2Function is what the echo "function" returns inside Response.
type v2Function struct {
	Payload   string            `json:"payload"`
	Variables map[string]any    `json:"variables"`
	Env       map[string]string `json:"env"`
}

// serveV2 implements the legacy protocol: POST / with a JSON envelope,
// authenticated by x-internal-challenge.
func (s *server) serveV2(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("allow", http.MethodPost)
		writeText(w, http.StatusMethodNotAllowed, "Method Not Allowed")
		return
	}

	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		writeText(w, http.StatusBadRequest, "Invalid body")
		return
	}
	var in v2Request
	if err := json.Unmarshal(raw, &in); err != nil {
		// micro's json() answers this for a non-JSON body.
		writeText(w, http.StatusBadRequest, "Invalid JSON")
		return
	}
	if r.Header.Get("x-internal-challenge") != s.env("INTERNAL_RUNTIME_KEY") {
		writeV2(w, http.StatusInternalServerError, v2Response{Stderr: "Unauthorized"})
		return
	}

	switch {
	case in.Payload == "exit":
		s.exitNow(1)
	case strings.HasPrefix(in.Payload, "sleep:"):
		ms, err := strconv.Atoi(strings.TrimPrefix(in.Payload, "sleep:"))
		if err != nil {
			writeV2(w, http.StatusInternalServerError, v2Response{Stderr: fmt.Sprintf("bad sleep payload: %v", err)})
			return
		}
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
		case <-r.Context().Done():
			return
		}
	}

	vars := in.Variables
	if vars == nil {
		vars = map[string]any{}
	}
	env := map[string]string{}
	for _, kv := range s.cfg.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "INTERNAL_") || strings.HasPrefix(k, "INERNAL_") {
			env[k] = v
		}
	}
	writeV2(w, http.StatusOK, v2Response{
		Response: v2Function{Payload: in.Payload, Variables: vars, Env: env},
		Stdout:   "v2 log",
	})
}

func writeV2(w http.ResponseWriter, status int, res v2Response) {
	b, err := json.Marshal(res)
	if err != nil {
		writeText(w, http.StatusInternalServerError, err.Error())
		return
	}
	w.Header().Set("content-type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

package api

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/julienschmidt/httprouter"

	"executor/sandbox"
	"executor/sandbox/protocol"
)

// createRuntime is POST /v1/runtimes (§3.2): create a runtime and run its build.
func (s *Server) createRuntime(w http.ResponseWriter, r *http.Request, ps httprouter.Params) error {
	req, err := s.endpoints.create.bind(r, ps)
	if err != nil {
		return err
	}
	if err := checkStoragePaths(
		storagePath{"source", req.Source}, storagePath{"destination", req.Destination}, storagePath{"cacheKey", req.CacheKey},
	); err != nil {
		return err
	}
	if req.CacheKey != "" && !cacheKeyPattern.MatchString(req.CacheKey) {
		return executorError(typeExecutionBadRequest, cacheKeyMessage)
	}
	vars, err := envVariables(req.Variables)
	if err != nil {
		return err
	}
	cpus, memoryMB, err := s.resources(req.CPUs, req.Memory)
	if err != nil {
		return err
	}
	outputDir := req.OutputDirectory
	if outputDir == "0" { // PHP truthiness: "0" is "not given"
		outputDir = ""
	}
	spec := sandbox.Spec{
		RuntimeID:         req.RuntimeID,
		Image:             req.Image,
		Entrypoint:        req.Entrypoint,
		Source:            req.Source,
		Destination:       req.Destination,
		OutputDirectory:   outputDir,
		Variables:         vars,
		RuntimeEntrypoint: req.RuntimeEntrypoint,
		Command:           req.Command,
		CacheKey:          req.CacheKey,
		Timeout:           time.Duration(req.Timeout) * time.Second,
		Remove:            req.Remove,
		CPUs:              cpus,
		MemoryMB:          memoryMB,
		Version:           protocol.Version(req.Version),
		RestartPolicy:     req.RestartPolicy,
	}
	res, err := s.backend.Create(r.Context(), spec)
	if err != nil {
		return err
	}
	if res == nil {
		return errors.New("backend returned no build result")
	}
	version := res.Version
	if version == "" {
		version = spec.Version
	}
	return writeJSON(w, http.StatusCreated, newBuildJSON(res, version))
}

// listRuntimes is GET /v1/runtimes. The list is encoded by hand, byte for
// byte what writeJSON makes of it: through encoding/json it was most of the
// time of a list of a thousand runtimes.
func (s *Server) listRuntimes(w http.ResponseWriter, r *http.Request, _ httprouter.Params) error {
	infos := s.backend.List()
	buf := make([]byte, 0, 2+len(infos)*runtimeJSONSize) // `[]`, never `null`
	buf = append(buf, '[')
	for i, info := range infos {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = s.runtimeJSON(info).appendPHP(buf)
	}
	buf = append(buf, ']')
	w.Header().Set("Content-Type", contentTypeJSON)
	writeBody(w, http.StatusOK, buf)
	return nil
}

// getRuntime is GET /v1/runtimes/:runtimeId.
func (s *Server) getRuntime(w http.ResponseWriter, r *http.Request, ps httprouter.Params) error {
	req, err := s.endpoints.runtime.bind(r, ps)
	if err != nil {
		return err
	}
	info, err := s.backend.Get(req.RuntimeID)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, s.runtimeJSON(info))
}

// deleteRuntime is DELETE /v1/runtimes/:runtimeId: 200 with an empty body.
func (s *Server) deleteRuntime(w http.ResponseWriter, r *http.Request, ps httprouter.Params) error {
	req, err := s.endpoints.runtime.bind(r, ps)
	if err != nil {
		return err
	}
	if err := s.backend.Delete(r.Context(), req.RuntimeID); err != nil {
		return err
	}
	writeBody(w, http.StatusOK, nil)
	return nil
}

// runtimeJSON is the runtime object of §4, keys in the reference's order.
type runtimeJSON struct {
	Version     string  `json:"version"`
	Created     float64 `json:"created"`
	Updated     float64 `json:"updated"`
	Name        string  `json:"name"`
	Hostname    string  `json:"hostname"`
	Status      string  `json:"status"`
	Key         string  `json:"key"`
	Listening   int     `json:"listening"`
	Image       string  `json:"image"`
	Initialised int     `json:"initialised"`
	// Usage is absent while the runtime is pending.
	Usage *runtimeUsageJSON `json:"usage,omitempty"`
}

// runtimeUsageJSON is a runtime's usage from its cgroup counters, as GET /v1/health gives it: CPU in percent of
// one core over the latest sample interval (up to a second), memory and pids at that sample, each absent where
// the cgroup has no such counter or no sample has read it yet (then CPU is 0).
type runtimeUsageJSON struct {
	CPU    float64     `json:"cpu"`
	Memory *memoryJSON `json:"memory,omitempty"`
	PIDs   *uint64     `json:"pids,omitempty"`
}

// runtimeJSONSize is about the size of one encoded runtime, to size the
// list's buffer.
const runtimeJSONSize = 300

// appendPHP appends r as marshalPHP encodes it.
func (r runtimeJSON) appendPHP(b []byte) []byte {
	b = append(b, `{"version":`...)
	b = appendPHPString(b, r.Version)
	b = append(b, `,"created":`...)
	b = appendJSONFloat(b, r.Created)
	b = append(b, `,"updated":`...)
	b = appendJSONFloat(b, r.Updated)
	b = append(b, `,"name":`...)
	b = appendPHPString(b, r.Name)
	b = append(b, `,"hostname":`...)
	b = appendPHPString(b, r.Hostname)
	b = append(b, `,"status":`...)
	b = appendPHPString(b, r.Status)
	b = append(b, `,"key":`...)
	b = appendPHPString(b, r.Key)
	b = append(b, `,"listening":`...)
	b = strconv.AppendInt(b, int64(r.Listening), 10)
	b = append(b, `,"image":`...)
	b = appendPHPString(b, r.Image)
	b = append(b, `,"initialised":`...)
	b = strconv.AppendInt(b, int64(r.Initialised), 10)
	if u := r.Usage; u != nil {
		b = append(b, `,"usage":{"cpu":`...)
		b = appendJSONFloat(b, u.CPU)
		if u.Memory != nil {
			b = append(b, `,"memory":{"usage":`...)
			b = strconv.AppendUint(b, u.Memory.Usage, 10)
			b = append(b, `,"limit":`...)
			b = strconv.AppendUint(b, u.Memory.Limit, 10)
			b = append(b, '}')
		}
		if u.PIDs != nil {
			b = append(b, `,"pids":`...)
			b = strconv.AppendUint(b, *u.PIDs, 10)
		}
		b = append(b, '}')
	}
	return append(b, '}')
}

func (s *Server) runtimeJSON(info sandbox.Info) runtimeJSON {
	out := runtimeJSON{
		Version:     string(info.Version),
		Created:     unixSeconds(info.Created),
		Updated:     unixSeconds(info.Updated),
		Name:        info.Name,
		Hostname:    info.Hostname,
		Status:      info.Status,
		Listening:   boolInt(info.Listening),
		Image:       info.Image,
		Initialised: boolInt(info.Initialised),
	}
	if u := info.Usage; u != nil {
		mem, pids := runtimeFigures(*u)
		out.Usage = &runtimeUsageJSON{CPU: finite(u.CPU), Memory: mem, PIDs: pids}
	}
	// The runtime secret authenticates calls into the runtime; the reference exposes it, we only do in
	// development (Part 0).
	if s.dev {
		out.Key = info.Key
	}
	return out
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// buildJSON is the creation result of §3.2. size and path are present only when an artifact was uploaded.
type buildJSON struct {
	Size      *int64  `json:"size,omitempty"`
	Path      *string `json:"path,omitempty"`
	Output    any     `json:"output"`
	StartTime float64 `json:"startTime"`
	Duration  float64 `json:"duration"`
}

type logEntryJSON struct {
	Timestamp string `json:"timestamp"`
	Content   string `json:"content"`
}

func newBuildJSON(res *sandbox.BuildResult, version protocol.Version) buildJSON {
	out := buildJSON{
		StartTime: unixSeconds(res.StartTime),
		Duration:  seconds(res.Duration),
	}
	if res.HasArtifact {
		size, path := res.Size, res.Path
		out.Size, out.Path = &size, &path
	}
	if !version.TimestampedOutput() {
		// v2-v4 clients expect the pre-v5 `output` string (Part 0).
		var b strings.Builder
		for _, e := range res.Output {
			b.WriteString(e.Content)
		}
		text := b.String()
		if text == "" {
			text = "Runtime created successfully!"
		}
		out.Output = text
	} else {
		entries := make([]logEntryJSON, 0, len(res.Output))
		for _, e := range res.Output {
			entries = append(entries, logEntryJSON{Timestamp: logTimestamp(e.Timestamp), Content: e.Content})
		}
		out.Output = entries
	}
	return out
}

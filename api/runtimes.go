package api

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/julienschmidt/httprouter"

	"executor/sandbox"
	"executor/sandbox/protocol"
)

// createRuntime is POST /v1/runtimes (§3.2): create a runtime and run its build.
func (s *Server) createRuntime(w http.ResponseWriter, r *http.Request, ps httprouter.Params) error {
	req, err := bindRequest(r, ps, s.createParams)
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
		Variables:         stringMap(req.Variables),
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

// listRuntimes is GET /v1/runtimes.
func (s *Server) listRuntimes(w http.ResponseWriter, r *http.Request, _ httprouter.Params) error {
	infos := s.backend.List()
	out := make([]runtimeJSON, 0, len(infos)) // `[]`, never `null`
	for _, info := range infos {
		out = append(out, s.runtimeJSON(info))
	}
	return writeJSON(w, http.StatusOK, out)
}

// getRuntime is GET /v1/runtimes/:runtimeId.
func (s *Server) getRuntime(w http.ResponseWriter, r *http.Request, ps httprouter.Params) error {
	req, err := bindRequest(r, ps, runtimeParams)
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
	req, err := bindRequest(r, ps, runtimeParams)
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

package api

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/julienschmidt/httprouter"

	"executor/sandbox"
)

// Checker is implemented by backends that can tell whether the host still
// holds what new runtimes need (bridges, cgroup parent, data dir). Check
// returns nil when it does, else an error saying what broke: a
// *sandbox.HealthError names the broken parts apart from the details. It is
// optional; GET /v1/health calls it at most once per healthCacheTTL.
type Checker interface {
	Check(ctx context.Context) error
}

// Warner is implemented by backends that run with a weakened guarantee an
// operator must know of (a rootless daemon without cgroup limits). The
// warnings are fixed sentences, shown to anyone in GET /v1/health: never
// silently weaker.
type Warner interface {
	Warnings() []string
}

// UsageReporter is implemented by backends whose usage figures go beyond
// Stats' CPU: memory and pids from each runtime's cgroup, the host's memory.
// Health prefers it to Stats; the CPU figures are the same.
type UsageReporter interface {
	UsageFigures() sandbox.Usage
}

// healthCacheTTL is how long a check's verdict answers GET /v1/health. The
// route needs no key: without the cache anyone could make the daemon run
// netlink and stat calls as fast as they can send requests.
const healthCacheTTL = time.Second

// healthCheckTimeout bounds one check; a check that hangs (a wedged netlink
// socket, a hung NFS data dir) is itself a failure.
const healthCheckTimeout = 5 * time.Second

// readyCache holds the last check's verdict. The zero value has none.
type readyCache struct {
	mu  sync.Mutex
	at  time.Time
	err error
	now func() time.Time // tests' clock; nil is time.Now
}

// healthJSON is what anyone may see: the daemon is serving.
type healthJSON struct {
	Status   string   `json:"status"`
	Warnings []string `json:"warnings,omitempty"`
}

// healthStatsJSON is the seed-era document Open Runtimes Proxy balances on (Part 0), for holders of the key.
// The fields beside the seed-era ones (memory, pids) are absent when not
// known, so a client that does not know them reads the same document.
type healthStatsJSON struct {
	Status   string                       `json:"status"`
	Usage    float64                      `json:"usage"`
	Memory   *hostMemoryJSON              `json:"memory,omitempty"`
	Runtimes map[string]runtimeHealthJSON `json:"runtimes"` // `{}` when empty: the proxy reads it as an object
	Warnings []string                     `json:"warnings,omitempty"`
}

// hostMemoryJSON is the host's memory in bytes: MemTotal and MemAvailable of /proc/meminfo.
type hostMemoryJSON struct {
	Total     uint64 `json:"total"`
	Available uint64 `json:"available"`
}

type runtimeHealthJSON struct {
	Status string      `json:"status"`
	Usage  float64     `json:"usage"`
	Memory *memoryJSON `json:"memory,omitempty"`
	PIDs   *uint64     `json:"pids,omitempty"`
}

// memoryJSON is a runtime's memory in bytes: what its cgroup is charged, page cache included (what its limit
// and the OOM killer go by), and its limit, 0 when it has none.
type memoryJSON struct {
	Usage uint64 `json:"usage"`
	Limit uint64 `json:"limit"`
}

// runtimeFigures are the memory and pids of a runtime's figures, nil where its cgroup has no such counter.
func runtimeFigures(u sandbox.RuntimeUsage) (*memoryJSON, *uint64) {
	var mem *memoryJSON
	var pids *uint64
	if u.HasMemory {
		mem = &memoryJSON{Usage: u.Memory, Limit: u.MemoryLimit}
	}
	if u.HasPIDs {
		n := u.PIDs
		pids = &n
	}
	return mem, pids
}

// health is GET /v1/health, the readiness a balancer polls. It needs no key. It answers 503 while the server
// drains (see Drain) and while the backend's Check fails, 200 otherwise; usage figures are only given to callers
// with a valid key (they describe the host) and only when the backend implements UsageReporter (CPU, memory
// and pids) or Stats (CPU alone).
//
// A 503 carries the API's error document (general_unknown, code 503) with the reason as its message, rather
// than the health document with another status: every balancer goes by the status, Open Runtimes Proxy takes
// any status but 200 as offline and records the body whole, and the reference's clients read `message` from
// any failed call. Only holders of the key are told the host's details (interface names, paths, errors); the
// others learn which part broke.
func (s *Server) health(w http.ResponseWriter, r *http.Request, _ httprouter.Params) error {
	if s.drain.isDraining() {
		return s.writeUnready(w, "Executor is draining: it finishes the work in flight, takes no new work and stops.")
	}
	if err := s.checkReady(r.Context()); err != nil {
		return s.writeUnready(w, unhealthyMessage(err, s.authorized(r)))
	}
	var warnings []string
	if wr, ok := s.backend.(Warner); ok {
		warnings = wr.Warnings()
	}
	if !s.authorized(r) {
		return writeJSON(w, http.StatusOK, healthJSON{Status: "pass", Warnings: warnings})
	}
	if ur, ok := s.backend.(UsageReporter); ok {
		w.Header().Set("Content-Type", contentTypeJSON)
		writeBody(w, http.StatusOK, appendHealthStats(nil, ur.UsageFigures(), warnings))
		return nil
	}
	stats, ok := s.backend.(Stats)
	if !ok {
		return writeJSON(w, http.StatusOK, healthJSON{Status: "pass", Warnings: warnings})
	}
	host, per := stats.Usage()
	out := healthStatsJSON{Status: "pass", Usage: finite(host), Runtimes: make(map[string]runtimeHealthJSON, len(per)), Warnings: warnings}
	for id, usage := range per {
		out.Runtimes[id] = runtimeHealthJSON{Status: "pass", Usage: finite(usage)}
	}
	return writeJSON(w, http.StatusOK, out)
}

// appendHealthStats appends the keyed health document of fig: byte for byte
// what marshalPHP makes of the healthStatsJSON it stands for (the tests'
// oracle, healthStatsOf, builds it), with the runtimes in the order
// encoding/json gives a map's keys. Written by hand: through encoding/json, whose map encoder
// reflects on and sorts every key, the document of a thousand runtimes was
// most of the endpoint's time, and a balancer polls it steadily.
func appendHealthStats(b []byte, fig sandbox.Usage, warnings []string) []byte {
	type entry struct {
		id string
		u  sandbox.RuntimeUsage
	}
	rts := make([]entry, 0, len(fig.Runtimes))
	for id, u := range fig.Runtimes {
		rts = append(rts, entry{id, u})
	}
	slices.SortFunc(rts, func(a, b entry) int { return strings.Compare(a.id, b.id) })
	if b == nil {
		b = make([]byte, 0, 128+len(rts)*healthRuntimeSize)
	}
	b = append(b, `{"status":"pass","usage":`...)
	b = appendJSONFloat(b, finite(fig.CPU))
	if fig.HasMemory {
		b = append(b, `,"memory":{"total":`...)
		b = strconv.AppendUint(b, fig.MemoryTotal, 10)
		b = append(b, `,"available":`...)
		b = strconv.AppendUint(b, fig.MemoryAvailable, 10)
		b = append(b, '}')
	}
	b = append(b, `,"runtimes":{`...)
	for i, r := range rts {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendPHPString(b, r.id)
		b = append(b, `:{"status":"pass","usage":`...)
		b = appendJSONFloat(b, finite(r.u.CPU))
		if r.u.HasMemory {
			b = append(b, `,"memory":{"usage":`...)
			b = strconv.AppendUint(b, r.u.Memory, 10)
			b = append(b, `,"limit":`...)
			b = strconv.AppendUint(b, r.u.MemoryLimit, 10)
			b = append(b, '}')
		}
		if r.u.HasPIDs {
			b = append(b, `,"pids":`...)
			b = strconv.AppendUint(b, r.u.PIDs, 10)
		}
		b = append(b, '}')
	}
	b = append(b, '}')
	if len(warnings) > 0 {
		b = append(b, `,"warnings":[`...)
		for i, w := range warnings {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendPHPString(b, w)
		}
		b = append(b, ']')
	}
	return append(b, '}')
}

// healthRuntimeSize is about the size of one runtime's entry in the keyed
// health document, to size its buffer.
const healthRuntimeSize = 112

// checkReady runs the backend's Check, or reuses a verdict younger than healthCacheTTL. Concurrent polls wait
// for one check. A change of verdict is logged once, not at every poll.
func (s *Server) checkReady(ctx context.Context) error {
	checker, ok := s.backend.(Checker)
	if !ok {
		return nil
	}
	c := &s.ready
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now
	if c.now != nil {
		now = c.now
	}
	if !c.at.IsZero() && now().Sub(c.at) < healthCacheTTL {
		return c.err
	}
	// The verdict is shared: the caller leaving must not turn it into a failure.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), healthCheckTimeout)
	err := checker.Check(cctx)
	cancel()
	switch {
	case err != nil && (c.err == nil || c.err.Error() != err.Error()):
		s.log.WarnContext(ctx, "health check failed: GET /v1/health answers 503", "err", err)
	case err == nil && c.err != nil:
		s.log.InfoContext(ctx, "health check passes again", "was", c.err.Error())
	}
	c.at, c.err = now(), err
	return err
}

// unhealthyMessage is the 503's message: the parts that broke for anyone, how they broke for holders of the key.
func unhealthyMessage(err error, detailed bool) string {
	if detailed {
		return "Executor is unhealthy: " + err.Error()
	}
	var he *sandbox.HealthError
	if errors.As(err, &he) && len(he.Parts) > 0 {
		return "Executor is unhealthy: its " + strings.Join(he.Parts, ", ") + " failed the health check (the executor key shows details)."
	}
	return "Executor is unhealthy (the executor key shows details)."
}

// writeUnready answers 503 with the API's error document. It is written here, not by writeError, which logs
// every failed request: a balancer polls this one, and the cache logs each change of verdict once.
func (s *Server) writeUnready(w http.ResponseWriter, message string) error {
	data, err := marshalPHP(errorBody{Type: typeGeneralUnknown, Message: message, Code: http.StatusServiceUnavailable, Version: s.version})
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", contentTypeJSON)
	h.Set("Cache-Control", "no-cache, no-store, must-revalidate")
	h.Set("Expires", "0")
	h.Set("Pragma", "no-cache")
	writeBody(w, http.StatusServiceUnavailable, data)
	return nil
}

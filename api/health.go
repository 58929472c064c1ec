package api

import (
	"net/http"

	"github.com/julienschmidt/httprouter"
)

// healthJSON is what anyone may see: the daemon is serving.
type healthJSON struct {
	Status string `json:"status"`
}

// healthStatsJSON is the seed-era document Open Runtimes Proxy balances on (Part 0), for holders of the key.
type healthStatsJSON struct {
	Status   string                       `json:"status"`
	Usage    float64                      `json:"usage"`
	Runtimes map[string]runtimeHealthJSON `json:"runtimes"` // `{}` when empty: the proxy reads it as an object
}

type runtimeHealthJSON struct {
	Status string  `json:"status"`
	Usage  float64 `json:"usage"`
}

// health is GET /v1/health. It needs no key and always answers 200; CPU figures are only given to callers with
// a valid key (they describe the host) and only when the backend implements Stats.
func (s *Server) health(w http.ResponseWriter, r *http.Request, _ httprouter.Params) error {
	stats, ok := s.backend.(Stats)
	if !ok || !s.authorized(r) {
		return writeJSON(w, http.StatusOK, healthJSON{Status: "pass"})
	}
	host, per := stats.Usage()
	out := healthStatsJSON{Status: "pass", Usage: finite(host), Runtimes: make(map[string]runtimeHealthJSON, len(per))}
	for id, usage := range per {
		out.Runtimes[id] = runtimeHealthJSON{Status: "pass", Usage: finite(usage)}
	}
	return writeJSON(w, http.StatusOK, out)
}

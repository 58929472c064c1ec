package api

import (
	"net/http"
	"time"

	"github.com/julienschmidt/httprouter"
)

// runCommand is POST /v1/runtimes/:runtimeId/commands (§3.8).
func (s *Server) runCommand(w http.ResponseWriter, r *http.Request, ps httprouter.Params) error {
	req, err := s.endpoints.command.bind(r, ps)
	if err != nil {
		return err
	}
	out, err := s.backend.Command(r.Context(), req.RuntimeID, req.Command, time.Duration(req.Timeout)*time.Second)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, struct {
		Output string `json:"output"`
	}{out})
}

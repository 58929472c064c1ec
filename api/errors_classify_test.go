package api

import (
	"net/http"
	"strings"
	"testing"
)

// TestErrorCodeIsAnErrorStatus: a request error's code doubles as the HTTP status, so every 4xx and 5xx code is
// kept as it is, the ends of the range included, and any other code becomes 500.
func TestErrorCodeIsAnErrorStatus(t *testing.T) {
	s := newTestServer(t, &fakeBackend{})
	for _, tc := range []struct{ code, want int }{
		{http.StatusBadRequest, http.StatusBadRequest},
		{http.StatusNotFound, http.StatusNotFound},
		{599, 599},
		{399, http.StatusInternalServerError},
		{600, http.StatusInternalServerError},
		{http.StatusOK, http.StatusInternalServerError},
		{0, http.StatusInternalServerError},
	} {
		body, _ := s.classify(newRequestError(tc.code, "m"))
		if body.Code != tc.want {
			t.Errorf("code %d: answered %d, want %d", tc.code, body.Code, tc.want)
		}
	}
}

// TestRequestErrorTraceStartsAtItsCaller: the development-mode trace (and the file and line taken from its
// first frame) names the code that raised the error, not the helpers that build it.
func TestRequestErrorTraceStartsAtItsCaller(t *testing.T) {
	for name, err := range map[string]*requestError{
		"newRequestError": newRequestError(http.StatusBadRequest, "m"),
		"errNotOptional":  errNotOptional("p"),
	} {
		tr := frames(err.pcs)
		if len(tr) == 0 || !strings.HasSuffix(tr[0].Function, ".TestRequestErrorTraceStartsAtItsCaller") {
			t.Errorf("%s: trace %+v, want it to start in this test", name, tr)
		}
	}
}

package api

import (
	"net/http"
	"time"
)

// Observer is told of every answered request, for the daemon's metrics and
// traces; the API itself knows neither. It is called on the request's
// goroutine, before the access line, and must not block.
type Observer interface {
	// Request reports r answered with status after took. route is the
	// pattern r matched (/v1/runtimes/:runtimeId), "" when none did; r's
	// context is the request's own, still carrying its trace.
	Request(r *http.Request, route string, status int, took time.Duration)
}

// Observers is an Observer telling each of obs in turn; nil ones are left out.
func Observers(obs ...Observer) Observer {
	var all multiObserver
	for _, o := range obs {
		if o != nil {
			all = append(all, o)
		}
	}
	return all
}

type multiObserver []Observer

func (m multiObserver) Request(r *http.Request, route string, status int, took time.Duration) {
	for _, o := range m {
		o.Request(r, route, status, took)
	}
}

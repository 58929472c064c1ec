package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// apiClient talks to a running daemon's API.
type apiClient struct {
	base *url.URL
	// from says where the address came from, for the message when the daemon cannot be reached.
	from string
	key  string
	http *http.Client
}

// dialTimeout bounds connecting to the daemon: it is on this host or near it, and a command that hangs on a
// dead address tells the operator less than an error does.
const dialTimeout = 5 * time.Second

// client is the API client of inv: --addr, else OPR_EXECUTOR_LISTEN as the daemon reads it; --key, else
// OPR_EXECUTOR_SECRET. A keyed command without a key is a usage error: the daemon would only answer 401.
func (c *cli) client(inv *invocation) (*apiClient, error) {
	addr, from := inv.addr, "--addr "+inv.addr
	if addr == "" {
		var err error
		if addr, from, err = listenSetting(c.getenv); err != nil {
			return nil, &usageError{msg: err.Error()}
		}
	}
	base, err := apiBase(addr)
	if err != nil {
		return nil, usagef("%s: %v", from, err)
	}
	key := inv.key
	if key == "" {
		key = c.getenv("OPR_EXECUTOR_SECRET")
	}
	if key == "" && inv.cmd.keyed {
		return nil, usagef("%s needs the API key: set OPR_EXECUTOR_SECRET (or pass --key)", inv.cmd.name)
	}
	transport := &http.Transport{
		// The key goes to the daemon, never to a proxy named in the environment.
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: dialTimeout}).DialContext,
		TLSHandshakeTimeout:   dialTimeout,
		DisableCompression:    true, // streams come as they are written
		ExpectContinueTimeout: time.Second,
	}
	return &apiClient{
		base: base,
		from: from,
		key:  key,
		http: &http.Client{
			Transport: transport,
			// The daemon never redirects: a redirect comes from something else listening there.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}, nil
}

// listenSetting reads OPR_EXECUTOR_LISTEN through the daemon's own table of settings (its fallback, blanks
// trimmed, its default, its check), so that the command line finds the daemon wherever the same environment
// makes it listen. from names where the address came from.
func listenSetting(getenv func(string) string) (addr, from string, err error) {
	for _, s := range (&config{}).settings(getenv) {
		if s.name != "OPR_EXECUTOR_LISTEN" {
			continue
		}
		// As loadConfig reads a setting.
		name, v := s.name, getenv(s.name)
		if s.fallback != "" && strings.TrimSpace(v) == "" {
			name, v = s.fallback, getenv(s.fallback)
		}
		if !s.raw {
			v = strings.TrimSpace(v)
		}
		from = name
		if v == "" {
			v, from = s.def, "the default address"
		}
		if err := s.parse(name, v); err != nil {
			return "", "", err
		}
		return v, from + " " + v, nil
	}
	return "", "", errors.New("OPR_EXECUTOR_LISTEN is not a setting of this build")
}

// listenDefault is the daemon's default address, for the help.
func listenDefault() string {
	for _, s := range (&config{}).settings(func(string) string { return "" }) {
		if s.name == "OPR_EXECUTOR_LISTEN" {
			return s.def
		}
	}
	return ""
}

// apiBase is the URL of the API at addr: HOST:PORT, or an http or https URL. An unspecified host (empty,
// 0.0.0.0, [::]), which the daemon listens on to take every address, is reached on loopback.
func apiBase(addr string) (*url.URL, error) {
	scheme, hostport := "http", addr
	if strings.Contains(addr, "://") {
		u, err := url.Parse(addr)
		if err != nil {
			return nil, err
		}
		if u.Scheme != "http" && u.Scheme != "https" {
			return nil, fmt.Errorf("%q: only http and https URLs", addr)
		}
		if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
			return nil, fmt.Errorf("%q: give the daemon's address only, without a path, query or user", addr)
		}
		scheme, hostport = u.Scheme, u.Host
		if u.Port() == "" {
			return nil, fmt.Errorf("%q has no port", addr)
		}
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, fmt.Errorf("%q is not HOST:PORT", addr)
	}
	if port == "" {
		return nil, fmt.Errorf("%q has no port", addr)
	}
	if host == "" {
		host = "127.0.0.1"
	} else if ip, err := netip.ParseAddr(host); err == nil && ip.IsUnspecified() {
		host = "127.0.0.1"
		if ip.Is6() {
			host = "::1"
		}
	}
	return &url.URL{Scheme: scheme, Host: net.JoinHostPort(host, port)}, nil
}

// unreachableError: the daemon did not answer, or the connection broke.
type unreachableError struct {
	base *url.URL
	from string
	lost bool // the connection broke after the daemon had answered
	err  error
}

func (e *unreachableError) Error() string {
	if e.lost {
		return fmt.Sprintf("lost the connection to the daemon at %s: %v", e.base, e.err)
	}
	return fmt.Sprintf("cannot reach the daemon at %s (%s): %v", e.base, e.from, e.err)
}

func (e *unreachableError) Unwrap() error { return e.err }

// daemonError is an error the daemon answered with: the API's error document, or the bare status when the
// answer was not one.
type daemonError struct {
	status  int
	typ     string
	message string
}

func (e *daemonError) Error() string {
	if e.typ == "" {
		return fmt.Sprintf("the daemon answered %d %s", e.status, http.StatusText(e.status))
	}
	return fmt.Sprintf("%s: %s (%d)", e.typ, e.message, e.status)
}

// maxErrorBody bounds what is read of an error answer.
const maxErrorBody = 1 << 20

func readDaemonError(resp *http.Response) *daemonError {
	e := &daemonError{status: resp.StatusCode}
	var doc struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	if json.Unmarshal(data, &doc) == nil && doc.Type != "" {
		e.typ, e.message = doc.Type, doc.Message
	}
	return e
}

// do sends a request for path (escaped) with body (JSON, nil for none) and returns the answer when it is a success; the caller
// closes its body. Its errors are *unreachableError and *daemonError.
func (a *apiClient) do(ctx context.Context, method, path string, query url.Values, body any, accept string) (*http.Response, error) {
	// path is escaped already (a runtime id may hold what a path cannot).
	u := a.base.String() + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", accept)
	req.Header.Set("User-Agent", "executor-cli/"+version)
	if a.key != "" {
		req.Header.Set("Authorization", "Bearer "+a.key)
	}
	resp, err := a.http.Do(req)
	if err != nil {
		// url.Error repeats the method and URL, which the message says already.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return nil, &unreachableError{base: a.base, from: a.from, err: err}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer resp.Body.Close()
		return nil, readDaemonError(resp)
	}
	return resp, nil
}

// getJSON sends a GET and decodes the answer into v.
func (a *apiClient) getJSON(ctx context.Context, path string, v any) error {
	resp, err := a.do(ctx, http.MethodGet, path, nil, nil, "application/json")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		if isDecodeError(err) {
			return fmt.Errorf("the daemon's answer to GET %s could not be read: %w", path, err)
		}
		return a.lost(err)
	}
	return nil
}

// lost is the error of a connection that broke during an answer.
func (a *apiClient) lost(err error) error {
	return &unreachableError{base: a.base, from: a.from, lost: true, err: err}
}

// isDecodeError tells a body that is not what was expected from one that stopped coming.
func isDecodeError(err error) bool {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	return errors.As(err, &syntax) || errors.As(err, &typ)
}

// fail prints err and returns the exit code it stands for.
func (c *cli) fail(ctx context.Context, err error) int {
	if code, ok := interrupted(ctx); ok {
		return code
	}
	var usage *usageError
	var unreachable *unreachableError
	var answered *daemonError
	switch {
	case errors.As(err, &usage):
		fmt.Fprintf(c.stderr, "executor: %v\nRun 'executor --help' for usage.\n", err)
		return exitUsage
	case errors.As(err, &unreachable):
		fmt.Fprintf(c.stderr, "executor: %v\n", err)
		return exitUnreachable
	case errors.As(err, &answered):
		fmt.Fprintf(c.stderr, "executor: %v\n", err)
		return exitAPIError
	}
	// An answer that could not be read: the daemon's doing, as far as this side can tell.
	fmt.Fprintf(c.stderr, "executor: %v\n", err)
	return exitAPIError
}

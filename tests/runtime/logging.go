package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// logSink receives the function's log and error lines and knows how the
// protocol hands them back to the executor.
//
// Log and Error may be called after the response was sent (a behaviour that
// outlived its soft timeout), so implementations are safe for concurrent use
// and ignore writes after Close.
type logSink interface {
	Log(line string)
	Error(line string)
	// Decorate adds the protocol's log headers to the response.
	Decorate(h http.Header)
	Close() error
}

// fileSink is the v4/v5 transport: /mnt/logs/<id>_logs.log and
// /mnt/logs/<id>_errors.log, plus the x-open-runtimes-log-id header.
type fileSink struct {
	mu       sync.Mutex
	id       string
	answer   string // the log id to answer with, when not id (see behaveShell)
	disabled bool
	logs     *os.File
	errs     *os.File
	closed   bool
}

// openFileSink creates (or appends to) both log files of id. When logging is
// disabled no files are touched and the log id header is sent empty.
func openFileSink(dir, id string, disabled bool) (*fileSink, error) {
	s := &fileSink{id: id, disabled: disabled}
	if disabled {
		return s, nil
	}
	open := func(kind string) (*os.File, error) {
		path := filepath.Join(dir, fmt.Sprintf("%s_%s.log", id, kind))
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", path, err)
		}
		return f, nil
	}
	var err error
	if s.logs, err = open("logs"); err != nil {
		return nil, err
	}
	if s.errs, err = open("errors"); err != nil {
		_ = s.logs.Close()
		return nil, err
	}
	return s, nil
}

func (s *fileSink) write(f *os.File, line string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.disabled || s.closed {
		return
	}
	// Write errors cannot be reported to anyone useful: the executor only
	// sees the files, so a short file is the signal.
	_, _ = f.WriteString(line + "\n")
}

func (s *fileSink) Log(line string)   { s.write(s.logs, line) }
func (s *fileSink) Error(line string) { s.write(s.errs, line) }

func (s *fileSink) Decorate(h http.Header) {
	if s.disabled {
		// Present but empty, as the v4 runtimes answer.
		h[http.CanonicalHeaderKey(hdrLogID)] = []string{""}
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.answer != "" {
		h.Set(hdrLogID, s.answer)
		return
	}
	h.Set(hdrLogID, s.id)
}

// answerAs makes Decorate answer with id instead of the files' own id.
func (s *fileSink) answerAs(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.answer = id
}

func (s *fileSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.disabled {
		s.closed = true
		return nil
	}
	s.closed = true
	return errors.Join(s.logs.Close(), s.errs.Close())
}

// headerSink is the v3 transport: lines joined by "\n", encodeURIComponent'd
// into x-open-runtimes-logs / x-open-runtimes-errors.
type headerSink struct {
	mu     sync.Mutex
	logs   []string
	errs   []string
	closed bool
}

func (s *headerSink) Log(line string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.logs = append(s.logs, line)
	}
}

func (s *headerSink) Error(line string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.errs = append(s.errs, line)
	}
}

func (s *headerSink) Decorate(h http.Header) {
	s.mu.Lock()
	defer s.mu.Unlock()
	h.Set(hdrLogs, encodeURIComponent(strings.Join(s.logs, "\n")))
	h.Set(hdrErrors, encodeURIComponent(strings.Join(s.errs, "\n")))
}

func (s *headerSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

// encodeURIComponent matches JavaScript's function of the same name, which is
// what v3 runtimes use and what the executor urldecodes.
func encodeURIComponent(s string) string {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isURIUnreserved(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&0x0f])
	}
	return b.String()
}

func isURIUnreserved(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("-_.!~*'()", c) >= 0
}

// randomHex returns 2n random hex characters.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on Linux.
	return hex.EncodeToString(b)
}

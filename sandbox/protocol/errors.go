package protocol

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"
)

// The curl error numbers a TransportError carries. The reference executor
// speaks to runtimes with curl and reports its error number to clients,
// which have learnt to read them.
const (
	CurlCouldNotConnect = 7  // CURLE_COULDNT_CONNECT: the connection was refused
	CurlTimedOut        = 28 // CURLE_OPERATION_TIMEDOUT
	CurlGotNothing      = 52 // CURLE_GOT_NOTHING: the runtime closed the connection
	CurlRecvError       = 56 // CURLE_RECV_ERROR: any other failure
)

// TransportError is an exchange with a runtime that failed: no answer, or
// an answer cut short. The reference reports it to clients as "Internal curl
// error has occurred within the executor! Error Number: <Curl>".
type TransportError struct {
	Curl     int   // the curl error number of the failure
	Attempts int   // how many times the request was sent
	Err      error // what the HTTP client reported
}

func (e *TransportError) Error() string {
	return fmt.Sprintf("runtime exchange failed (curl error %d): %v", e.Curl, e.Err)
}

func (e *TransportError) Unwrap() error { return e.Err }

// transportError classifies err as curl would have.
func transportError(err error, attempts int) *TransportError {
	code := CurlRecvError
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
		code = CurlTimedOut
	case errors.Is(err, syscall.ECONNREFUSED):
		code = CurlCouldNotConnect
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		code = CurlGotNothing
	}
	return &TransportError{Curl: code, Attempts: attempts, Err: err}
}

// TimeoutError is a v2 execution that outlived its budget. v2 runtimes
// enforce no timeout of their own, so the executor's is the only one, and
// the reference reports it in its own words (Error's text) as the
// execution's timeout rather than as a curl error. Err is the
// TransportError, so errors.Is(err, context.DeadlineExceeded) holds.
type TimeoutError struct {
	After time.Duration // the budget the execution had
	Err   error
}

func (e *TimeoutError) Error() string {
	return fmt.Sprintf("Operation timed out after %d milliseconds", e.After.Milliseconds())
}

func (e *TimeoutError) Unwrap() error { return e.Err }

// ResponseTooLargeError is a v3+ response body over Limit bytes. Error's
// text is the reference's message.
type ResponseTooLargeError struct {
	Limit int64
}

func (e *ResponseTooLargeError) Error() string {
	return fmt.Sprintf("Runtime response is larger than %d bytes.", e.Limit)
}

package images

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"reflect"
	"strings"
	"syscall"

	"github.com/docker/distribution/registry/api/errcode"
	"go.podman.io/image/v5/docker"
	ociarchive "go.podman.io/image/v5/oci/archive"
	"go.podman.io/image/v5/oci/layout"
)

// Errors a Pull can be matched against with errors.Is. Pull returns a
// *PullError whose message says which of them it was and nothing the source
// said; the source's own error stays in its Err, for the log.
var (
	// ErrImageNotFound: the repository, tag or digest does not exist (registry
	// "manifest unknown" / "name unknown" / 404, a missing OCI layout or tag),
	// or no image for this platform is in the manifest list.
	ErrImageNotFound = errors.New("image not found")
	// ErrUnauthorized: the registry refused the credentials or the access (401, 403, "denied").
	ErrUnauthorized = errors.New("unauthorized")
	// ErrRegistryUnreachable: the registry could not be talked to (DNS, dial,
	// TLS, plain HTTP to an HTTPS client, anything but a registry answering
	// its /v2/ ping).
	ErrRegistryUnreachable = errors.New("registry unreachable")
	// ErrInvalidReference: the reference cannot be parsed, or names what this
	// daemon does not pull from: a transport other than docker, oci,
	// oci-archive and docker-archive, one of the last three without
	// Config.ArchiveDir, or a path outside that directory.
	ErrInvalidReference = errors.New("invalid image reference")
	// ErrPolicyRejected: the signature policy does not allow the image.
	ErrPolicyRejected = errors.New("image rejected by signature policy")
	// ErrBlocked: registries.conf blocks the registry the image would come
	// from (`[[registry]] blocked = true`), or the registry is on a local
	// address (loopback, link-local, unspecified, one of the host's own)
	// that registries.conf does not name. Only pulls are refused: an image
	// already in the store is still served (as podman does).
	ErrBlocked = errors.New("registry blocked")
)

// PullError is the error Pull returns. Its message is meant for API
// clients: the kind of failure (one of the Err* sentinels) and, for a
// refusal or a limit, the rule in our own words; never what the source said.
// A client chooses the source, so the source's answers would let it probe
// the host: "no such file" against "not a tar archive" for a host path,
// "connection refused" against a service's banner for a local port.
//
// Err is the whole story, for the log (Pull logs it at warning level); it
// wraps the sentinel, so errors.Is works on a *PullError.
type PullError struct {
	Ref string // the reference as the caller spelled it
	Err error
	msg string
}

func (e *PullError) Error() string { return e.msg }
func (e *PullError) Unwrap() error { return e.Err }

// sentinels are the kinds a PullError's message can name.
var sentinels = [...]error{ErrInvalidReference, ErrBlocked, ErrPolicyRejected, ErrImageTooLarge,
	ErrUnauthorized, ErrImageNotFound, ErrRegistryUnreachable}

// newPullError wraps a failed pull of ref in a *PullError. ctx is the
// caller's: a context error while it is still live is a network timeout.
func newPullError(ctx context.Context, ref string, err error) *PullError {
	if ctx.Err() != nil {
		// Says something about the caller, nothing about the source.
		return &PullError{Ref: ref, Err: err, msg: "image pull stopped: " + ctx.Err().Error()}
	}
	err = classify(err)
	if kindOf(err) == nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)) {
		err = fmt.Errorf("%w: %w", ErrRegistryUnreachable, err)
	}
	e := &PullError{Ref: ref, Err: err}
	var r *refusal
	switch kind := kindOf(err); {
	case errors.As(err, &r):
		e.msg = r.Error()
	case kind != nil:
		e.msg = kind.Error()
	default:
		e.msg = "image could not be pulled (the executor's log has the details)"
	}
	return e
}

// kindOf is the first of the sentinels err matches, or nil.
func kindOf(err error) error {
	for _, k := range sentinels {
		if errors.Is(err, k) {
			return k
		}
	}
	return nil
}

// refusal is a failure we describe ourselves: a rule a reference or an
// image broke, or content that failed our checks. Its reason is safe to show
// to an API client. kind is one of the sentinels, or nil for an image that
// is broken rather than refused (a digest that does not match).
type refusal struct {
	kind   error
	reason string
}

func (r *refusal) Error() string {
	if r.kind == nil {
		return "image could not be pulled: " + r.reason
	}
	return r.kind.Error() + ": " + r.reason
}

func (r *refusal) Unwrap() error { return r.kind }

func refuse(kind error, format string, args ...any) error {
	return &refusal{kind: kind, reason: fmt.Sprintf(format, args...)}
}

// classify wraps err with the sentinel that describes it, or returns it as is.
// Registry-level answers are checked before transport failures because a
// registry answer proves the registry was reachable.
func classify(err error) error {
	if err == nil {
		return nil
	}
	if kindOf(err) != nil {
		return err
	}
	var sentinel error
	switch {
	case isPingFailure(err):
		// Whatever answered (nothing, a web server's 404, an SSH banner, or
		// a dial that timed out) was not a registry: one kind for all, so
		// that a reference cannot tell a closed port from an open one.
		sentinel = ErrRegistryUnreachable
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		// Perhaps the caller gave up, which says nothing about the registry
		// (newPullError tells that from a network timeout).
		return err
	case isNotFound(err):
		sentinel = ErrImageNotFound
	case isUnauthorized(err):
		sentinel = ErrUnauthorized
	case isUnreachable(err):
		sentinel = ErrRegistryUnreachable
	default:
		return err
	}
	return fmt.Errorf("%w: %w", sentinel, err)
}

// isPingFailure reports whether err is containers/image's failure to ping a
// registry's /v2/ endpoint, the first thing it asks of a registry. It has no
// type of its own, hence the text.
func isPingFailure(err error) bool {
	return strings.Contains(err.Error(), "pinging container registry")
}

func registryCode(err error) string {
	var coder errcode.ErrorCoder
	if errors.As(err, &coder) {
		return coder.ErrorCode().String()
	}
	return ""
}

func isNotFound(err error) bool {
	switch registryCode(err) {
	case "MANIFEST_UNKNOWN", "NAME_UNKNOWN", "NOT_FOUND":
		return true
	}
	var layoutErr layout.ImageNotFoundError
	var archiveErr ociarchive.ImageNotFoundError
	var archiveFileErr ociarchive.ArchiveFileNotFoundError
	if errors.As(err, &layoutErr) || errors.As(err, &archiveErr) || errors.As(err, &archiveFileErr) {
		return true
	}
	return httpStatus(err) == 404
}

func isUnauthorized(err error) bool {
	switch registryCode(err) {
	case "UNAUTHORIZED", "DENIED":
		return true
	}
	var credErr docker.ErrUnauthorizedForCredentials
	if errors.As(err, &credErr) {
		return true
	}
	switch httpStatus(err) {
	case 401, 403:
		return true
	}
	return false
}

func isUnreachable(err error) bool {
	var (
		opErr       *net.OpError
		dnsErr      *net.DNSError
		addrErr     *net.AddrError
		unknownCA   x509.UnknownAuthorityError
		hostnameErr x509.HostnameError
		certErr     x509.CertificateInvalidError
		verifyErr   *tls.CertificateVerificationError
		recordErr   tls.RecordHeaderError
		netErr      net.Error
	)
	switch {
	case errors.As(err, &opErr), errors.As(err, &dnsErr), errors.As(err, &addrErr),
		errors.As(err, &unknownCA), errors.As(err, &hostnameErr), errors.As(err, &certErr),
		errors.As(err, &verifyErr), errors.As(err, &recordErr):
		return true
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return true
	case errors.As(err, &netErr) && netErr.Timeout():
		return true
	}
	// net/http reports a plain-HTTP answer to a TLS client with an untyped error.
	return strings.Contains(err.Error(), "server gave HTTP response to HTTPS client")
}

// httpStatus finds an HTTP status code in err's chain. containers/image keeps
// the code in exported fields of error types that are partly unexported
// (unexpectedHTTPResponseError for a 4xx answer with a non-JSON body), so the
// chain is searched for any struct with an int field StatusCode.
func httpStatus(err error) int {
	code := 0
	walkErrors(err, func(e error) bool {
		v := reflect.ValueOf(e)
		if v.Kind() == reflect.Pointer {
			if v.IsNil() {
				return false
			}
			v = v.Elem()
		}
		if v.Kind() != reflect.Struct {
			return false
		}
		f := v.FieldByName("StatusCode")
		if f.IsValid() && f.CanInt() {
			code = int(f.Int())
			return true
		}
		return false
	})
	return code
}

// walkErrors visits err and everything it wraps, depth first, until visit returns true.
func walkErrors(err error, visit func(error) bool) bool {
	if err == nil {
		return false
	}
	if visit(err) {
		return true
	}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		return walkErrors(u.Unwrap(), visit)
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			if walkErrors(e, visit) {
				return true
			}
		}
	}
	return false
}

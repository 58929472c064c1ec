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
	// ErrBadImage: the image is broken, or of a kind this daemon cannot
	// unpack: content that does not match its digest or diffID, a layer
	// that is not a tar stream (plain, gzip or zstd) or that the unpacker
	// refuses (a link to nothing, an entry where a directory must be), a
	// manifest or config that does not parse, schema 1, encrypted layers.
	// The source served it: the fault is the image's, not the registry's
	// nor this host's.
	ErrBadImage = errors.New("bad image")
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

// Kind is the Err* sentinel that says what failed, or nil when the pull
// failed for this host's own reasons (its disk, memory, a bug) or because
// the caller stopped it: the failures that are not the reference's, the
// image's or its source's doing.
func (e *PullError) Kind() error { return kindOf(e.Err) }

// sentinels are the kinds a PullError's message can name.
var sentinels = [...]error{ErrInvalidReference, ErrBlocked, ErrPolicyRejected, ErrImageTooLarge,
	ErrUnauthorized, ErrImageNotFound, ErrRegistryUnreachable, ErrBadImage}

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
// to an API client. kind is one of the sentinels.
type refusal struct {
	kind   error
	reason string
}

func (r *refusal) Error() string { return r.kind.Error() + ": " + r.reason }

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
	pingFailed := isPingFailure(err)
	primary, mirrors, tried := splitMirrors(err)
	if tried {
		// The mirrors' errors are text in the message; only the primary
		// location's error is in the chain.
		pingFailed = isPingFailure(primary)
	}
	var sentinel error
	switch {
	case pingFailed && tried && mirrorSaidNotFound(mirrors):
		// A mirror registries.conf names answered as a registry that it
		// has no such image; the primary location answered nothing that
		// was a registry. The verdict is the registry's, and it does not
		// depend on what the primary's port did: closed or open, both are
		// ping failures.
		sentinel = ErrImageNotFound
	case pingFailed:
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

// badImage classifies an error from reading what a source served (its
// manifest, config and layers): what classify does not recognise as the
// source's answer, and what is neither this host's fault nor the caller's
// giving up, is the image's own (ErrBadImage). A layer's unpacking only
// reads the layer and writes a fresh directory of ours, so what it trips on
// is the layer's doing unless it is the host's (see isHostFault).
func badImage(err error) error {
	err = classify(err)
	if err == nil || kindOf(err) != nil || isHostFault(err) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrBadImage, err)
}

// isHostFault reports whether err is this host's trouble rather than the
// image's: its disk full or failing, read-only or without xattrs, out of
// memory or file descriptors, or refusing root. Those are our 5xx.
func isHostFault(err error) bool {
	for _, errno := range []syscall.Errno{syscall.ENOSPC, syscall.EDQUOT, syscall.EIO, syscall.EROFS, syscall.ENOMEM,
		syscall.EMFILE, syscall.ENFILE, syscall.EOPNOTSUPP, syscall.EPERM, syscall.EACCES} {
		if errors.Is(err, errno) {
			return true
		}
	}
	return false
}

// mirrorsFailed starts containers/image's error for a pull whose mirrors and
// primary location all failed: "(Mirrors also failed: [ref: err]...):
// primary-ref: primary-err", with the primary's error wrapped and the
// mirrors' only as text.
const mirrorsFailed = "(Mirrors also failed: "

// splitMirrors finds that error in err's chain and returns the primary
// location's error and the text before it (the mirrors' errors).
//
//lint:ignore ST1008 primary is an error found in err's chain, not this function's failure
func splitMirrors(err error) (primary error, mirrors string, ok bool) {
	var found error
	walkErrors(err, func(e error) bool {
		if strings.HasPrefix(e.Error(), mirrorsFailed) {
			found = e
			return true
		}
		return false
	})
	if found == nil {
		return nil, "", false
	}
	if primary = errors.Unwrap(found); primary == nil {
		return nil, "", false
	}
	mirrors, ok = strings.CutSuffix(found.Error(), primary.Error())
	return primary, mirrors, ok
}

// mirrorSaidNotFound reports whether a mirror's error in text is a
// registry's "no such image" answer: distribution's error codes
// MANIFEST_UNKNOWN and NAME_UNKNOWN, which containers/image spells in lower
// case with a space. A reference cannot put these words there itself: its
// repository and tag have no spaces. The mirrors are the operator's.
func mirrorSaidNotFound(text string) bool {
	return strings.Contains(text, "manifest unknown") || strings.Contains(text, "name unknown")
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

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

// Errors a Pull can be matched against with errors.Is. The error returned
// wraps both the sentinel and the original error, so the source's own message
// (the registry's text) stays in err.Error().
var (
	// ErrImageNotFound: the repository, tag or digest does not exist (registry
	// "manifest unknown" / "name unknown" / 404, a missing OCI layout or tag),
	// or no image for this platform is in the manifest list.
	ErrImageNotFound = errors.New("image not found")
	// ErrUnauthorized: the registry refused the credentials or the access (401, 403, "denied").
	ErrUnauthorized = errors.New("unauthorized")
	// ErrRegistryUnreachable: the registry could not be talked to (DNS, dial, TLS, plain HTTP to an HTTPS client).
	ErrRegistryUnreachable = errors.New("registry unreachable")
	// ErrInvalidReference: the reference cannot be parsed.
	ErrInvalidReference = errors.New("invalid image reference")
	// ErrPolicyRejected: the signature policy does not allow the image.
	ErrPolicyRejected = errors.New("image rejected by signature policy")
	// ErrBlocked: registries.conf blocks the registry the image would come
	// from (`[[registry]] blocked = true`). Only pulls are refused: an image
	// already in the store is still served (as podman does).
	ErrBlocked = errors.New("registry blocked")
)

// classify wraps err with the sentinel that describes it, or returns it as is.
// Registry-level answers are checked before transport failures because a
// registry answer proves the registry was reachable.
func classify(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, ErrImageNotFound) || errors.Is(err, ErrUnauthorized) ||
		errors.Is(err, ErrRegistryUnreachable) || errors.Is(err, ErrPolicyRejected) || errors.Is(err, ErrInvalidReference) ||
		errors.Is(err, ErrBlocked) {
		return err
	}
	var sentinel error
	switch {
	case isNotFound(err):
		sentinel = ErrImageNotFound
	case isUnauthorized(err):
		sentinel = ErrUnauthorized
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		// The caller gave up; that says nothing about the registry.
		return err
	case isUnreachable(err):
		sentinel = ErrRegistryUnreachable
	default:
		return err
	}
	return fmt.Errorf("%w: %w", sentinel, err)
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

package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/s3utils"
)

// DefaultPartSize is the multipart part size of S3 uploads: the memory one
// upload holds, and 1/10000 of the largest object it can store (160 GiB).
const DefaultPartSize = 16 << 20

// S3Config configures an S3 device.
type S3Config struct {
	// Kind is the DSN scheme it came from (s3, dospaces, ...), for messages.
	Kind string
	// Endpoint is host[:port] of the S3 API, without scheme.
	Endpoint string
	// Secure selects https.
	Secure bool
	// Region signs the requests ("us-east-1" when empty).
	Region    string
	AccessKey string
	SecretKey string
	// Bucket, when set, is the one bucket of a virtual-hosted endpoint
	// (<Bucket>.<Endpoint>) and object paths are keys in it. When empty, the
	// first segment of an object path names the bucket.
	Bucket string
	// PathStyle addresses buckets as <Endpoint>/<bucket> even on endpoints
	// that support virtual-hosted buckets (the url parameter).
	PathStyle bool
	// Root is the device root (see Root); "/" when empty.
	Root string
	// PartSize is the multipart part size (DefaultPartSize when 0).
	PartSize int64
	// MaxSize caps objects read and written, in bytes; 0 means no cap.
	MaxSize int64
	// MaxRetries bounds the client's retries of failed requests (3 when 0).
	MaxRetries int
	// Transport replaces the HTTP transport (tests).
	Transport http.RoundTripper
}

// S3 is a device on an S3-compatible object store. Object paths live in the
// device namespace: "<bucket>/<key>" for path-style devices, "<key>" for a
// virtual-hosted bucket; a leading "/" is ignored.
type S3 struct {
	client    *minio.Client
	bucket    string
	root      string
	prefix    string
	partSize  uint64
	maxSize   int64
	endpoint  string
	redactors []string
	noACL     atomic.Bool
}

// NewS3 returns an S3 device. It does not contact the service.
func NewS3(cfg S3Config) (*S3, error) {
	if cfg.Endpoint == "" {
		return nil, errors.New("storage: S3 endpoint is empty")
	}
	if cfg.Root == "" {
		cfg.Root = "/"
	}
	if hasDotDot(cfg.Root) {
		return nil, fmt.Errorf("%w: root %q", ErrInvalidPath, cfg.Root)
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	if cfg.PartSize == 0 {
		cfg.PartSize = DefaultPartSize
	}
	if cfg.PartSize < 5<<20 {
		return nil, fmt.Errorf("storage: S3 part size %d is below the 5 MiB minimum", cfg.PartSize)
	}
	if cfg.MaxRetries == 0 {
		cfg.MaxRetries = 3
	}
	lookup := minio.BucketLookupAuto
	switch {
	case cfg.Bucket != "":
		lookup = minio.BucketLookupDNS
		if err := s3utils.CheckValidBucketNameStrict(cfg.Bucket); err != nil {
			return nil, fmt.Errorf("storage: bucket %q: %v", cfg.Bucket, err)
		}
	case cfg.PathStyle:
		lookup = minio.BucketLookupPath
	}
	opts := &minio.Options{
		Creds:        credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure:       cfg.Secure,
		Region:       cfg.Region,
		BucketLookup: lookup,
		MaxRetries:   cfg.MaxRetries,
		Transport:    cfg.Transport,
	}
	scheme := "https://"
	if !cfg.Secure {
		scheme = "http://"
	}
	s := &S3{
		bucket:   cfg.Bucket,
		root:     cfg.Root,
		prefix:   strings.Trim(path.Clean("/"+cfg.Root), "/"),
		partSize: uint64(cfg.PartSize),
		maxSize:  cfg.MaxSize,
		endpoint: scheme + cfg.Endpoint,
	}
	for _, c := range []string{cfg.SecretKey, cfg.AccessKey} {
		if len(c) >= 4 {
			s.redactors = append(s.redactors, c)
		}
	}
	client, err := minio.New(cfg.Endpoint, opts)
	if err != nil {
		return nil, fmt.Errorf("storage: %s endpoint %s: %s", cfg.Kind, s.redact(cfg.Endpoint), s.redact(err.Error()))
	}
	// Talk to the host the DSN names, not its dual-stack alias.
	client.SetS3EnableDualstack(false)
	s.client = client
	return s, nil
}

// Root is the prefix of this device's object paths: "<bucket>/<root>" for a
// generic S3 DSN with a bucket ("<bucket>" when root is "/"), else the root
// itself.
func (s *S3) Root() string { return s.root }

// Locate maps an object path to its bucket and key. ".." segments are
// refused; a path outside the root is taken relative to the root.
func (s *S3) Locate(p string) (bucket, key string, err error) {
	if p == "" || strings.ContainsRune(p, 0) || hasDotDot(p) {
		return "", "", fmt.Errorf("%w: %q", ErrInvalidPath, p)
	}
	q := strings.TrimLeft(p, "/")
	// A last segment "." names a directory as a trailing "/" does; cleaned
	// away, it would make a key of the root itself ("<root>/.", or ".").
	if q == "" || strings.HasSuffix(q, "/") || q == "." || strings.HasSuffix(q, "/.") {
		return "", "", fmt.Errorf("%w: %q names no object", ErrInvalidPath, p)
	}
	q = path.Clean(q)
	if s.prefix != "" && q != s.prefix && !strings.HasPrefix(q, s.prefix+"/") {
		q = s.prefix + "/" + q
	}
	bucket, key = s.bucket, q
	if bucket == "" {
		var ok bool
		if bucket, key, ok = strings.Cut(q, "/"); !ok || key == "" {
			return "", "", fmt.Errorf("%w: %q names a bucket, not an object", ErrInvalidPath, p)
		}
	}
	if err := s3utils.CheckValidBucketName(bucket); err != nil {
		return "", "", fmt.Errorf("%w: %q: bucket %q: %v", ErrInvalidPath, p, bucket, err)
	}
	if err := s3utils.CheckValidObjectName(key); err != nil {
		return "", "", fmt.Errorf("%w: %q: %v", ErrInvalidPath, p, err)
	}
	return bucket, key, nil
}

// Read streams the object at p.
func (s *S3) Read(ctx context.Context, p string) (io.ReadCloser, error) {
	bucket, key, err := s.Locate(p)
	if err != nil {
		return nil, err
	}
	// One GET whose body is streamed; its error (missing object, bad
	// credentials) surfaces here with the server's error code.
	body, info, _, err := minio.Core{Client: s.client}.GetObject(ctx, bucket, key, minio.GetObjectOptions{})
	if err != nil {
		return nil, s.fail(ctx, "read", p, err)
	}
	if s.maxSize > 0 && info.Size > s.maxSize {
		body.Close()
		return nil, tooLarge(p, s.maxSize)
	}
	r := &s3Reader{body: body, s: s, ctx: ctx, path: p}
	r.r = &limitReader{ctx: ctx, r: r.body, max: s.maxSize, path: p}
	return r, nil
}

type s3Reader struct {
	body io.ReadCloser
	r    io.Reader // body, capped
	s    *S3
	ctx  context.Context
	path string
}

func (r *s3Reader) Read(b []byte) (int, error) {
	n, err := r.r.Read(b)
	if err != nil && err != io.EOF && !errors.Is(err, ErrTooLarge) {
		err = r.s.fail(r.ctx, "read", r.path, err)
	}
	return n, err
}

func (r *s3Reader) Close() error { return r.body.Close() }

// Write uploads r to p as a multipart upload of PartSize parts, completed
// only after r reached EOF: an upload that fails or is interrupted is
// aborted and never leaves an object at p. Memory stays at about one part.
func (s *S3) Write(ctx context.Context, p string, r io.Reader) (int64, error) {
	bucket, key, err := s.Locate(p)
	if err != nil {
		return 0, err
	}
	cr := &countReader{r: &limitReader{ctx: ctx, r: r, max: s.maxSize, path: p}}
	opts := minio.PutObjectOptions{
		ContentType: "application/octet-stream",
		PartSize:    s.partSize,
	}
	if !s.noACL.Load() {
		opts.UserMetadata = map[string]string{"x-amz-acl": "private"}
	}
	// Size -1: always a streamed multipart upload (minio-go reads one part
	// into a buffer at a time and completes the upload only at EOF); a known
	// size would let it read an io.ReaderAt with several part buffers at once
	// or send small objects as one PUT.
	info, err := s.client.PutObject(ctx, bucket, key, cr, -1, opts)
	if err != nil && opts.UserMetadata != nil && cr.n == 0 && aclRefused(err) {
		// Buckets with ACLs disabled (S3 Object Ownership "bucket owner
		// enforced") refuse any ACL header; objects there are private anyway.
		s.noACL.Store(true)
		opts.UserMetadata = nil
		info, err = s.client.PutObject(ctx, bucket, key, cr, -1, opts)
	}
	if errors.Is(err, ErrTooLarge) {
		// The upload was aborted: nothing is left at p.
		return 0, err
	}
	if err != nil {
		return 0, s.fail(ctx, "write", p, err)
	}
	if info.Size != cr.n {
		return 0, s.fail(ctx, "write", p, fmt.Errorf("stored %d bytes of %d", info.Size, cr.n))
	}
	return cr.n, nil
}

// Exists reports whether an object exists at p.
func (s *S3) Exists(ctx context.Context, p string) (bool, error) {
	bucket, key, err := s.Locate(p)
	if err != nil {
		return false, err
	}
	if _, err := s.client.StatObject(ctx, bucket, key, minio.StatObjectOptions{}); err != nil {
		err = s.fail(ctx, "stat", p, err)
		if errors.Is(err, ErrNotFound) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

// Delete removes the object at p; a missing object is not an error.
func (s *S3) Delete(ctx context.Context, p string) error {
	bucket, key, err := s.Locate(p)
	if err != nil {
		return err
	}
	if err := s.client.RemoveObject(ctx, bucket, key, minio.RemoveObjectOptions{}); err != nil {
		err = s.fail(ctx, "delete", p, err)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		return err
	}
	return nil
}

// aclRefused reports a refusal of the x-amz-acl header.
func aclRefused(err error) bool {
	var resp minio.ErrorResponse
	if !errors.As(err, &resp) {
		return false
	}
	switch resp.Code {
	case "AccessControlListNotSupported", "NotImplemented", "InvalidArgument":
		return true
	}
	return false
}

// opError is a storage error: its text names the operation, path and cause,
// without credentials; it matches its kind (ErrNotFound, ErrUnauthorized,
// ErrUnavailable) and the original error with errors.Is/As.
type opError struct {
	kind error
	msg  string
	err  error
}

func (e *opError) Error() string { return e.msg }

func (e *opError) Unwrap() []error {
	var errs []error
	for _, err := range []error{e.kind, e.err} {
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// fail classifies a client error.
func (s *S3) fail(ctx context.Context, op, p string, err error) error {
	kind := classify(err)
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		kind = nil
	}
	var msg string
	switch kind {
	case ErrNotFound:
		msg = fmt.Sprintf("%v: %s (%s)", ErrNotFound, p, err)
	case nil:
		msg = fmt.Sprintf("storage: %s %s at %s: %s", op, p, s.endpoint, err)
	default:
		msg = fmt.Sprintf("%v: %s %s at %s: %s", kind, op, p, s.endpoint, err)
	}
	return &opError{kind: kind, msg: s.redact(msg), err: err}
}

func (s *S3) redact(msg string) string {
	for _, c := range s.redactors {
		msg = strings.ReplaceAll(msg, c, "[redacted]")
	}
	return msg
}

// classify maps an error of the S3 client onto ErrNotFound, ErrUnauthorized
// or ErrUnavailable (nil for anything else).
func classify(err error) error {
	var resp minio.ErrorResponse
	if errors.As(err, &resp) && (resp.Code != "" || resp.StatusCode != 0) {
		switch resp.Code {
		case "NoSuchKey", "NoSuchBucket", "NotFound", "NoSuchUpload":
			return ErrNotFound
		case "AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidToken",
			"ExpiredToken", "InvalidSecurity", "AuthorizationHeaderMalformed", "AccountProblem",
			"XAdminUserNotFound": // versitygw's answer to an unknown access key (with status 404)
			return ErrUnauthorized
		case "ServiceUnavailable", "SlowDown", "InternalError", "RequestTimeout":
			return ErrUnavailable
		}
		switch {
		case resp.StatusCode == http.StatusNotFound:
			return ErrNotFound
		case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
			return ErrUnauthorized
		case resp.StatusCode >= 500:
			return ErrUnavailable
		}
		return nil
	}
	var netErr net.Error
	var opErr *net.OpError
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &opErr), errors.As(err, &dnsErr), errors.As(err, &netErr),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, io.ErrUnexpectedEOF):
		return ErrUnavailable
	}
	return nil
}

// countReader counts the bytes read through it.
type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

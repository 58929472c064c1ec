package storage

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// DSN is a parsed storage connection string
// (scheme://user:password@host[:port]/bucket?region=..&insecure=..&url=..).
type DSN struct {
	Scheme   string // lower-cased
	User     string // URL-decoded
	Password string // URL-decoded
	Host     string // without port or IPv6 brackets
	Port     string // parsed but ignored by every device (use ?url= for a custom port)
	Bucket   string // the path without its leading and trailing "/"
	Params   url.Values
}

// ParseDSN parses a DSN. ok is false when it cannot be parsed or has no scheme
// or host, in which case the reference falls back to the local device.
//
// User and password are percent-decoded; a literal "+" stays a "+" (PHP's
// urldecode would turn it into a space and break secrets that contain one).
func ParseDSN(s string) (d DSN, ok bool) {
	u, err := url.Parse(strings.TrimSpace(s))
	if err != nil || u.Scheme == "" || u.Hostname() == "" {
		return DSN{}, false
	}
	d = DSN{Scheme: strings.ToLower(u.Scheme), Host: u.Hostname(), Port: u.Port(), Params: u.Query()}
	if u.User != nil {
		d.User = u.User.Username()
		d.Password, _ = u.User.Password()
	}
	d.Bucket = strings.Trim(u.Path, "/")
	return d, true
}

// Region is the region parameter ("" when absent).
func (d DSN) Region() string { return d.Params.Get("region") }

// Insecure reports insecure=true: the s3 host branch then speaks http.
func (d DSN) Insecure() bool { return d.Params.Get("insecure") == "true" }

// URL is the decoded url parameter, the endpoint of a generic S3 service
// ("" when absent; the reference treats "0" as absent too).
func (d DSN) URL() string {
	if v := d.Params.Get("url"); v != "0" {
		return v
	}
	return ""
}

// Validate checks a DSN at start-up, so a bad setting stops the daemon. It
// does not contact the service.
func Validate(dsn string) error {
	_, err := NewOpener(Config{DSN: dsn})
	return err
}

// Describe says in words, without credentials, which device a DSN selects:
// worth logging at start-up (the reference prints a warning when it falls
// back to the local device).
func Describe(dsn string) string {
	if strings.TrimSpace(dsn) == "" {
		return "local filesystem"
	}
	d, ok := ParseDSN(dsn)
	if !ok {
		return "local filesystem (the storage DSN has no scheme or host, or cannot be parsed)"
	}
	cfg, local, err := plan(dsn, "/")
	switch {
	case err != nil:
		return fmt.Sprintf("unusable %s DSN: %v", d.Scheme, err)
	case local && d.Scheme != "file" && d.Scheme != "local":
		return fmt.Sprintf("local filesystem (unknown storage scheme %q)", d.Scheme)
	case local:
		return "local filesystem"
	}
	scheme := "https"
	if !cfg.Secure {
		scheme = "http"
	}
	where := scheme + "://" + cfg.Endpoint
	if d.Scheme == "s3" && d.URL() == "" && d.Port != "" {
		where += fmt.Sprintf(" (the DSN's port %s is ignored, as in the reference: use ?url= for a custom port)", d.Port)
	}
	if cfg.Bucket != "" {
		return fmt.Sprintf("%s bucket %q at %s (virtual-hosted), region %s", cfg.Kind, cfg.Bucket, where, cfg.Region)
	}
	return fmt.Sprintf("%s at %s, object paths start with the bucket (root %q), region %s", cfg.Kind, where, cfg.Root, cfg.Region)
}

// plan turns a DSN and a root into an S3 configuration, or says local.
func plan(dsn, root string) (cfg S3Config, local bool, err error) {
	if root == "" {
		root = "/"
	}
	d, ok := ParseDSN(dsn)
	if !ok {
		return S3Config{}, true, nil
	}
	cfg = S3Config{Kind: d.Scheme, Region: d.Region(), AccessKey: d.User, SecretKey: d.Password, Root: root}
	switch d.Scheme {
	case "s3":
		err = planS3(&cfg, d, root)
	case "dospaces", "backblaze", "linode", "wasabi":
		err = planProvider(&cfg, d)
	default: // file, local and anything unknown
		return S3Config{}, true, nil
	}
	if err != nil {
		return S3Config{}, false, fmt.Errorf("storage: %s DSN: %w", d.Scheme, err)
	}
	return cfg, false, nil
}

// bucketRoot is the reference's root rule for generic S3 devices: the bucket
// leads the root, "bucket" alone for "/", the root unchanged without a bucket.
func bucketRoot(bucket, root string) string {
	if bucket == "" {
		return root
	}
	if r := strings.Trim(root, "/"); r != "" {
		return bucket + "/" + r
	}
	return bucket
}

func planS3(cfg *S3Config, d DSN, root string) error {
	bucket := d.Bucket
	if raw := d.URL(); raw != "" {
		// Generic S3-compatible service at an explicit endpoint, path-style.
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return errors.New("the url parameter must be an http:// or https:// endpoint (URL-encoded)")
		}
		if p := strings.Trim(u.Path, "/"); p != "" {
			switch {
			case bucket == "":
				bucket = p
			case p != bucket:
				return fmt.Errorf("the url parameter carries the path %q but the DSN names the bucket %q", p, bucket)
			}
		}
		cfg.Endpoint, cfg.Secure, cfg.PathStyle = u.Host, u.Scheme == "https", true
		cfg.Root = bucketRoot(bucket, root)
	} else {
		// https://<host> (http with insecure=true); the port is ignored as in
		// the reference.
		host := d.Host
		if strings.Contains(host, ":") {
			host = "[" + host + "]"
		}
		cfg.Endpoint, cfg.Secure = host, !d.Insecure()
		cfg.Root = bucketRoot(bucket, root)
		if vb, endpoint, region, ok := awsVirtualHost(d.Host); ok {
			// <bucket>.s3.<region>.amazonaws.com names its bucket: object
			// paths are keys in it. A DSN path naming the same bucket leads
			// the root and is not repeated in the key.
			cfg.Endpoint = endpoint
			if cfg.Region == "" {
				cfg.Region = region
			}
			if bucket != vb {
				cfg.Bucket = vb
			}
		}
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	return nil
}

// awsVirtualHost splits "<bucket>.s3.<region>.amazonaws.com" (also the
// "s3-<region>" and global "s3" forms) into bucket, endpoint and region.
func awsVirtualHost(host string) (bucket, endpoint, region string, ok bool) {
	h := strings.ToLower(host)
	if !strings.HasSuffix(h, ".amazonaws.com") && !strings.HasSuffix(h, ".amazonaws.com.cn") {
		return "", "", "", false
	}
	i := max(strings.LastIndex(h, ".s3."), strings.LastIndex(h, ".s3-"))
	if i <= 0 {
		return "", "", "", false
	}
	bucket, endpoint = host[:i], h[i+1:]
	// s3.<region>.amazonaws.com or s3-<region>.amazonaws.com
	rest := strings.TrimPrefix(strings.TrimPrefix(endpoint, "s3"), ".")
	rest = strings.TrimPrefix(rest, "-")
	if j := strings.Index(rest, "."); j > 0 && !strings.HasPrefix(rest, "amazonaws.") && !strings.HasPrefix(rest, "dualstack.") {
		region = rest[:j]
	}
	if region == "accelerate" {
		region = ""
	}
	return bucket, endpoint, region, true
}

// providerEndpoints are the virtual-hosted providers' endpoints for a
// region; the bucket is prepended as a DNS label. The DSN host is ignored.
var providerEndpoints = map[string]string{
	"dospaces":  "%s.digitaloceanspaces.com",
	"backblaze": "s3.%s.backblazeb2.com",
	"linode":    "%s.linodeobjects.com",
	"wasabi":    "s3.%s.wasabisys.com",
}

func planProvider(cfg *S3Config, d DSN) error {
	if d.Bucket == "" || strings.Contains(d.Bucket, "/") {
		return fmt.Errorf("the path must name one bucket (%s://KEY:SECRET@host/BUCKET?region=REGION)", d.Scheme)
	}
	if cfg.Region == "" {
		return fmt.Errorf("the region parameter is required (%s://KEY:SECRET@host/BUCKET?region=REGION)", d.Scheme)
	}
	if strings.ContainsAny(cfg.Region, "/:@?#[] ") {
		return fmt.Errorf("invalid region %q", cfg.Region)
	}
	cfg.Endpoint = fmt.Sprintf(providerEndpoints[d.Scheme], cfg.Region)
	cfg.Secure = true
	cfg.Bucket = d.Bucket
	return nil
}

// hasDotDot reports a ".." path segment.
func hasDotDot(p string) bool {
	for _, seg := range strings.Split(p, "/") {
		if seg == ".." {
			return true
		}
	}
	return false
}

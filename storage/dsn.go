package storage

import (
	"fmt"
	"net/url"
	"strings"
)

// DSN is a parsed storage connection string
// (scheme://user:password@host[:port]/bucket?region=..&insecure=..&url=..).
type DSN struct {
	Scheme   string
	User     string
	Password string
	Host     string
	Bucket   string
	Params   url.Values
}

// ParseDSN parses a DSN. ok is false when it cannot be parsed or has no scheme
// or host, in which case the reference falls back to the local device.
func ParseDSN(s string) (d DSN, ok bool) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return DSN{}, false
	}
	d = DSN{Scheme: strings.ToLower(u.Scheme), Host: u.Hostname(), Params: u.Query()}
	if u.User != nil {
		d.User = u.User.Username()
		d.Password, _ = u.User.Password()
	}
	d.Bucket = strings.TrimPrefix(u.Path, "/")
	return d, true
}

// Open returns the device a DSN names, with the given root ("/" for sources,
// the destination directory for artifacts). An empty or unparsable DSN is the
// local filesystem, as in the reference.
func Open(dsn, root string) (Device, error) {
	d, ok := ParseDSN(dsn)
	if !ok {
		return NewLocal(root)
	}
	switch d.Scheme {
	case "file", "local":
		return NewLocal(root)
	case "s3", "dospaces", "backblaze", "linode", "wasabi":
		return nil, fmt.Errorf("storage: the %s device is not available in this build yet (use file://localhost)", d.Scheme)
	default:
		return NewLocal(root)
	}
}

// Validate checks a DSN at start-up, so a bad setting stops the daemon.
func Validate(dsn string) error {
	_, err := Open(dsn, "/")
	return err
}

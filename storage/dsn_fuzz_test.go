package storage

import (
	"errors"
	"net/url"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7/pkg/s3utils"
)

// dsnSeeds are DSNs as operators write them (the reference's StorageFactoryTest, the README's examples) and
// broken ones.
var dsnSeeds = []string{
	"",
	"local://localhost",
	"file:///storage",
	"s3://AKIAIOSFODNN7EXAMPLE:wJalrXUtnFEMI%2FK7MDENG%2BbPxRfiCYEXAMPLEKEY@s3.us-east-1.amazonaws.com/my-bucket?region=us-east-1",
	"s3://k:s@localhost/mybucket?region=us-east-1&url=http%3A%2F%2Fminio%3A9000",
	"s3://k:s@localhost?region=us-east-1&url=http%3A%2F%2Fminio%3A9000%2Fpathbucket",
	"s3://k:s@minio:9000/mybucket?region=us-east-1&insecure=true",
	"s3://AKIAEXAMPLE:supersecret123@minio:9000/b?insecure=true",
	"s3://minioadmin:minioadmin-secret@localhost?url=http%3A%2F%2Fminio%3A9000%2Fbucket",
	"s3://k:s@mybucket.s3.us-east-1.amazonaws.com?region=us-east-1",
	"s3://k:s@mybucket.s3-eu-west-1.amazonaws.com/mybucket",
	"s3://k:s@b.s3.dualstack.us-east-1.amazonaws.com",
	"s3://k:s@[::1]:9000/b?insecure=true",
	"dospaces://key:secret@nyc3.digitaloceanspaces.com/space?region=nyc3",
	"backblaze://key:secret@s3.us-west-004.backblazeb2.com/bucket?region=us-west-004",
	"linode://key:secret@eu-central-1.linodeobjects.com/bucket?region=eu-central-1",
	"wasabi://key:secret@s3.wasabisys.com/bucket?region=us-east-1",
	"wasabi://key:secret@h/bucket/sub?region=a/b",
	"s3://k:p%2Bss%20word@h/b?url=ftp%3A%2F%2Fx",
	"s3://k:s@h/b?url=0",
	"S3://K:S@H/B/",
	"s3://:@/",
	"s3://k:s@h/..%2F..?region=%00",
	"unknown://u:p@host/x",
	"  s3://k:secret-key-1234@host/bucket  ",
	"s3://k:s@h%zz/b",
}

// FuzzParseDSN checks the DSN parser and what is built on it: ParseDSN's fields are as documented, Describe and
// every error leave the credentials out, and an Opener that accepts a DSN opens any device root under it.
func FuzzParseDSN(f *testing.F) {
	for _, s := range dsnSeeds {
		f.Add(s)
	}
	// With SSL_CERT_FILE set, minio.New parses that whole bundle for every https device it makes (a few ms,
	// most of this target's time); the certificates play no part in what is checked here.
	f.Setenv("SSL_CERT_FILE", "")
	f.Fuzz(func(t *testing.T, dsn string) {
		d, ok := ParseDSN(dsn)
		if ok {
			switch {
			case d.Scheme == "" || d.Scheme != strings.ToLower(d.Scheme):
				t.Fatalf("scheme %q", d.Scheme)
			case d.Host == "":
				t.Fatal("ok without a host")
			case strings.HasPrefix(d.Bucket, "/") || strings.HasSuffix(d.Bucket, "/"):
				t.Fatalf("bucket %q keeps its slashes", d.Bucket)
			}
		}

		// A credential may show only where it is no credential: when it also appears in the DSN outside its
		// user info (a host named like the password), or is too short to tell from other words.
		var secrets []string
		if ok {
			rest := withoutUserinfo(dsn)
			for _, c := range []string{d.Password, d.User} {
				if len(c) >= 6 && !strings.Contains(rest, c) {
					secrets = append(secrets, c)
				}
			}
		}
		leaks := func(what, s string) {
			for _, c := range secrets {
				if strings.Contains(s, c) {
					t.Fatalf("%s shows the credential %q: %s", what, c, s)
				}
			}
		}
		leaks("Describe", Describe(dsn))

		o, err := NewOpener(Config{DSN: dsn, LocalRoots: []string{"/storage"}})
		if err != nil {
			leaks("NewOpener's error", err.Error())
			return
		}
		if o.Local() {
			return
		}
		// NewOpener opened the root "/"; a build's destination must open as well.
		dev, err := o.Open(testRoot)
		if err != nil {
			leaks("Open's error", err.Error())
			t.Fatalf("Open(%q) of an accepted DSN: %v", testRoot, err)
		}
		if _, _, err := dev.(*S3).Locate("x/artifact.tar.gz"); err != nil {
			leaks("Locate's error", err.Error())
		}
	})
}

// withoutUserinfo is dsn without its user info, to tell a credential from the same text elsewhere.
func withoutUserinfo(dsn string) string {
	s := strings.TrimSpace(dsn)
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		return s
	}
	authority, tail, _ := strings.Cut(rest, "/")
	if i := strings.LastIndex(authority, "@"); i >= 0 {
		authority = authority[i+1:]
	}
	out := scheme + "://" + authority + "/" + tail
	if u, err := url.PathUnescape(out); err == nil {
		out += " " + u
	}
	if u, err := url.QueryUnescape(out); err == nil {
		out += " " + u
	}
	return out
}

// FuzzDevicePath checks the promise both devices make about object paths: whatever p is, the object it names is
// beneath the device's root ("Relative paths are taken relative to the device root, and so is an absolute path
// outside it"), with no ".." segment, and for S3 in a valid bucket.
func FuzzDevicePath(f *testing.F) {
	for _, p := range []string{
		"artifact.tar.gz", "/storage/builds/app-test/code.tar.gz", "/etc/passwd", "../../etc/passwd",
		"a/../../b", "/storage/builds/app-test/../x", "//double//slash/", "./.", "/", "", "a\x00b", "..",
		"storage/builds/app-test", "\\..\\x", "/storage/builds/app-test-other/x", "%2e%2e/x",
	} {
		f.Add(p)
	}
	o, err := NewOpener(Config{LocalRoots: []string{"/storage"}})
	if err != nil {
		f.Fatal(err)
	}
	local := o.localDevice(testRoot)
	devices := map[string]*S3{}
	for name, cfg := range map[string]S3Config{
		"path-style":   {Endpoint: "minio:9000", PathStyle: true, Root: "mybucket/storage/builds/app-test"},
		"bucketless":   {Endpoint: "minio:9000", PathStyle: true, Root: testRoot},
		"virtual host": {Endpoint: "s3.us-east-1.amazonaws.com", Bucket: "mybucket", Root: testRoot},
		"root /":       {Endpoint: "nyc3.digitaloceanspaces.com", Bucket: "space", Root: "/"},
	} {
		s, err := NewS3(cfg)
		if err != nil {
			f.Fatal(err)
		}
		devices[name] = s
	}
	f.Fuzz(func(t *testing.T, p string) {
		if root, rel, err := local.resolve(p); err == nil {
			full := filepath.Join(root, rel)
			switch {
			case root != "/storage":
				t.Fatalf("local %q: root %q", p, root)
			case hasDotDot(rel) || strings.HasPrefix(rel, "/"):
				t.Fatalf("local %q: name %q beneath %s", p, rel, root)
			case full != testRoot && !strings.HasPrefix(full, testRoot+"/"):
				t.Fatalf("local %q resolves to %s, outside the device root %s", p, full, testRoot)
			}
		} else if !errors.Is(err, ErrInvalidPath) && !errors.Is(err, ErrOutsideRoots) {
			t.Fatalf("local %q: %v is neither ErrInvalidPath nor ErrOutsideRoots", p, err)
		}
		for name, s := range devices {
			bucket, key, err := s.Locate(p)
			if err != nil {
				if !errors.Is(err, ErrInvalidPath) {
					t.Fatalf("%s %q: %v is not ErrInvalidPath", name, p, err)
				}
				continue
			}
			object := key
			if s.bucket == "" {
				object = bucket + "/" + key
			}
			switch {
			case hasDotDot(key) || strings.HasPrefix(key, "/") || key == "" || path.Clean(key) != key:
				t.Fatalf("%s %q: key %q", name, p, key)
			case s3utils.CheckValidBucketName(bucket) != nil:
				t.Fatalf("%s %q: bucket %q", name, p, bucket)
			case s.prefix != "" && object != s.prefix && !strings.HasPrefix(object, s.prefix+"/"):
				t.Fatalf("%s %q: object %s/%s is outside the root %s", name, p, bucket, key, s.prefix)
			}
		}
	})
}

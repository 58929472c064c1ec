package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
)

const testRoot = "/storage/builds/app-test"

// openDev opens the device of dsn at root, with /storage as the local
// storage root.
func openDev(dsn, root string) (Device, error) {
	o, err := NewOpener(Config{DSN: dsn, LocalRoots: []string{"/storage"}})
	if err != nil {
		return nil, err
	}
	return o.Open(root)
}

// The cases of the reference's StorageFactoryTest (spec §9 "Unit tests pin").
func TestOpenSpecCases(t *testing.T) {
	tests := []struct {
		name, dsn, root string
		local           bool
		wantRoot        string
		// for S3 devices: where the artifact <root>/artifact.tar.gz goes
		wantEndpoint, wantBucket, wantKey string
		wantSecure                        bool
	}{
		{name: "empty", dsn: "", root: testRoot, local: true, wantRoot: testRoot},
		{name: "blank", dsn: "  ", root: testRoot, local: true, wantRoot: testRoot},
		{name: "no host", dsn: "s3://k:s@/b?region=us-east-1", root: testRoot, local: true, wantRoot: testRoot},
		{name: "url and bucket", root: testRoot,
			dsn:      "s3://k:s@localhost/mybucket?region=us-east-1&url=http%3A%2F%2Fminio%3A9000",
			wantRoot: "mybucket/storage/builds/app-test", wantEndpoint: "minio:9000",
			wantBucket: "mybucket", wantKey: "storage/builds/app-test/artifact.tar.gz"},
		{name: "url and bucket, root /", root: "/",
			dsn:      "s3://k:s@localhost/mybucket?region=us-east-1&url=http%3A%2F%2Fminio%3A9000",
			wantRoot: "mybucket", wantEndpoint: "minio:9000", wantBucket: "mybucket", wantKey: "artifact.tar.gz"},
		{name: "url without bucket", root: testRoot,
			dsn:      "s3://k:s@localhost?region=us-east-1&url=http%3A%2F%2Fminio%3A9000",
			wantRoot: testRoot, wantEndpoint: "minio:9000", wantBucket: "storage", wantKey: "builds/app-test/artifact.tar.gz"},
		{name: "host, bucket, insecure (port ignored)", root: testRoot,
			dsn:      "s3://k:s@minio:9000/mybucket?region=us-east-1&insecure=true",
			wantRoot: "mybucket/storage/builds/app-test", wantEndpoint: "minio",
			wantBucket: "mybucket", wantKey: "storage/builds/app-test/artifact.tar.gz"},
		{name: "virtual host without bucket", root: testRoot,
			dsn:      "s3://k:s@mybucket.s3.us-east-1.amazonaws.com?region=us-east-1",
			wantRoot: testRoot, wantEndpoint: "s3.us-east-1.amazonaws.com", wantSecure: true,
			wantBucket: "mybucket", wantKey: "storage/builds/app-test/artifact.tar.gz"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dev, err := openDev(tc.dsn, tc.root)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if got := dev.Root(); got != tc.wantRoot {
				t.Fatalf("Root() = %q, want %q", got, tc.wantRoot)
			}
			if tc.local {
				if _, ok := dev.(*Local); !ok {
					t.Fatalf("got %T, want *Local", dev)
				}
				return
			}
			s, ok := dev.(*S3)
			if !ok {
				t.Fatalf("got %T, want *S3", dev)
			}
			if got := s.client.EndpointURL().Host; got != tc.wantEndpoint {
				t.Errorf("endpoint %q, want %q", got, tc.wantEndpoint)
			}
			if got := s.client.EndpointURL().Scheme == "https"; got != tc.wantSecure {
				t.Errorf("https = %v, want %v", got, tc.wantSecure)
			}
			artifact := strings.TrimRight(dev.Root(), "/") + "/artifact.tar.gz"
			if !strings.HasSuffix(artifact, "/artifact.tar.gz") || strings.Contains(artifact, "//") {
				t.Fatalf("artifact path %q", artifact)
			}
			b, k, err := s.Locate(artifact)
			if err != nil || b != tc.wantBucket || k != tc.wantKey {
				t.Fatalf("Locate(%q) = %q, %q, %v; want %q, %q", artifact, b, k, err, tc.wantBucket, tc.wantKey)
			}
		})
	}
}

func TestOpenLocalFallbacks(t *testing.T) {
	for _, dsn := range []string{
		"", "file://localhost", "file:///tmp", "local://localhost", "local://localhost/storage",
		"ftp://accessKey:secret@minio/mybucket",   // unknown scheme
		"s3x://accessKey:secret@minio/mybucket",   // misspelled scheme
		"accessKey:secret@minio/mybucket",         // no scheme
		"s3://accessKey:secret@minio:port/bucket", // unparsable port
		"s3://accessKey:secret@/mybucket?region=garage",
		"://nothing", "s3://%zz@host/bucket",
	} {
		dev, err := openDev(dsn, testRoot)
		if err != nil {
			t.Fatalf("Open(%q): %v", dsn, err)
		}
		if l, ok := dev.(*Local); !ok || l.Root() != testRoot {
			t.Fatalf("Open(%q) = %T %q, want the local device at %s", dsn, dev, dev.Root(), testRoot)
		}
		if err := Validate(dsn); err != nil {
			t.Fatalf("Validate(%q): %v", dsn, err)
		}
		if d := Describe(dsn); !strings.HasPrefix(d, "local filesystem") || strings.Contains(d, "secret") {
			t.Fatalf("Describe(%q) = %q", dsn, d)
		}
	}
}

func TestParseDSN(t *testing.T) {
	d, ok := ParseDSN("S3://AK%2Bx:se%2Fcr%40et+plus@Host.Example:9000//my-bucket/?region=eu-west-1&insecure=true&url=http%3A%2F%2Fh%3A1")
	if !ok {
		t.Fatal("not parsed")
	}
	want := DSN{Scheme: "s3", User: "AK+x", Password: "se/cr@et+plus", Host: "Host.Example", Port: "9000", Bucket: "my-bucket"}
	if d.Scheme != want.Scheme || d.User != want.User || d.Password != want.Password || d.Host != want.Host ||
		d.Port != want.Port || d.Bucket != want.Bucket {
		t.Fatalf("ParseDSN = %+v", d)
	}
	if d.Region() != "eu-west-1" || !d.Insecure() || d.URL() != "http://h:1" {
		t.Fatalf("params: %q %v %q", d.Region(), d.Insecure(), d.URL())
	}
	if d, _ := ParseDSN("s3://k:s@h/b?insecure=yes&url=0"); d.Insecure() || d.URL() != "" {
		t.Fatalf("insecure=yes or url=0 taken: %+v", d)
	}
	if _, ok := ParseDSN("s3://k:s@[::1]:9000/b"); !ok {
		t.Fatal("IPv6 host not parsed")
	}
}

func TestOpenProviders(t *testing.T) {
	tests := []struct{ dsn, endpoint, bucket string }{
		{"dospaces://key:secret@fra1.digitaloceanspaces.com/mybucket?region=fra1", "fra1.digitaloceanspaces.com", "mybucket"},
		{"dospaces://key:secret@ignored.example/mybucket?region=nyc3", "nyc3.digitaloceanspaces.com", "mybucket"},
		{"backblaze://key:secret@backblazeb2.com/mybucket?region=us-west-004", "s3.us-west-004.backblazeb2.com", "mybucket"},
		{"linode://key:secret@linodeobjects.com/mybucket?region=eu-central-1", "eu-central-1.linodeobjects.com", "mybucket"},
		{"wasabi://key:secret@wasabisys.com/mybucket?region=eu-central-1", "s3.eu-central-1.wasabisys.com", "mybucket"},
	}
	for _, tc := range tests {
		dev, err := openDev(tc.dsn, testRoot)
		if err != nil {
			t.Fatalf("Open(%s): %v", tc.dsn, err)
		}
		s := dev.(*S3)
		if s.client.EndpointURL().String() != "https://"+tc.endpoint || s.bucket != tc.bucket || s.Root() != testRoot {
			t.Fatalf("%s: endpoint %s bucket %q root %q", tc.dsn, s.client.EndpointURL(), s.bucket, s.Root())
		}
		b, k, err := s.Locate(testRoot + "/x.gz")
		if err != nil || b != tc.bucket || k != "storage/builds/app-test/x.gz" {
			t.Fatalf("Locate = %q %q %v", b, k, err)
		}
	}
	for _, dsn := range []string{
		"dospaces://key:Sup3rSecret@fra1.digitaloceanspaces.com/mybucket",           // no region
		"wasabi://key:Sup3rSecret@wasabisys.com?region=eu-central-1",                // no bucket
		"linode://key:Sup3rSecret@linodeobjects.com/a/b?region=eu-central-1",        // not one bucket
		"s3://key:Sup3rSecret@localhost/b?url=ftp%3A%2F%2Fx",                        // bad url
		"s3://key:Sup3rSecret@localhost/bucket?url=http%3A%2F%2Fh%3A1%2Fother",      // url path disagrees
		"backblaze://key:Sup3rSecret@backblazeb2.com/Bad_Bucket?region=us-west-004", // invalid bucket name
	} {
		err := Validate(dsn)
		if err == nil {
			t.Fatalf("Validate(%s) accepted it", dsn)
		}
		if strings.Contains(err.Error(), "Sup3rSecret") || strings.Contains(Describe(dsn), "Sup3rSecret") {
			t.Fatalf("error shows the secret: %v", err)
		}
	}
}

func TestOpenRefusesDotDotRoot(t *testing.T) {
	for _, dsn := range []string{"", "s3://k:s@h/b?url=http%3A%2F%2Fh%3A1"} {
		if _, err := openDev(dsn, "/storage/../etc"); !errors.Is(err, ErrInvalidPath) {
			t.Fatalf("Open(%q, /storage/../etc) = %v", dsn, err)
		}
	}
}

func TestS3Locate(t *testing.T) {
	path := openS3(t, "s3://k:s@localhost/mybucket?url=http%3A%2F%2Fminio%3A9000", testRoot)
	virt := openS3(t, "s3://k:s@mybucket.s3.eu-west-1.amazonaws.com", "/")
	tests := []struct {
		dev            *S3
		p, bucket, key string
		invalid        bool
	}{
		{dev: path, p: "mybucket/storage/builds/app-test/a.gz", bucket: "mybucket", key: "storage/builds/app-test/a.gz"},
		{dev: path, p: "/mybucket/storage/builds/app-test/a.gz", bucket: "mybucket", key: "storage/builds/app-test/a.gz"},
		{dev: path, p: "a.gz", bucket: "mybucket", key: "storage/builds/app-test/a.gz"},
		{dev: path, p: "/elsewhere/a.gz", bucket: "mybucket", key: "storage/builds/app-test/elsewhere/a.gz"},
		{dev: path, p: "x//./y", bucket: "mybucket", key: "storage/builds/app-test/x/y"},
		{dev: path, p: "../a.gz", invalid: true},
		{dev: path, p: "mybucket/storage/builds/app-test/../../x", invalid: true},
		{dev: path, p: "a/..", invalid: true},
		{dev: path, p: "", invalid: true},
		{dev: path, p: "/", invalid: true},
		{dev: path, p: "dir/", invalid: true},
		{dev: path, p: "a\x00b", invalid: true},
		{dev: virt, p: "/storage/functions/x/code.tar.gz", bucket: "mybucket", key: "storage/functions/x/code.tar.gz"},
		{dev: virt, p: "storage/functions/x/code.tar.gz", bucket: "mybucket", key: "storage/functions/x/code.tar.gz"},
		{dev: virt, p: "/storage/../x", invalid: true},
	}
	for _, tc := range tests {
		b, k, err := tc.dev.Locate(tc.p)
		if tc.invalid {
			if !errors.Is(err, ErrInvalidPath) {
				t.Errorf("Locate(%q) = %q %q %v, want ErrInvalidPath", tc.p, b, k, err)
			}
			continue
		}
		if err != nil || b != tc.bucket || k != tc.key {
			t.Errorf("Locate(%q) = %q %q %v, want %q %q", tc.p, b, k, err, tc.bucket, tc.key)
		}
	}
	// A path-style device whose path names the bucket itself.
	src := openS3(t, "s3://k:s@localhost?url=http%3A%2F%2Fminio%3A9000", "/")
	if _, _, err := src.Locate("/onlybucket"); !errors.Is(err, ErrInvalidPath) {
		t.Fatalf("Locate(/onlybucket) = %v", err)
	}
}

// fakeS3 is an http.RoundTripper that plays an S3 service well enough for
// one upload, and records the requests.
type fakeS3 struct {
	mu        sync.Mutex
	reqs      []string // METHOD URL (without query) [acl]
	refuseACL bool
}

func (f *fakeS3) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
	}
	u := *r.URL
	u.RawQuery = ""
	line := r.Method + " " + u.String()
	if acl := r.Header.Get("x-amz-acl"); acl != "" {
		line += " acl=" + acl
	}
	f.mu.Lock()
	f.reqs = append(f.reqs, line)
	f.mu.Unlock()
	resp := func(code int, body string, hdr ...string) (*http.Response, error) {
		h := http.Header{"Content-Type": {"application/xml"}}
		for i := 0; i+1 < len(hdr); i += 2 {
			h.Set(hdr[i], hdr[i+1])
		}
		return &http.Response{StatusCode: code, Header: h, Body: io.NopCloser(strings.NewReader(body)),
			ContentLength: int64(len(body)), Request: r, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}, nil
	}
	q := r.URL.Query()
	switch {
	case r.Method == http.MethodPost && q.Has("uploads"):
		if f.refuseACL && r.Header.Get("x-amz-acl") != "" {
			return resp(400, `<Error><Code>AccessControlListNotSupported</Code><Message>The bucket does not allow ACLs</Message></Error>`)
		}
		return resp(200, `<InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key><UploadId>up1</UploadId></InitiateMultipartUploadResult>`)
	case r.Method == http.MethodPut && q.Has("partNumber"):
		return resp(200, "", "ETag", `"0123456789abcdef0123456789abcdef"`)
	case r.Method == http.MethodPost && q.Has("uploadId"):
		return resp(200, `<CompleteMultipartUploadResult><Bucket>b</Bucket><Key>k</Key><ETag>"e-1"</ETag></CompleteMultipartUploadResult>`)
	case r.Method == http.MethodHead:
		return resp(404, "")
	}
	return resp(501, `<Error><Code>NotImplemented</Code><Message>fake</Message></Error>`)
}

// The URL each DSN sends an object to (the reference's
// testConnectionResolvesToObjectUrl, with §9's port rule).
func TestDeviceObjectURLs(t *testing.T) {
	const key = "wal-archive/db-abc/000000010000000000000001"
	tests := []struct{ dsn, root, path, url string }{
		{"s3://key:secret@host.internal:30000/storage?insecure=true", "/", key,
			"http://host.internal/storage/" + key},
		{"s3://key:secret@localhost/mybucket?region=garage&url=" + "http%3A%2F%2F127.0.0.1%3A3900", "/", key,
			"http://127.0.0.1:3900/mybucket/" + key},
		{"s3://key:secret@localhost/mybucket?region=garage&url=" + "http%3A%2F%2F127.0.0.1%3A3900%2Fmybucket", "/", key,
			"http://127.0.0.1:3900/mybucket/" + key},
		{"s3://user:password@minio.edge.svc.cluster.local/storage?insecure=true", "/", key,
			"http://minio.edge.svc.cluster.local/storage/" + key},
		{"s3://user:password@minio.edge.svc.cluster.local?insecure=true", "/", key,
			"http://minio.edge.svc.cluster.local/" + key},
		{"s3://user:password@minio.edge.svc.cluster.local/storage?insecure=true", "/build-cache", "cache-key/lz4-b1M/stores.sqfs",
			"http://minio.edge.svc.cluster.local/storage/build-cache/cache-key/lz4-b1M/stores.sqfs"},
		{"s3://key:secret@mybucket.s3.us-east-1.amazonaws.com?region=us-east-1", "/", key,
			"https://mybucket.s3.us-east-1.amazonaws.com/" + key},
		{"s3://key:secret@mybucket.s3.us-east-1.amazonaws.com/mybucket?region=us-east-1", "/", key,
			"https://mybucket.s3.us-east-1.amazonaws.com/" + key},
		{"s3://key:secret@s3.eu-west-1.amazonaws.com/backups?region=eu-west-1", "/", key,
			"https://backups.s3.eu-west-1.amazonaws.com/" + key},
		{"dospaces://key:secret@fra1.digitaloceanspaces.com/appwrite-backups?region=fra1", "/", key,
			"https://appwrite-backups.fra1.digitaloceanspaces.com/" + key},
		{"backblaze://key:secret@backblazeb2.com/mybucket?region=us-west-004", "/", key,
			"https://mybucket.s3.us-west-004.backblazeb2.com/" + key},
		{"linode://key:secret@linodeobjects.com/mybucket?region=eu-central-1", "/", key,
			"https://mybucket.eu-central-1.linodeobjects.com/" + key},
		{"wasabi://key:secret@wasabisys.com/mybucket?region=eu-central-1", "/", key,
			"https://mybucket.s3.eu-central-1.wasabisys.com/" + key},
	}
	for _, tc := range tests {
		t.Run(tc.dsn, func(t *testing.T) {
			cfg, local, err := plan(tc.dsn, tc.root)
			if err != nil || local {
				t.Fatalf("plan: %v local=%v", err, local)
			}
			fake := &fakeS3{}
			cfg.Transport = fake
			dev, err := NewS3(cfg)
			if err != nil {
				t.Fatal(err)
			}
			p := strings.TrimRight(dev.Root(), "/") + "/" + tc.path
			if n, err := dev.Write(context.Background(), p, strings.NewReader("wal")); err != nil || n != 3 {
				t.Fatalf("Write(%s) = %d, %v", p, n, err)
			}
			if len(fake.reqs) != 3 {
				t.Fatalf("requests: %q", fake.reqs)
			}
			for _, r := range fake.reqs {
				_, rest, _ := strings.Cut(r, " ")
				u, _, _ := strings.Cut(rest, " ")
				if u != tc.url {
					t.Fatalf("request %q, want the object URL %s", r, tc.url)
				}
			}
			if !strings.HasSuffix(fake.reqs[0], " acl=private") {
				t.Fatalf("the upload is not created private: %q", fake.reqs[0])
			}
		})
	}
}

func TestS3WriteWithoutACLSupport(t *testing.T) {
	cfg, _, err := plan("s3://k:s@localhost/mybucket?url=http%3A%2F%2Fminio%3A9000", "/")
	if err != nil {
		t.Fatal(err)
	}
	fake := &fakeS3{refuseACL: true}
	cfg.Transport = fake
	dev, err := NewS3(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if _, err := dev.Write(context.Background(), fmt.Sprintf("a%d", i), bytes.NewReader([]byte("data"))); err != nil {
			t.Fatalf("Write: %v (requests %q)", err, fake.reqs)
		}
	}
	want := []string{
		"POST http://minio:9000/mybucket/a0 acl=private", // refused
		"POST http://minio:9000/mybucket/a0", "PUT http://minio:9000/mybucket/a0", "POST http://minio:9000/mybucket/a0",
		"POST http://minio:9000/mybucket/a1", "PUT http://minio:9000/mybucket/a1", "POST http://minio:9000/mybucket/a1",
	}
	if strings.Join(fake.reqs, "\n") != strings.Join(want, "\n") {
		t.Fatalf("requests:\n%s\nwant:\n%s", strings.Join(fake.reqs, "\n"), strings.Join(want, "\n"))
	}
}

func TestDescribe(t *testing.T) {
	for dsn, want := range map[string]string{
		"s3://k:TopSecret1@localhost/mybucket?url=http%3A%2F%2Fminio%3A9000": "s3 at http://minio:9000",
		"dospaces://k:TopSecret1@x/mybucket?region=fra1":                     `dospaces bucket "mybucket" at https://fra1.digitaloceanspaces.com`,
		"ftp://k:TopSecret1@x/b":                                             "local filesystem (unknown storage scheme",
		"dospaces://k:TopSecret1@x/mybucket":                                 "unusable dospaces DSN",
	} {
		got := Describe(dsn)
		if !strings.HasPrefix(got, want) || strings.Contains(got, "TopSecret1") {
			t.Errorf("Describe(%s) = %q, want prefix %q", dsn, got, want)
		}
	}
}

func TestDescribePortIgnored(t *testing.T) {
	got := Describe("s3://k:s@minio:9000/b?insecure=true")
	if !strings.Contains(got, "http://minio (the DSN's port 9000 is ignored") {
		t.Fatalf("Describe = %q", got)
	}
}

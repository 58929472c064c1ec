package storage

import (
	"strings"
	"testing"
)

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestDSNFromEnv(t *testing.T) {
	const secret = "wJalr/XUtn+FEMI=K7MD"
	tests := []struct {
		name string
		env  map[string]string
		want string // "" = local
		// what openDev(dsn, testRoot) must give for S3 devices
		endpoint, bucket, root string
		wantErr                string // a variable the error must name
	}{
		{name: "nothing set", env: map[string]string{}},
		{name: "DSN only",
			env:  map[string]string{EnvStorage: " s3://k:s@localhost/b?url=http%3A%2F%2Fminio%3A9000 "},
			want: "s3://k:s@localhost/b?url=http%3A%2F%2Fminio%3A9000", endpoint: "http://minio:9000", root: "b/storage/builds/app-test"},
		{name: "DSN wins over the legacy variables",
			env: map[string]string{EnvStorage: "s3://k:s@localhost/b?url=http%3A%2F%2Fminio%3A9000",
				"OPR_EXECUTOR_STORAGE_DEVICE": "dospaces", "OPR_EXECUTOR_STORAGE_DO_SPACES_BUCKET": "x"},
			want: "s3://k:s@localhost/b?url=http%3A%2F%2Fminio%3A9000", endpoint: "http://minio:9000", root: "b/storage/builds/app-test"},
		{name: "legacy local", env: map[string]string{"OPR_EXECUTOR_STORAGE_DEVICE": "Local"}},
		{name: "local DSN and no legacy device", env: map[string]string{EnvStorage: "local://localhost"}, want: "local://localhost"},
		{name: "legacy s3 on AWS",
			env: map[string]string{"OPR_EXECUTOR_STORAGE_DEVICE": "s3",
				"OPR_EXECUTOR_STORAGE_S3_ACCESS_KEY": "AKIAEXAMPLE", "OPR_EXECUTOR_STORAGE_S3_SECRET": secret,
				"OPR_EXECUTOR_STORAGE_S3_REGION": "eu-west-1", "OPR_EXECUTOR_STORAGE_S3_BUCKET": "my-bucket"},
			want:     "s3://AKIAEXAMPLE:wJalr%2FXUtn+FEMI=K7MD@my-bucket.s3.eu-west-1.amazonaws.com?region=eu-west-1",
			endpoint: "https://s3.eu-west-1.amazonaws.com", bucket: "my-bucket", root: testRoot},
		{name: "legacy s3 on AWS without region",
			env:      map[string]string{"OPR_EXECUTOR_STORAGE_DEVICE": "S3", "OPR_EXECUTOR_STORAGE_S3_BUCKET": "my-bucket"},
			want:     "s3://my-bucket.s3.us-east-1.amazonaws.com?region=us-east-1",
			endpoint: "https://s3.us-east-1.amazonaws.com", bucket: "my-bucket", root: testRoot},
		{name: "legacy s3 with an endpoint (Appwrite compose: DSN is the local placeholder)",
			env: map[string]string{EnvStorage: "local://localhost", "OPR_EXECUTOR_STORAGE_DEVICE": "s3",
				"OPR_EXECUTOR_STORAGE_S3_ACCESS_KEY": "minio", "OPR_EXECUTOR_STORAGE_S3_SECRET": secret,
				"OPR_EXECUTOR_STORAGE_S3_REGION": "us-east-1", "OPR_EXECUTOR_STORAGE_S3_BUCKET": "appwrite",
				"OPR_EXECUTOR_STORAGE_S3_ENDPOINT": "http://minio:9000"},
			want:     "s3://minio:wJalr%2FXUtn+FEMI=K7MD@minio:9000/appwrite?region=us-east-1&url=http%3A%2F%2Fminio%3A9000",
			endpoint: "http://minio:9000", root: "appwrite/storage/builds/app-test"},
		{name: "legacy s3 with an endpoint without scheme",
			env: map[string]string{"OPR_EXECUTOR_STORAGE_DEVICE": "s3", "OPR_EXECUTOR_STORAGE_S3_BUCKET": "b1b",
				"OPR_EXECUTOR_STORAGE_S3_ENDPOINT": "objects.example.com:8443"},
			want:     "s3://objects.example.com:8443/b1b?url=https%3A%2F%2Fobjects.example.com%3A8443",
			endpoint: "https://objects.example.com:8443", root: "b1b/storage/builds/app-test"},
		{name: "legacy dospaces",
			env: map[string]string{"OPR_EXECUTOR_STORAGE_DEVICE": "dospaces",
				"OPR_EXECUTOR_STORAGE_DO_SPACES_ACCESS_KEY": "DOKEY", "OPR_EXECUTOR_STORAGE_DO_SPACES_SECRET": secret,
				"OPR_EXECUTOR_STORAGE_DO_SPACES_REGION": "fra1", "OPR_EXECUTOR_STORAGE_DO_SPACES_BUCKET": "spaces-bucket"},
			want:     "dospaces://DOKEY:wJalr%2FXUtn+FEMI=K7MD@fra1.digitaloceanspaces.com/spaces-bucket?region=fra1",
			endpoint: "https://fra1.digitaloceanspaces.com", bucket: "spaces-bucket", root: testRoot},
		{name: "legacy backblaze",
			env: map[string]string{"OPR_EXECUTOR_STORAGE_DEVICE": "backblaze",
				"OPR_EXECUTOR_STORAGE_BACKBLAZE_ACCESS_KEY": "B2", "OPR_EXECUTOR_STORAGE_BACKBLAZE_SECRET": "s",
				"OPR_EXECUTOR_STORAGE_BACKBLAZE_REGION": "us-west-004", "OPR_EXECUTOR_STORAGE_BACKBLAZE_BUCKET": "b2-bucket"},
			want:     "backblaze://B2:s@s3.us-west-004.backblazeb2.com/b2-bucket?region=us-west-004",
			endpoint: "https://s3.us-west-004.backblazeb2.com", bucket: "b2-bucket", root: testRoot},
		{name: "legacy linode",
			env: map[string]string{"OPR_EXECUTOR_STORAGE_DEVICE": "linode",
				"OPR_EXECUTOR_STORAGE_LINODE_ACCESS_KEY": "L", "OPR_EXECUTOR_STORAGE_LINODE_SECRET": "s",
				"OPR_EXECUTOR_STORAGE_LINODE_REGION": "eu-central-1", "OPR_EXECUTOR_STORAGE_LINODE_BUCKET": "lin-bucket"},
			want:     "linode://L:s@eu-central-1.linodeobjects.com/lin-bucket?region=eu-central-1",
			endpoint: "https://eu-central-1.linodeobjects.com", bucket: "lin-bucket", root: testRoot},
		{name: "legacy wasabi",
			env: map[string]string{"OPR_EXECUTOR_STORAGE_DEVICE": "wasabi",
				"OPR_EXECUTOR_STORAGE_WASABI_ACCESS_KEY": "W", "OPR_EXECUTOR_STORAGE_WASABI_SECRET": "s",
				"OPR_EXECUTOR_STORAGE_WASABI_REGION": "eu-central-1", "OPR_EXECUTOR_STORAGE_WASABI_BUCKET": "was-bucket"},
			want:     "wasabi://W:s@s3.eu-central-1.wasabisys.com/was-bucket?region=eu-central-1",
			endpoint: "https://s3.eu-central-1.wasabisys.com", bucket: "was-bucket", root: testRoot},
		{name: "unknown legacy device",
			env:     map[string]string{"OPR_EXECUTOR_STORAGE_DEVICE": "gcs"},
			wantErr: "OPR_EXECUTOR_STORAGE_DEVICE"},
		{name: "legacy s3 without bucket",
			env:     map[string]string{"OPR_EXECUTOR_STORAGE_DEVICE": "s3", "OPR_EXECUTOR_STORAGE_S3_SECRET": secret},
			wantErr: "OPR_EXECUTOR_STORAGE_S3_BUCKET"},
		{name: "legacy wasabi without region",
			env: map[string]string{"OPR_EXECUTOR_STORAGE_DEVICE": "wasabi", "OPR_EXECUTOR_STORAGE_WASABI_SECRET": secret,
				"OPR_EXECUTOR_STORAGE_WASABI_BUCKET": "b"},
			wantErr: "OPR_EXECUTOR_STORAGE_WASABI_REGION"},
		{name: "legacy bad endpoint",
			env: map[string]string{"OPR_EXECUTOR_STORAGE_DEVICE": "s3", "OPR_EXECUTOR_STORAGE_S3_SECRET": secret,
				"OPR_EXECUTOR_STORAGE_S3_ENDPOINT": "ftp://x"},
			wantErr: "OPR_EXECUTOR_STORAGE_S3_ENDPOINT"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := DSNFromEnv(envOf(tc.env))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || strings.Contains(err.Error(), secret) {
					t.Fatalf("DSNFromEnv = %q, %v; want an error naming %s without the secret", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("DSNFromEnv = %q, %v; want %q", got, err, tc.want)
			}
			dev, err := openDev(got, testRoot)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if tc.endpoint == "" {
				if _, ok := dev.(*Local); !ok {
					t.Fatalf("got %T, want *Local", dev)
				}
				return
			}
			s := dev.(*S3)
			if s.client.EndpointURL().String() != tc.endpoint || s.bucket != tc.bucket || s.Root() != tc.root {
				t.Fatalf("device at %s bucket %q root %q; want %s %q %q", s.client.EndpointURL(), s.bucket, s.Root(),
					tc.endpoint, tc.bucket, tc.root)
			}
			if d, ok := ParseDSN(got); ok && tc.env["OPR_EXECUTOR_STORAGE_DEVICE"] != "" && tc.env[EnvStorage] == "" {
				// Credentials survive the round trip through the DSN.
				for _, v := range []string{"ACCESS_KEY", "SECRET"} {
					for name, val := range tc.env {
						if strings.HasSuffix(name, "_"+v) && (v == "SECRET" && d.Password != val || v == "ACCESS_KEY" && d.User != val) {
							t.Fatalf("%s = %q did not survive: %+v", name, val, d)
						}
					}
				}
			}
		})
	}
}

func TestBuildCacheDSNFromEnv(t *testing.T) {
	storage := "s3://k:s@localhost/main?url=http%3A%2F%2Fminio%3A9000"
	cache := "s3://k:s@localhost/cache?url=http%3A%2F%2Fminio%3A9000"
	for _, tc := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{EnvStorage: storage, EnvBuildCacheStorage: cache}, cache},
		{map[string]string{EnvStorage: storage, EnvBuildCacheStorage: "  "}, storage},
		{map[string]string{EnvStorage: storage}, storage},
		{map[string]string{}, ""},
		{map[string]string{EnvBuildCacheStorage: "file://localhost"}, "file://localhost"},
		{map[string]string{"OPR_EXECUTOR_STORAGE_DEVICE": "s3", "OPR_EXECUTOR_STORAGE_S3_BUCKET": "legacy"},
			"s3://legacy.s3.us-east-1.amazonaws.com?region=us-east-1"},
		{map[string]string{EnvBuildCacheStorage: cache, "OPR_EXECUTOR_STORAGE_DEVICE": "s3"}, cache},
	} {
		got, err := BuildCacheDSNFromEnv(envOf(tc.env))
		if err != nil || got != tc.want {
			t.Fatalf("BuildCacheDSNFromEnv(%v) = %q, %v; want %q", tc.env, got, err, tc.want)
		}
	}
	// The cache device roots at /build-cache.
	dev, err := openDev(cache, "/build-cache")
	if err != nil || dev.Root() != "cache/build-cache" {
		t.Fatalf("cache device root %q, %v", dev.Root(), err)
	}
}

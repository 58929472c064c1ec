package testenv

import (
	"bytes"
	"context"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
)

func TestStartS3(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := StartS3(ctx, S3Config{Dir: dir})
	if err != nil {
		t.Fatal(err) // a missing binary fails too: .ci/run installs it
	}
	t.Cleanup(srv.Stop)
	if srv.Access != DefaultS3Access || srv.Secret != DefaultS3Secret || srv.Region != DefaultS3Region || srv.Dir != dir {
		t.Errorf("server settings %+v", srv)
	}
	if !strings.HasPrefix(srv.Addr, "127.0.0.1:") || srv.URL() != "http://"+srv.Addr {
		t.Errorf("addr %q url %q", srv.Addr, srv.URL())
	}

	if err := srv.MakeBucket(ctx, "bucket-a"); err != nil {
		t.Fatal(err)
	}
	if err := srv.MakeBucket(ctx, "bucket-a"); err == nil {
		t.Error("making an existing bucket again succeeded")
	}
	c, err := srv.Client()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutObject(ctx, "bucket-a", "dir/obj.txt", strings.NewReader("hello"), 5, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	// The posix backend keeps objects as files under Dir/<bucket>.
	if b, err := os.ReadFile(filepath.Join(dir, "bucket-a", "dir", "obj.txt")); err != nil || string(b) != "hello" {
		t.Fatalf("object on disk: %q %v", b, err)
	}
	o, err := c.GetObject(ctx, "bucket-a", "dir/obj.txt", minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(o)
	o.Close()
	if err != nil || !bytes.Equal(got, []byte("hello")) {
		t.Fatalf("get: %q %v", got, err)
	}

	// DSN: the executor's generic S3 form, credentials escaped.
	dsn := srv.DSN("bucket-a", "k", "s/+:@")
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	pw, _ := u.User.Password()
	if u.Scheme != "s3" || u.Host != "localhost" || u.Path != "/bucket-a" || u.User.Username() != "k" || pw != "s/+:@" ||
		u.Query().Get("region") != DefaultS3Region || u.Query().Get("url") != srv.URL() {
		t.Fatalf("DSN %s", dsn)
	}

	srv.Stop()
	srv.Stop() // idempotent
	// (a short deadline: the client retries refused connections)
	short, cancelShort := context.WithTimeout(ctx, time.Second)
	defer cancelShort()
	if _, err := c.BucketExists(short, "bucket-a"); err == nil {
		t.Error("the server still answers after Stop")
	}
}

func TestStartS3Errors(t *testing.T) {
	if _, err := StartS3(context.Background(), S3Config{}); err == nil || !strings.Contains(err.Error(), "Dir is required") {
		t.Fatalf("no Dir: %v", err)
	}
	// A binary that exits at once: every attempt fails, with its output.
	bin := filepath.Join(t.TempDir(), "fake-s3")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\necho fake-s3-refuses >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := StartS3(context.Background(), S3Config{Dir: t.TempDir(), Binary: bin, StartTimeout: 5 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "exited during start") || !strings.Contains(err.Error(), "fake-s3-refuses") {
		t.Fatalf("failing binary: %v", err)
	}
}

func TestFindS3ServerMissing(t *testing.T) {
	empty := t.TempDir()
	t.Setenv("PATH", empty)
	t.Setenv("GOBIN", "")
	t.Setenv("GOPATH", empty)
	_, err := FindS3Server()
	if err == nil || !strings.Contains(err.Error(), ".ci/run") || !strings.Contains(err.Error(), S3ServerInstall) {
		t.Fatalf("missing server: %v", err)
	}
}

package storage

import (
	"context"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"executor/tests/testenv"
)

// testS3 is a running S3 server (testenv's Versity S3 Gateway, installed by
// .ci/run) on 127.0.0.1 with its own directory.
type testS3 struct {
	*testenv.S3Server
}

// Client is an admin client for the server (bucket setup, listing).
func (s *testS3) Client(t testing.TB) *minio.Client {
	t.Helper()
	c, err := s.S3Server.Client()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// MakeBucket creates a bucket.
func (s *testS3) MakeBucket(t testing.TB, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.S3Server.MakeBucket(ctx, name); err != nil {
		t.Fatal(err)
	}
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	p, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// startS3 starts an S3 server on a free loopback port in its own temp
// directory and process group, waits until it answers, and stops it (the
// whole group) when the test ends. A missing server binary fails the test
// (with how to install it), it is not skipped.
func startS3(t testing.TB) *testS3 {
	t.Helper()
	bin, err := testenv.FindS3Server()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	srv, err := testenv.StartS3(ctx, testenv.S3Config{Dir: t.TempDir(), Binary: bin})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	return &testS3{srv}
}

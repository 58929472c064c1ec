package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type opLog struct{ ops []string }

func (l *opLog) Operation(_ context.Context, kind, op string, took time.Duration, err error) {
	s := fmt.Sprintf("%s %s", kind, op)
	switch {
	case took < 0:
		s += " negative"
	case errors.Is(err, ErrNotFound):
		s += " not found"
	case err != nil:
		s += " error"
	}
	l.ops = append(l.ops, s)
}

// Every operation of an observed device is reported once, with its kind and
// its error; what the device answers is passed on unchanged.
func TestObserveReportsEachOperation(t *testing.T) {
	root := t.TempDir()
	ctx := context.Background()
	l := &opLog{}
	o, err := NewOpener(Config{LocalRoots: []string{root}, Observer: l})
	if err != nil {
		t.Fatal(err)
	}
	dev, err := o.Open(root)
	if err != nil {
		t.Fatal(err)
	}
	p := "/a.txt"
	if n, err := dev.Write(ctx, p, strings.NewReader("hello")); err != nil || n != 5 {
		t.Fatalf("write: %d %v", n, err)
	}
	rc, err := dev.Read(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(rc); string(b) != "hello" {
		t.Errorf("read %q", b)
	}
	rc.Close()
	if ok, err := dev.Exists(ctx, p); !ok || err != nil {
		t.Errorf("exists: %v %v", ok, err)
	}
	if err := dev.Delete(ctx, p); err != nil {
		t.Fatal(err)
	}
	if _, err := dev.Read(ctx, p); !errors.Is(err, ErrNotFound) {
		t.Errorf("read of a deleted file: %v", err)
	}
	if _, err := dev.Write(ctx, "/../x", strings.NewReader("x")); err == nil {
		t.Error("a write above the root succeeded")
	}
	if dev.Root() != root {
		t.Errorf("root %s", dev.Root())
	}
	want := []string{"local write", "local read", "local exists", "local delete", "local read not found", "local write error"}
	if strings.Join(l.ops, ",") != strings.Join(want, ",") {
		t.Errorf("operations %q, want %q", l.ops, want)
	}
	if _, err := os.Stat(filepath.Join(root, p)); !os.IsNotExist(err) {
		t.Errorf("delete through the observed device: %v", err)
	}
}

// Without an observer, or on an S3 device, Observe is what it should be.
func TestObserveKinds(t *testing.T) {
	l, err := NewLocal(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if dev := Observe(l, nil); dev != Device(l) {
		t.Error("Observe without an observer wraps the device")
	}
	s3, err := NewS3(S3Config{Endpoint: "127.0.0.1:9", Bucket: "bucket", AccessKey: "k", SecretKey: "s"})
	if err != nil {
		t.Fatal(err)
	}
	log := &opLog{}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // nothing is sent: the operation fails at once
	_, _ = Observe(s3, log).Exists(ctx, "/x")
	if len(log.ops) != 1 || !strings.HasPrefix(log.ops[0], "s3 exists") {
		t.Errorf("operations %q, want one s3 exists", log.ops)
	}
}

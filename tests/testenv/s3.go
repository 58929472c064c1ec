package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// The S3-compatible server of the storage and end-to-end tests: Versity S3
// Gateway with its posix backend (each bucket is a directory of S3Config.Dir),
// installed by .ci/run.
const (
	S3ServerBinary  = "versitygw"
	S3ServerInstall = "go install github.com/versity/versitygw/cmd/versitygw@v1.8.0"
)

// Default credentials and region of a test S3 server.
const (
	DefaultS3Access = "test-access-key"
	DefaultS3Secret = "test-secret-key-0123456789"
	DefaultS3Region = "us-east-1"
)

// S3Config configures a local S3 server process.
type S3Config struct {
	// Dir is the posix backend's root: bucket "b" is the directory Dir/b.
	// Required; the caller owns (and removes) it.
	Dir string
	// Binary is the server executable (default: FindS3Server).
	Binary string
	// Access and Secret are the root credentials (defaults DefaultS3Access,
	// DefaultS3Secret).
	Access, Secret string
	// Region is the server's region (default DefaultS3Region).
	Region string
	// StartTimeout bounds the wait for the server to answer, per attempt
	// (default 20s).
	StartTimeout time.Duration
	// Logger receives progress messages (default: discarded).
	Logger *slog.Logger
}

func (c *S3Config) setDefaults() error {
	if c.Dir == "" {
		return errors.New("s3 config: Dir is required")
	}
	if c.Binary == "" {
		bin, err := FindS3Server()
		if err != nil {
			return err
		}
		c.Binary = bin
	}
	if c.Access == "" {
		c.Access = DefaultS3Access
	}
	if c.Secret == "" {
		c.Secret = DefaultS3Secret
	}
	if c.Region == "" {
		c.Region = DefaultS3Region
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = 20 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// S3Server is a running S3 server listening on 127.0.0.1, in its own process
// group.
type S3Server struct {
	Addr   string // 127.0.0.1:port
	Access string // root access key
	Secret string // root secret key
	Region string
	Dir    string // the posix backend's root

	cmd     *exec.Cmd
	out     *lockedBuffer
	done    chan struct{} // closed when the process has exited
	waitErr error         // valid after done is closed
	stop    sync.Once
}

// FindS3Server finds the S3 server binary in PATH, $GOBIN or $GOPATH/bin
// (`go env GOPATH` when unset). Its error says how to install it.
func FindS3Server() (string, error) {
	if p, err := exec.LookPath(S3ServerBinary); err == nil {
		return p, nil
	}
	var dirs []string
	if gobin := os.Getenv("GOBIN"); gobin != "" {
		dirs = append(dirs, gobin)
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
			gopath = string(bytes.TrimSpace(out))
		}
	}
	if gopath == "" {
		if home, err := os.UserHomeDir(); err == nil {
			gopath = filepath.Join(home, "go")
		}
	}
	for _, p := range filepath.SplitList(gopath) {
		dirs = append(dirs, filepath.Join(p, "bin"))
	}
	for _, d := range dirs {
		p := filepath.Join(d, S3ServerBinary)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("the S3 test server %q is not in PATH nor in $GOBIN or $GOPATH/bin (%v): run .ci/run, which installs it (%s)",
		S3ServerBinary, dirs, S3ServerInstall)
}

// maxS3Attempts bounds retries when a picked free port is taken before the
// server binds it (or the server dies at start for another reason).
const maxS3Attempts = 3

// StartS3 starts the S3 server on a free loopback port with the posix backend
// in cfg.Dir and waits until it answers HTTP. ctx bounds the start only; the
// server runs until Stop.
func StartS3(ctx context.Context, cfg S3Config) (*S3Server, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("create S3 dir: %w", err)
	}
	var lastErr error
	for attempt := 1; attempt <= maxS3Attempts; attempt++ {
		port, err := FreePort()
		if err != nil {
			return nil, err
		}
		s, err := startS3Once(ctx, cfg, fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			cfg.Logger.Info("S3 server started", "addr", s.Addr, "dir", cfg.Dir)
			return s, nil
		}
		lastErr = err
		if ctx.Err() != nil {
			break
		}
		cfg.Logger.Warn("S3 server did not start, retrying", "port", port, "attempt", attempt, "err", err)
	}
	return nil, fmt.Errorf("the S3 test server did not start: %w", lastErr)
}

func startS3Once(ctx context.Context, cfg S3Config, addr string) (*S3Server, error) {
	s := &S3Server{Addr: addr, Access: cfg.Access, Secret: cfg.Secret, Region: cfg.Region, Dir: cfg.Dir,
		out: &lockedBuffer{}, done: make(chan struct{})}
	s.cmd = exec.Command(cfg.Binary, "--access", cfg.Access, "--secret", cfg.Secret, "--region", cfg.Region,
		"--port", addr, "--quiet", "posix", cfg.Dir)
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	s.cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid: true, // Stop kills the whole group
		// Do not outlive a test binary that dies without cleaning up.
		Pdeathsig: syscall.SIGKILL,
	}
	waited, err := StartTied(s.cmd)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", cfg.Binary, err)
	}
	go func() {
		s.waitErr = <-waited
		close(s.done)
	}()
	if err := s.waitReady(ctx, cfg.StartTimeout); err != nil {
		s.Stop()
		return nil, fmt.Errorf("%w\n%s", err, s.Log())
	}
	return s, nil
}

// waitReady waits until an HTTP request to the server gets any answer (an
// anonymous ListBuckets is refused, which is an answer).
func (s *S3Server) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-s.done:
			return fmt.Errorf("the S3 server at %s exited during start: %v", s.Addr, s.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("no answer from the S3 server at %s: %w", s.Addr, ctx.Err())
		case <-tick.C:
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL()+"/", nil)
		if err != nil {
			return fmt.Errorf("build readiness request: %w", err)
		}
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			return nil
		}
	}
}

// URL is the server's endpoint URL (http://127.0.0.1:port).
func (s *S3Server) URL() string { return "http://" + s.Addr }

// DSN is an executor storage DSN for bucket on this server with the given
// credentials (any, so tests can pass wrong ones), in the reference's generic
// S3 form: s3://ACCESS:SECRET@localhost/BUCKET?region=..&url=<endpoint>.
func (s *S3Server) DSN(bucket, access, secret string) string {
	u := url.URL{Scheme: "s3", User: url.UserPassword(access, secret), Host: "localhost", Path: "/" + bucket,
		RawQuery: url.Values{"region": {s.Region}, "url": {s.URL()}}.Encode()}
	return u.String()
}

// Client is an admin client (root credentials, path-style) for setting up
// buckets and checking objects.
func (s *S3Server) Client() (*minio.Client, error) {
	c, err := minio.New(s.Addr, &minio.Options{Creds: credentials.NewStaticV4(s.Access, s.Secret, ""),
		Region: s.Region, BucketLookup: minio.BucketLookupPath})
	if err != nil {
		return nil, fmt.Errorf("S3 client for %s: %w", s.Addr, err)
	}
	return c, nil
}

// MakeBucket creates a bucket.
func (s *S3Server) MakeBucket(ctx context.Context, name string) error {
	c, err := s.Client()
	if err != nil {
		return err
	}
	if err := c.MakeBucket(ctx, name, minio.MakeBucketOptions{Region: s.Region}); err != nil {
		return fmt.Errorf("make bucket %s: %w", name, err)
	}
	return nil
}

// Log is what the server wrote to stdout and stderr (the first MiB).
func (s *S3Server) Log() string { return strings.TrimSpace(s.out.String()) }

// Stop kills the server's process group and waits for it to exit. It is safe
// to call more than once.
func (s *S3Server) Stop() {
	s.stop.Do(func() {
		// Errors mean the process is already gone, which is the goal.
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
	})
}

// lockedBuffer collects a process's output, up to 1 MiB.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 1<<20 {
		return len(p), nil
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

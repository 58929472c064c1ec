package testenv

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// RegistryConfig configures a local docker-registry process.
type RegistryConfig struct {
	// Dir holds the registry's storage, its generated config.yml and its log
	// (registry.log). Required; the caller owns (and removes) it.
	Dir string
	// Htpasswd, when set, is the path of a bcrypt htpasswd file (see
	// WriteHtpasswd) and enables basic auth.
	Htpasswd string
	// Realm is the basic-auth realm (default "testenv").
	Realm string
	// Binary is the registry executable (default /usr/bin/docker-registry).
	Binary string
	// StartTimeout bounds the wait for GET /v2/ to answer (default 20s).
	StartTimeout time.Duration
	// Logger receives progress messages (default: discarded).
	Logger *slog.Logger
}

func (c *RegistryConfig) setDefaults() error {
	if c.Dir == "" {
		return errors.New("registry config: Dir is required")
	}
	if c.Realm == "" {
		c.Realm = "testenv"
	}
	if c.Binary == "" {
		c.Binary = "/usr/bin/docker-registry"
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = 20 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Registry is a running docker-registry process listening on 127.0.0.1.
type Registry struct {
	addr    string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{} // closed when the process has exited
	waitErr error         // valid after done is closed
	stop    sync.Once
}

// errAddrInUse marks a start that lost the race for its port.
var errAddrInUse = errors.New("registry port already in use")

// maxPortAttempts bounds retries when a picked free port is taken before the
// registry binds it.
const maxPortAttempts = 5

// StartRegistry starts docker-registry with a generated config and waits until
// its API answers. ctx bounds the start only; the registry runs until Stop.
func StartRegistry(ctx context.Context, cfg RegistryConfig) (*Registry, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("create registry dir: %w", err)
	}
	var lastErr error
	for attempt := 1; attempt <= maxPortAttempts; attempt++ {
		port, err := FreePort()
		if err != nil {
			return nil, err
		}
		r, err := startRegistryOnce(ctx, cfg, port)
		if err == nil {
			cfg.Logger.Info("registry started", "addr", r.addr, "dir", cfg.Dir)
			return r, nil
		}
		if !errors.Is(err, errAddrInUse) {
			return nil, err
		}
		cfg.Logger.Warn("registry port taken, retrying", "port", port, "attempt", attempt)
		lastErr = err
	}
	return nil, fmt.Errorf("start registry after %d attempts: %w", maxPortAttempts, lastErr)
}

func startRegistryOnce(ctx context.Context, cfg RegistryConfig, port int) (*Registry, error) {
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	configPath := filepath.Join(cfg.Dir, "config.yml")
	if err := os.WriteFile(configPath, []byte(registryConfigYAML(cfg, addr)), 0o644); err != nil {
		return nil, fmt.Errorf("write registry config: %w", err)
	}
	logPath := filepath.Join(cfg.Dir, "registry.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("create registry log: %w", err)
	}
	defer logFile.Close() // the child keeps its own descriptor

	cmd := exec.Command(cfg.Binary, "serve", configPath)
	// The access log goes to stdout and the app log to stderr; BlobGets parses
	// the former from the shared file.
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Env = registryEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid: true, // Stop kills the whole group
		// Do not outlive a test binary that dies without cleaning up.
		Pdeathsig: syscall.SIGKILL,
	}
	waited, err := StartTied(cmd)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", cfg.Binary, err)
	}
	r := &Registry{addr: addr, logPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		r.waitErr = <-waited
		close(r.done)
	}()

	if err := r.waitReady(ctx, cfg.StartTimeout); err != nil {
		r.Stop()
		return nil, err
	}
	return r, nil
}

// registryEnv drops REGISTRY_* variables: docker-registry lets them override
// any config key, and a stray one from the host would change the setup.
func registryEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "REGISTRY_") {
			env = append(env, kv)
		}
	}
	return env
}

func registryConfigYAML(cfg RegistryConfig, addr string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `version: 0.1
log:
  level: warn
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
  headers:
    X-Content-Type-Options: [nosniff]
`, strconv.Quote(cfg.Dir), addr)
	if cfg.Htpasswd != "" {
		fmt.Fprintf(&b, `auth:
  htpasswd:
    realm: %s
    path: %s
`, strconv.Quote(cfg.Realm), strconv.Quote(cfg.Htpasswd))
	}
	return b.String()
}

func (r *Registry) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-r.done:
			log := r.logTail()
			if strings.Contains(log, "address already in use") {
				return fmt.Errorf("%w: %s", errAddrInUse, r.addr)
			}
			return fmt.Errorf("registry exited during start (%v): %s", r.waitErr, log)
		case <-ctx.Done():
			return fmt.Errorf("registry at %s not ready: %w; log: %s", r.addr, ctx.Err(), r.logTail())
		case <-tick.C:
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.addr+"/v2/", nil)
		if err != nil {
			return fmt.Errorf("build readiness request: %w", err)
		}
		res, err := client.Do(req)
		if err != nil {
			continue
		}
		res.Body.Close()
		// 401 is the healthy answer of a registry with auth.
		if res.StatusCode == http.StatusOK || res.StatusCode == http.StatusUnauthorized {
			return nil
		}
	}
}

func (r *Registry) logTail() string {
	b, err := os.ReadFile(r.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	const max = 4096
	if len(b) > max {
		b = b[len(b)-max:]
	}
	return strings.TrimSpace(string(b))
}

// Addr is the registry's "127.0.0.1:port".
func (r *Registry) Addr() string { return r.addr }

// LogPath is the file holding the registry's access and application logs.
func (r *Registry) LogPath() string { return r.logPath }

// Stop kills the registry's process group and waits for it to exit. It is
// safe to call more than once.
func (r *Registry) Stop() {
	r.stop.Do(func() {
		// Errors mean the process is already gone, which is the goal.
		_ = syscall.Kill(-r.cmd.Process.Pid, syscall.SIGKILL)
		<-r.done
	})
}

// accessLogBlobGet matches a combined-log-format line for a blob download,
// e.g. `"GET /v2/openruntimes/test/blobs/sha256:ab… HTTP/1.1" 200 1234`.
var accessLogBlobGet = regexp.MustCompile(`"GET /v2/\S+/blobs/([a-z0-9]+:[0-9a-f]+)\S* HTTP/[0-9.]+" (\d{3}) `)

// BlobGets counts successful blob downloads whose digest starts with
// digestPrefix ("sha256:ab12…"; a bare hex prefix means sha256). Tests use it
// to prove layer caching (a second pull must not fetch blobs again).
func (r *Registry) BlobGets(digestPrefix string) int {
	if !strings.Contains(digestPrefix, ":") {
		digestPrefix = "sha256:" + digestPrefix
	}
	f, err := os.Open(r.logPath)
	if err != nil {
		return 0
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		m := accessLogBlobGet.FindStringSubmatch(sc.Text())
		if m == nil || !strings.HasPrefix(m[1], digestPrefix) || !strings.HasPrefix(m[2], "2") {
			continue
		}
		n++
	}
	return n
}

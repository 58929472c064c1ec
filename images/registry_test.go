package images

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	"go.podman.io/image/v5/docker"
	ocilayout "go.podman.io/image/v5/oci/layout"
)

// testRegistry answers like a docker/distribution registry, on loopback
// and in plain HTTP, from a layout's blobs.
type testRegistry struct {
	*httptest.Server
	mu       sync.Mutex
	tags     map[string]digest.Digest // "name:tag"
	blobs    map[digest.Digest]blobData
	requests []string
	authSeen bool
	errorFor map[string]func(w http.ResponseWriter) // by repository name
}

func newTestRegistry(t *testing.T) *testRegistry {
	r := &testRegistry{tags: map[string]digest.Digest{}, blobs: map[digest.Digest]blobData{}, errorFor: map[string]func(http.ResponseWriter){}}
	r.Server = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.Close)
	return r
}

func (r *testRegistry) host() string { return strings.TrimPrefix(r.URL, "http://") }

func (r *testRegistry) serve(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	r.requests = append(r.requests, req.Method+" "+req.URL.Path)
	if req.Header.Get("Authorization") != "" {
		r.authSeen = true
	}
	r.mu.Unlock()
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	if req.URL.Path == "/v2/" {
		w.Write([]byte("{}"))
		return
	}
	path := strings.TrimPrefix(req.URL.Path, "/v2/")
	var name, kind, ref string
	for _, k := range []string{"/manifests/", "/blobs/"} {
		if i := strings.LastIndex(path, k); i > 0 {
			name, kind, ref = path[:i], strings.Trim(k, "/"), path[i+len(k):]
		}
	}
	if fail, ok := r.errorFor[name]; ok {
		fail(w)
		return
	}
	d := digest.Digest(ref)
	if kind == "manifests" {
		if tagged, ok := r.tags[name+":"+ref]; ok {
			d = tagged
		}
	}
	b, ok := r.blobs[d]
	if kind == "" || !ok {
		registryError(w, http.StatusNotFound, "MANIFEST_UNKNOWN", "manifest unknown")
		return
	}
	w.Header().Set("Content-Type", b.mediaType)
	w.Header().Set("Docker-Content-Digest", d.String())
	w.Header().Set("Content-Length", fmt.Sprint(len(b.data)))
	if req.Method != http.MethodHead {
		w.Write(b.data)
	}
}

func registryError(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("Content-Type", "application/json")
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
	}
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"errors":[{"code":%q,"message":%q}]}`, code, message)
}

func writeConf(t *testing.T, conf string) string {
	p := filepath.Join(t.TempDir(), "registries.conf")
	if err := os.WriteFile(p, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// closedPort is a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// Registry failures are classified, and the error's message names only the
// kind: what the registry said is in PullError.Err (and the log), not in
// what an API client sees.
func TestPullRegistryErrors(t *testing.T) {
	requireRoot(t)
	reg := newTestRegistry(t)
	reg.errorFor["missing/name"] = func(w http.ResponseWriter) {
		registryError(w, http.StatusNotFound, "NAME_UNKNOWN", "repository missing/name does not exist")
	}
	reg.errorFor["plain/404"] = func(w http.ResponseWriter) { http.Error(w, "404 page not found", http.StatusNotFound) }
	reg.errorFor["private/image"] = func(w http.ResponseWriter) {
		registryError(w, http.StatusUnauthorized, "UNAUTHORIZED", "log in to pull private/image")
	}
	reg.errorFor["denied/image"] = func(w http.ResponseWriter) {
		registryError(w, http.StatusForbidden, "DENIED", "no pull access to denied/image")
	}
	reg.errorFor["plain/403"] = func(w http.ResponseWriter) { http.Error(w, "forbidden", http.StatusForbidden) }
	dead := closedPort(t)
	secure := newTestRegistry(t) // plain HTTP, but not marked insecure
	// Not a registry: a web server that answers 404 to everything.
	web := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(web.Close)
	webHost := strings.TrimPrefix(web.URL, "http://")
	conf := writeConf(t, fmt.Sprintf(`
[[registry]]
location = %q
insecure = true

[[registry]]
location = %q
insecure = true

[[registry]]
location = %q

[[registry]]
location = %q
insecure = true
`, reg.host(), dead, secure.host(), webHost))
	s := newTestStore(t, Config{RegistriesConf: conf})

	tests := []struct {
		ref      string
		want     error
		wantText string // in PullError.Err only
	}{
		{reg.host() + "/some/image:v1", ErrImageNotFound, "manifest unknown"},
		{reg.host() + "/missing/name:v1", ErrImageNotFound, "repository missing/name does not exist"},
		{reg.host() + "/plain/404:v1", ErrImageNotFound, "404"},
		{reg.host() + "/private/image:v1", ErrUnauthorized, "log in to pull private/image"},
		{reg.host() + "/denied/image:v1", ErrUnauthorized, "no pull access to denied/image"},
		{reg.host() + "/plain/403:v1", ErrUnauthorized, "403"},
		{dead + "/any/image:v1", ErrRegistryUnreachable, "connection refused"},
		{secure.host() + "/any/image:v1", ErrRegistryUnreachable, "HTTP response to HTTPS client"},
		{webHost + "/any/image:v1", ErrRegistryUnreachable, "404"},
	}
	for _, tt := range tests {
		t.Run(tt.ref, func(t *testing.T) {
			_, err := s.Pull(context.Background(), tt.ref)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			var perr *PullError
			if !errors.As(err, &perr) {
				t.Fatalf("err is %T, not a *PullError", err)
			}
			if err.Error() != tt.want.Error() {
				t.Errorf("message = %q, want just %q", err, tt.want)
			}
			if !strings.Contains(perr.Err.Error(), tt.wantText) {
				t.Errorf("detail = %q, want the registry's text %q in it", perr.Err, tt.wantText)
			}
			for _, other := range []error{ErrImageNotFound, ErrUnauthorized, ErrRegistryUnreachable} {
				if other != tt.want && errors.Is(err, other) {
					t.Errorf("err also matches %v", other)
				}
			}
		})
	}
}

// A reference to a registry on this host's own addresses that
// registries.conf does not name is refused before anything is dialled, with
// one message whatever listens there: a reference cannot scan the host's
// ports or reach cloud metadata. Named in registries.conf, the same
// registry is pulled from.
func TestPullRefusesLocalRegistries(t *testing.T) {
	requireRoot(t)
	reg := newTestRegistry(t)
	l := newLayout(t, t.TempDir())
	desc := l.image(baseImage())
	reg.blobs = l.blobs
	reg.tags["local/image:v1"] = desc.Digest
	_, port, _ := net.SplitHostPort(reg.host())
	web := httptest.NewServer(http.NotFoundHandler())
	t.Cleanup(web.Close)
	ssh, err := net.Listen("tcp", "127.0.0.1:0") // answers with a banner, like sshd
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ssh.Close() })
	go func() {
		for {
			c, err := ssh.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("SSH-2.0-OpenSSH_9.2\r\n"))
			c.Close()
		}
	}()
	// The host's own address: the one its default route leaves from, which
	// stays, rather than the first one listed, which may be a bridge another
	// test's daemon is about to remove (a CI run raced on exactly that).
	own := ""
	if c, err := net.Dial("udp4", "192.0.2.1:9"); err == nil { // no packet is sent
		if a := c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap(); !a.IsLoopback() {
			own = net.JoinHostPort(a.String(), port)
		}
		c.Close()
	}
	for a := range ownAddrs() {
		if own != "" {
			break
		}
		if a.Is4() && !a.IsLoopback() && !a.IsLinkLocalUnicast() {
			own = net.JoinHostPort(a.String(), port)
			break
		}
	}

	s := newTestStore(t, Config{})
	refs := []string{
		reg.host() + "/local/image:v1",                   // a registry, open
		closedPort(t) + "/local/image:v1",                // closed
		strings.TrimPrefix(web.URL, "http://") + "/x:v1", // a web server
		ssh.Addr().String() + "/x:v1",                    // not HTTP at all
		"localhost:" + port + "/local/image:v1",          // a name for loopback
		"0.0.0.0:" + port + "/local/image:v1",            // reaches loopback too
		"169.254.169.254/latest/meta-data:v1",            // cloud metadata
		"docker://127.0.0.1:" + port + "/local/image:v1", // explicit transport
	}
	if own != "" {
		refs = append(refs, own+"/local/image:v1") // the host's own interface address
	}
	var messages []string
	for _, ref := range refs {
		_, err := s.Pull(context.Background(), ref)
		if !errors.Is(err, ErrBlocked) {
			t.Errorf("Pull(%q) = %v, want ErrBlocked", ref, err)
			continue
		}
		host, _, _ := strings.Cut(strings.TrimPrefix(ref, "docker://"), "/")
		h, _, err2 := net.SplitHostPort(host)
		if err2 != nil {
			h = host
		}
		messages = append(messages, strings.ReplaceAll(err.Error(), h, "HOST"))
	}
	for i, m := range messages {
		if m != messages[0] {
			t.Errorf("message %d differs:\n %q\n %q", i, m, messages[0])
		}
	}
	t.Logf("message: %s", messages[0])
	reg.mu.Lock()
	if len(reg.requests) != 0 {
		t.Errorf("the local registry was asked: %v", reg.requests)
	}
	reg.mu.Unlock()

	named := newTestStore(t, Config{RegistriesConf: writeConf(t, fmt.Sprintf("[[registry]]\nlocation = %q\ninsecure = true\n", reg.host()))})
	if _, err := named.Pull(context.Background(), reg.host()+"/local/image:v1"); err != nil {
		t.Fatalf("a registry registries.conf names: %v", err)
	}
}

// docker.io with a mirror marked insecure: short names resolve via docker.io,
// the mirror is reached over plain HTTP, and the Docker Hub credentials are
// not sent to it. docker.io's own location is rewritten to a dead loopback
// port so that nothing can leave the machine even if the mirror failed.
func TestPullThroughInsecureMirror(t *testing.T) {
	requireRoot(t)
	mirror := newTestRegistry(t)
	l := newLayout(t, t.TempDir())
	desc := l.image(baseImage())
	mirror.blobs = l.blobs
	mirror.tags["openruntimes/node:v5-18.0"] = desc.Digest

	conf := writeConf(t, fmt.Sprintf(`
[[registry]]
prefix = "docker.io"
location = %q

[[registry.mirror]]
location = %q
insecure = true
`, closedPort(t), mirror.host()))
	s := newTestStore(t, Config{RegistriesConf: conf, DockerHubUsername: "hub-user", DockerHubPassword: "hub-secret"})
	img, err := s.Pull(context.Background(), "openruntimes/node:v5-18.0")
	if err != nil {
		t.Fatal(err)
	}
	if img.Digest != desc.Digest.String() || len(img.Layers) != 3 {
		t.Fatalf("image = %+v", img)
	}
	mirror.mu.Lock()
	defer mirror.mu.Unlock()
	if len(mirror.requests) == 0 {
		t.Fatal("mirror never asked")
	}
	if mirror.authSeen {
		t.Error("Docker Hub credentials were sent to a mirror")
	}
	if got := readFile(t, filepath.Join(img.Layers[1], "etc/hello")); got != "layer2" {
		t.Errorf("layer content %q", got)
	}
}

func TestSystemContextCredentials(t *testing.T) {
	archives := t.TempDir()
	s := &Store{cfg: Config{DockerHubUsername: "u", DockerHubPassword: "p"}, root: "/r", archiveDir: archives}
	anon := &Store{cfg: Config{}, root: "/r"}
	tests := []struct {
		store *Store
		ref   string
		creds bool
	}{
		{s, "node", true},
		{s, "docker.io/openruntimes/node:v5", true},
		{s, "docker://index.docker.io/library/node", true},
		{s, "ghcr.io/openruntimes/node:v5", false},
		{s, "127.0.0.1:5000/node", false},
		{s, "oci:" + archives + "/layout:v1", false},
		{anon, "node", false},
	}
	for _, tt := range tests {
		r, err := tt.store.parseReference(tt.ref)
		if err != nil {
			t.Fatal(err)
		}
		sys := tt.store.systemContext(r)
		if got := sys.DockerAuthConfig != nil; got != tt.creds {
			t.Errorf("%s: credentials = %v, want %v", tt.ref, got, tt.creds)
		}
		if sys.BlobInfoCacheDir != "/r/blobinfocache" || sys.BigFilesTemporaryDir != "/r/tmp" {
			t.Errorf("%s: containers/image not pointed into the store: %+v", tt.ref, sys)
		}
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		err  error
		want error
	}{
		{docker.ErrUnauthorizedForCredentials{Err: errors.New("bad password")}, ErrUnauthorized},
		{fmt.Errorf("x: %w", docker.UnexpectedHTTPStatusError{StatusCode: 404}), ErrImageNotFound},
		{fmt.Errorf("x: %w", ocilayout.ImageNotFoundError{}), ErrImageNotFound},
		{&net.DNSError{Err: "no such host", Name: "nope.invalid"}, ErrRegistryUnreachable},
		{fmt.Errorf("pinging: %w", context.DeadlineExceeded), nil},
		{errors.New("something else"), nil},
	}
	for _, tt := range tests {
		got := classify(tt.err)
		for _, sentinel := range []error{ErrImageNotFound, ErrUnauthorized, ErrRegistryUnreachable} {
			if errors.Is(got, sentinel) != (sentinel == tt.want) {
				t.Errorf("classify(%v): matches %v = %v", tt.err, sentinel, errors.Is(got, sentinel))
			}
		}
		if !strings.Contains(got.Error(), tt.err.Error()) {
			t.Errorf("classify(%v) lost the original text: %v", tt.err, got)
		}
	}
}

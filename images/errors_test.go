package images

import (
	"archive/tar"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// A pull through mirrors is judged by the registries that answered: a
// mirror's "no such image" is the verdict when the primary location answered
// nothing that was a registry, and a closed port and an open one that is not
// a registry still give the same message. A mirror that failed does not hide
// the primary's own answer.
func TestPullMirrorVerdicts(t *testing.T) {
	requireRoot(t)
	reg := newTestRegistry(t) // MANIFEST_UNKNOWN for any image it does not hold
	reg.errorFor["missing/name"] = func(w http.ResponseWriter) {
		registryError(w, http.StatusNotFound, "NAME_UNKNOWN", "repository missing/name does not exist")
	}
	reg.errorFor["private/image"] = func(w http.ResponseWriter) {
		registryError(w, http.StatusUnauthorized, "UNAUTHORIZED", "log in to pull private/image")
	}
	web := httptest.NewServer(http.NotFoundHandler()) // answers, but not as a registry
	t.Cleanup(web.Close)
	webHost := strings.TrimPrefix(web.URL, "http://")
	dead, dead2 := closedPort(t), closedPort(t)

	tests := []struct {
		name            string
		primary, mirror string
		repo            string
		want            error
	}{
		{"mirror: manifest unknown, primary: closed port", dead, reg.host(), "some/image", ErrImageNotFound},
		{"mirror: manifest unknown, primary: not a registry", webHost, reg.host(), "some/image", ErrImageNotFound},
		{"mirror: name unknown, primary: closed port", dead, reg.host(), "missing/name", ErrImageNotFound},
		{"mirror: closed port, primary: manifest unknown", reg.host(), dead, "some/image", ErrImageNotFound},
		{"mirror: closed port, primary: closed port", dead, dead2, "some/image", ErrRegistryUnreachable},
		{"mirror: not a registry, primary: closed port", dead, webHost, "some/image", ErrRegistryUnreachable},
		// Only "no such image" is taken from a mirror's text.
		{"mirror: unauthorized, primary: closed port", dead, reg.host(), "private/image", ErrRegistryUnreachable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conf := writeConf(t, fmt.Sprintf(`
[[registry]]
location = %q
insecure = true

[[registry.mirror]]
location = %q
insecure = true
`, tt.primary, tt.mirror))
			s := newTestStore(t, Config{RegistriesConf: conf})
			_, err := s.Pull(context.Background(), tt.primary+"/"+tt.repo+":v1")
			var perr *PullError
			if !errors.As(err, &perr) || perr.Kind() != tt.want {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			// One kind, said once, nothing the registries said.
			if err.Error() != tt.want.Error() {
				t.Errorf("message = %q, want just %q", err, tt.want)
			}
			if !strings.Contains(perr.Err.Error(), mirrorsFailed) {
				t.Errorf("detail = %q, want the mirrors' errors in it", perr.Err)
			}
		})
	}
}

// An image that is broken is the image's fault (ErrBadImage, a 4xx for the
// API), whatever part of it breaks; nothing of it stays in the store.
func TestPullBadImages(t *testing.T) {
	requireRoot(t)
	junk := make([]byte, 4096)
	rand.Read(junk)
	tests := []struct {
		name   string
		layer  []entry
		mangle func(i int, blob []byte, diffID digest.Digest) ([]byte, digest.Digest)
	}{
		{name: "not a tar stream", mangle: func(int, []byte, digest.Digest) ([]byte, digest.Digest) {
			return junk, digest.FromBytes(junk)
		}},
		{name: "hard link to nothing", layer: []entry{file("a", "x"), hardlink("b", "nothing")}},
		{name: "file under a file", layer: []entry{file("a", "x"), file("a/b", "y")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newTestStore(t, Config{})
			l := newLayout(t, t.TempDir())
			layer := tt.layer
			if layer == nil {
				layer = []entry{file("f", "x")}
			}
			img := testImage{layers: []testLayer{{entries: layer}}, mangle: tt.mangle}
			_, err := s.Pull(context.Background(), l.tag(l.image(img), "bad"))
			var perr *PullError
			if !errors.As(err, &perr) || perr.Kind() != ErrBadImage || err.Error() != ErrBadImage.Error() {
				t.Fatalf("err = %v, want just %q", err, ErrBadImage)
			}
			t.Log(perr.Err)
			assertNoPartialState(t, s, 0)
		})
	}
}

// This host's own trouble (here, a full disk under the store) is no kind the
// client is told about: a 5xx, with the details in the log.
func TestPullHostFaultHasNoKind(t *testing.T) {
	requireRoot(t)
	root := t.TempDir()
	if err := unix.Mount("tmpfs", root, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(root, unix.MNT_DETACH) })
	s := newTestStore(t, Config{Root: filepath.Join(root, "images")})
	l := newLayout(t, t.TempDir())
	big := strings.Repeat("x", 4<<20)
	ref := l.tag(l.image(testImage{layers: []testLayer{{compression: "gzip", entries: []entry{
		{name: "big", typ: tar.TypeReg, mode: 0o644, body: big},
	}}}}), "big")
	_, err := s.Pull(context.Background(), ref)
	var perr *PullError
	if !errors.As(err, &perr) || perr.Kind() != nil || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("err = %v (%v), want no kind and ENOSPC", err, perr)
	}
	if err.Error() != "image could not be pulled (the executor's log has the details)" {
		t.Errorf("message = %q", err)
	}
}

func TestClassifyMirrorErrors(t *testing.T) {
	// containers/image's own wording for a pull whose mirrors all failed.
	mirrors := func(mirrorErr string, primary error) error {
		return fmt.Errorf("(Mirrors also failed: [mirror.test/x:v1: %s]): primary.test/x:v1: %w", mirrorErr, primary)
	}
	ping := errors.New("pinging container registry primary.test: Get \"https://primary.test/v2/\": dial tcp 10.0.0.1:443: connect: connection refused")
	tests := []struct {
		name string
		err  error
		want error
	}{
		{"mirror not found, primary ping", mirrors("reading manifest v1 in mirror.test/x: manifest unknown", ping), ErrImageNotFound},
		{"mirror name unknown, primary ping", mirrors("reading manifest v1 in mirror.test/x: name unknown: repository x not known", ping), ErrImageNotFound},
		{"mirror ping, primary ping", mirrors("pinging container registry mirror.test: connection refused", ping), ErrRegistryUnreachable},
		{"mirror not found, primary other", mirrors("manifest unknown", errors.New("something else")), nil},
		{"no mirrors, ping", ping, ErrRegistryUnreachable},
		// A primary whose answer merely quotes the words is no mirror's verdict.
		{"primary ping quoting the words", mirrors("pinging container registry mirror.test: refused",
			fmt.Errorf("%w (manifest unknown)", ping)), ErrRegistryUnreachable},
	}
	for _, tt := range tests {
		got := classify(fmt.Errorf("wrapped: %w", tt.err))
		if kindOf(got) != tt.want {
			t.Errorf("%s: classify = %v, want %v", tt.name, got, tt.want)
		}
	}
}

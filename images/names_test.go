package images

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// registries.conf [aliases] send a short name to the aliased repository,
// keeping the tag or digest; short names without an alias stay docker.io's.
// docker.io itself points at a dead port, so nothing can leave the machine.
func TestPullShortNameAlias(t *testing.T) {
	requireRoot(t)
	reg := newTestRegistry(t)
	l := newLayout(t, t.TempDir())
	desc := l.image(baseImage())
	reg.blobs = l.blobs
	reg.tags["aliased/repo:v1"] = desc.Digest

	conf := writeConf(t, fmt.Sprintf(`
[aliases]
"myalias" = "%[1]s/aliased/repo"
"team/tool" = "%[1]s/aliased/repo"

[[registry]]
location = %[1]q
insecure = true

[[registry]]
prefix = "docker.io"
location = %[2]q
`, reg.host(), closedPort(t)))
	s := newTestStore(t, Config{RegistriesConf: conf})

	tests := []struct{ in, want string }{
		{"myalias:v1", "docker://" + reg.host() + "/aliased/repo:v1"},
		{"myalias", "docker://" + reg.host() + "/aliased/repo:latest"},
		{"team/tool:v1", "docker://" + reg.host() + "/aliased/repo:v1"},
		{"myalias@" + desc.Digest.String(), "docker://" + reg.host() + "/aliased/repo@" + desc.Digest.String()},
		// No alias: docker.io, as docker pull does.
		{"openruntimes/node:v5-18.0", "docker://docker.io/openruntimes/node:v5-18.0"},
		{"other", "docker://docker.io/library/other:latest"},
		// Qualified names and explicit transports are never aliased.
		{"docker://myalias:v1", "docker://docker.io/library/myalias:v1"},
		{"docker.io/myalias:v1", "docker://docker.io/library/myalias:v1"},
		{"localhost/myalias:v1", "docker://localhost/myalias:v1"},
	}
	for _, tt := range tests {
		r, err := s.resolveReference(tt.in)
		if err != nil {
			t.Errorf("%q: %v", tt.in, err)
			continue
		}
		if got := canonicalName(r); got != tt.want {
			t.Errorf("%q -> %q, want %q", tt.in, got, tt.want)
		}
	}

	ctx := context.Background()
	img, err := s.Pull(ctx, "myalias:v1")
	if err != nil {
		t.Fatal(err)
	}
	if img.Digest != desc.Digest.String() || img.Ref != "myalias:v1" {
		t.Fatalf("image %+v", img)
	}
	// The alias and the name it stands for are one image; by digest it is
	// another record (another name), but no layer is fetched again.
	layersBefore := layerGets(reg, l)
	if _, err := s.Pull(ctx, reg.host()+"/aliased/repo:v1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pull(ctx, "myalias@"+desc.Digest.String()); err != nil {
		t.Fatal(err)
	}
	if got := layerGets(reg, l); got != layersBefore || layersBefore != 3 {
		t.Errorf("layer GETs: %d after the first pull, %d after the others", layersBefore, got)
	}
	if n := recordCount(t, s); n != 2 {
		t.Errorf("%d records, want 2 (tag and digest)", n)
	}
}

// layerGets counts the requests for layer blobs of l.
func layerGets(reg *testRegistry, l *testLayout) int {
	reg.mu.Lock()
	defer reg.mu.Unlock()
	n := 0
	for _, req := range reg.requests {
		if !strings.HasPrefix(req, "GET ") {
			continue
		}
		for d, b := range l.blobs {
			if strings.HasSuffix(req, "/blobs/"+d.String()) && strings.Contains(b.mediaType, "layer") {
				n++
			}
		}
	}
	return n
}

// A registry blocked in registries.conf is refused with ErrBlocked before it
// is asked anything, directly or through a short name; an image already in
// the store is still served.
func TestPullBlockedRegistry(t *testing.T) {
	requireRoot(t)
	reg := newTestRegistry(t)
	l := newLayout(t, t.TempDir())
	desc := l.image(baseImage())
	reg.blobs = l.blobs
	reg.tags["team/app:v1"] = desc.Digest
	reg.tags["openruntimes/node:v5"] = desc.Digest

	open := writeConf(t, fmt.Sprintf(`
[[registry]]
location = %q
insecure = true
`, reg.host()))
	blocked := writeConf(t, fmt.Sprintf(`
[[registry]]
location = %[1]q
insecure = true
blocked = true

[[registry]]
prefix = "docker.io"
location = "docker.io"
blocked = true

[[registry.mirror]]
location = %[1]q
insecure = true
`, reg.host()))

	ctx := context.Background()
	first := newTestStore(t, Config{RegistriesConf: open})
	if _, err := first.Pull(ctx, reg.host()+"/team/app:v1"); err != nil {
		t.Fatal(err)
	}
	reg.mu.Lock()
	reg.requests = nil
	reg.mu.Unlock()

	s := newTestStore(t, Config{RegistriesConf: blocked, Root: first.cfg.Root})
	for _, ref := range []string{reg.host() + "/team/other:v1", "openruntimes/node:v5", "docker://docker.io/library/node:20"} {
		_, err := s.Pull(ctx, ref)
		if !errors.Is(err, ErrBlocked) {
			t.Fatalf("Pull(%q) = %v, want ErrBlocked", ref, err)
		}
		var perr *PullError
		if !errors.As(err, &perr) || !strings.Contains(err.Error(), "blocked by registries.conf") || !strings.Contains(perr.Err.Error(), blocked) {
			t.Errorf("error does not say what blocks it (the file in the detail only): %v / %v", err, perr)
		}
		for _, other := range []error{ErrImageNotFound, ErrUnauthorized, ErrRegistryUnreachable} {
			if errors.Is(err, other) {
				t.Errorf("err also matches %v", other)
			}
		}
	}
	reg.mu.Lock()
	if len(reg.requests) != 0 {
		t.Errorf("a blocked registry was asked: %v", reg.requests)
	}
	reg.mu.Unlock()

	if _, err := s.Pull(ctx, reg.host()+"/team/app:v1"); err != nil {
		t.Errorf("an image pulled before the block: %v", err)
	}
}

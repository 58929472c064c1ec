package images

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Without an archive directory, the transports that read host paths are
// refused before anything is looked up: the message is the same whether the
// path exists, is a valid layout, or is nothing at all, and does not echo it.
func TestArchiveTransportsRefusedByDefault(t *testing.T) {
	requireRoot(t)
	l := newLayout(t, t.TempDir())
	valid := l.tag(l.image(baseImage()), "v1")
	archive := filepath.Join(t.TempDir(), "image.tar")
	if err := os.WriteFile(archive, []byte("not a tar"), 0o600); err != nil {
		t.Fatal(err)
	}
	s := newRegistryOnlyStore(t, Config{})
	for _, tt := range []struct {
		transport string
		refs      []string
	}{
		{"oci", []string{"oci:/etc", "oci:/etc:latest", "oci:/nonexistent/x", valid, "oci:relative:v1"}},
		{"oci-archive", []string{"oci-archive:/etc/shadow", "oci-archive:/nonexistent", "oci-archive:" + archive}},
		{"docker-archive", []string{"docker-archive:/etc/shadow", "docker-archive:/nonexistent:x", "docker-archive:" + archive, "docker-archive:/proc/self/environ"}},
	} {
		want := "invalid image reference: the " + tt.transport + ": transport reads files on the executor's host and is disabled " +
			"(no image archive directory is configured); use a registry reference"
		for _, ref := range tt.refs {
			_, err := s.Pull(context.Background(), ref)
			if !errors.Is(err, ErrInvalidReference) || err.Error() != want {
				t.Errorf("Pull(%q) = %v, want %q", ref, err, want)
			}
		}
	}
	if entries, _ := os.ReadDir(s.layersDir()); len(entries) != 0 {
		t.Error("a refused reference was unpacked")
	}
}

// With an archive directory, only paths inside it are read: ".." and
// absolute paths outside it are refused by their spelling, and a symlink
// planted in it that points out of it resolves inside it instead (as if the
// directory were "/"), so the layout it points at is never read.
func TestArchiveDirConfinement(t *testing.T) {
	requireRoot(t)
	base := t.TempDir()
	dir, outside := filepath.Join(base, "archives"), filepath.Join(base, "outside")
	for _, d := range []string{dir, outside} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	inside := newLayout(t, filepath.Join(dir, "good"))
	inside.tag(inside.image(baseImage()), "v1")
	out := newLayout(t, filepath.Join(outside, "layout"))
	out.tag(out.image(baseImage()), "v1")
	outArchive := filepath.Join(outside, "image.tar")
	if err := os.WriteFile(outArchive, []byte("outside"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, target := range map[string]string{
		"abs":      out.dir,
		"rel":      "../outside/layout",
		"up":       "..",
		"root":     "/",
		"abs-tar":  outArchive,
		"loop":     "loop",
		"etc-link": "/etc",
	} {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	// The setting itself may be a symlink: paths are confined to what it resolves to.
	link := filepath.Join(base, "archives-link")
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}

	s := newTestStore(t, Config{ArchiveDir: link})
	ctx := context.Background()
	for _, ref := range []string{"oci:" + dir + "/good:v1", "oci:good:v1", "oci:" + link + "/good:v1", "oci:./good:v1"} {
		if _, err := s.Pull(ctx, ref); err != nil {
			t.Errorf("Pull(%q) inside the archive dir: %v", ref, err)
		}
	}

	notFound := "image not found"
	tests := []struct {
		ref  string
		want error
		msg  string
	}{
		{"oci:" + out.dir + ":v1", ErrInvalidReference, "invalid image reference: oci: paths must be inside the image archive directory"},
		{"oci:/etc:v1", ErrInvalidReference, "invalid image reference: oci: paths must be inside the image archive directory"},
		{"oci:" + dir + "/../outside/layout:v1", ErrInvalidReference, `invalid image reference: oci: paths must not contain ".."`},
		{"oci:../outside/layout:v1", ErrInvalidReference, `invalid image reference: oci: paths must not contain ".."`},
		{"docker-archive:" + dir + "/..", ErrInvalidReference, `invalid image reference: docker-archive: paths must not contain ".."`},
		{"oci-archive:" + outArchive, ErrInvalidReference, "invalid image reference: oci-archive: paths must be inside the image archive directory"},
		{"oci:", ErrInvalidReference, "invalid image reference: oci: empty path"},
		// Symlinks pointing out resolve inside: there is nothing there.
		{"oci:" + dir + "/abs:v1", ErrImageNotFound, notFound},
		{"oci:rel:v1", ErrImageNotFound, notFound},
		{"oci:up/outside/layout:v1", ErrImageNotFound, notFound},
		{"oci:root" + out.dir + ":v1", ErrImageNotFound, notFound},
		{"oci-archive:abs-tar", ErrImageNotFound, notFound},
		{"docker-archive:abs-tar", ErrImageNotFound, notFound},
		{"oci:missing:v1", ErrImageNotFound, notFound},
		{"oci:etc-link:v1", ErrImageNotFound, notFound},
		{"oci:loop:v1", ErrInvalidReference, "invalid image reference: oci: the path cannot be resolved inside the image archive directory"},
	}
	for _, tt := range tests {
		_, err := s.Pull(ctx, tt.ref)
		if !errors.Is(err, tt.want) || err.Error() != tt.msg {
			t.Errorf("Pull(%q) = %v, want %q", tt.ref, err, tt.msg)
		}
		if err != nil && strings.Contains(err.Error(), base) {
			t.Errorf("Pull(%q): the message echoes a path: %v", tt.ref, err)
		}
	}
	if n := recordCount(t, s); n != 1 {
		t.Errorf("%d image records, want only the one inside the archive dir", n)
	}
}

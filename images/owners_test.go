package images

import (
	"archive/tar"
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"executor/oci"
)

// ownersLayer holds the owners real images carry: root, an ordinary user,
// npm's 1516583083 (npm 9+ as root keeps the owners of package tarballs),
// macOS's 501:20, and ids at and past the edges of the ranges.
func ownersLayer() []entry {
	return []entry{
		{name: "root-file", typ: tar.TypeReg, mode: 0o644, body: "x"},
		{name: "user-file", typ: tar.TypeReg, mode: 0o644, body: "x", uid: 1000},
		{name: "node_modules/", typ: tar.TypeDir, mode: 0o755, uid: 1516583083},
		{name: "node_modules/npm.js", typ: tar.TypeReg, mode: 0o600, body: "x", uid: 1516583083},
		{name: "node_modules/npm-link", typ: tar.TypeLink, link: "node_modules/npm.js", uid: 1516583083},
		{name: "node_modules/mac.js", typ: tar.TypeReg, mode: 0o644, body: "x", uid: 501, gid: 20},
		{name: "node_modules/mixed.js", typ: tar.TypeReg, mode: 0o644, body: "x", uid: 1000, gid: 1516583083},
		{name: "full-last", typ: tar.TypeReg, mode: 0o644, body: "x", uid: 4294901758},
		{name: "full-past", typ: tar.TypeReg, mode: 0o644, body: "x", uid: 4294901759},
		{name: "no-id", typ: tar.TypeReg, mode: 0o644, body: "x", uid: 1<<32 - 1},
		{name: "past-32-bits", typ: tar.TypeSymlink, link: "root-file", uid: 1<<32 + 1000},
	}
}

// Owners keep their meaning wherever the range holds them (shifted by the
// map); those it cannot hold become nobody (65534) inside, instead of
// failing the layer, and are counted for the pull's one warning.
func TestUnpackSquashesOwnersOutsideTheRange(t *testing.T) {
	requireRoot(t)
	const nobody = OverflowID
	tests := []struct {
		name  string
		idmap *oci.IDMap
		// want is each file's owner as the image's runtime sees it (before
		// the shift onto host ids).
		want     map[string][2]int
		squashed int64
		first    string
	}{
		{
			name:  "small range",
			idmap: &oci.IDMap{HostUID: 200000, HostGID: 300000, Size: 65536},
			want: map[string][2]int{
				"root-file": {0, 0}, "user-file": {1000, 1000},
				"node_modules": {nobody, nobody}, "node_modules/npm.js": {nobody, nobody},
				"node_modules/mac.js": {501, 20}, "node_modules/mixed.js": {1000, nobody},
				"full-last": {nobody, nobody}, "full-past": {nobody, nobody}, "no-id": {nobody, nobody},
				"past-32-bits": {nobody, nobody},
			},
			squashed: 8, first: "node_modules/",
		},
		{
			name:  "full range",
			idmap: &oci.IDMap{HostUID: 65536, HostGID: 65536, Size: 4294901759},
			want: map[string][2]int{
				"root-file": {0, 0}, "user-file": {1000, 1000},
				"node_modules": {1516583083, 1516583083}, "node_modules/npm.js": {1516583083, 1516583083},
				"node_modules/mac.js": {501, 20}, "node_modules/mixed.js": {1000, 1516583083},
				"full-last": {4294901758, 4294901758}, "full-past": {nobody, nobody}, "no-id": {nobody, nobody},
				"past-32-bits": {nobody, nobody},
			},
			squashed: 3, first: "full-past",
		},
		{
			name: "no map",
			want: map[string][2]int{
				"root-file": {0, 0}, "user-file": {1000, 1000},
				"node_modules": {1516583083, 1516583083}, "node_modules/npm.js": {1516583083, 1516583083},
				"node_modules/mac.js": {501, 20}, "node_modules/mixed.js": {1000, 1516583083},
				"full-last": {4294901758, 4294901758}, "full-past": {4294901759, 4294901759}, "no-id": {nobody, nobody},
				"past-32-bits": {nobody, nobody},
			},
			squashed: 2, first: "no-id",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sb := newSandbox(t)
			st, err := unpackLayer(bytes.NewReader(buildTar(t, ownersLayer()...)), sb.dest,
				unpackOptions{idmap: tt.idmap, budget: newPullBudget(DefaultSizeLimit, DefaultMaxEntries)})
			if err != nil {
				t.Fatal(err)
			}
			var hostUID, hostGID int
			if tt.idmap != nil {
				hostUID, hostGID = int(tt.idmap.HostUID), int(tt.idmap.HostGID)
			}
			for name, want := range tt.want {
				var st unix.Stat_t
				if err := unix.Lstat(filepath.Join(sb.dest, name), &st); err != nil {
					t.Fatal(err)
				}
				if int(st.Uid) != hostUID+want[0] || int(st.Gid) != hostGID+want[1] {
					t.Errorf("%s owned by %d:%d on the host, want %d:%d", name, st.Uid, st.Gid, hostUID+want[0], hostGID+want[1])
				}
			}
			// The hard link is the file it names, whatever its own header said.
			var a, b unix.Stat_t
			if unix.Lstat(filepath.Join(sb.dest, "node_modules/npm.js"), &a) != nil ||
				unix.Lstat(filepath.Join(sb.dest, "node_modules/npm-link"), &b) != nil || a.Ino != b.Ino {
				t.Errorf("hard link not kept")
			}
			if st.owners.files != tt.squashed || st.owners.first != tt.first {
				t.Errorf("squashed %d entries, first %q; want %d, %q", st.owners.files, st.owners.first, tt.squashed, tt.first)
			}
		})
	}
}

// A pull warns once per image, however many of its layers and files had
// owners the range cannot hold, and runs: the files belong to nobody.
func TestPullWarnsOncePerImageForSquashedOwners(t *testing.T) {
	requireRoot(t)
	const msg = "image has files owned by ids outside the runtimes' id range; they belong to nobody (65534) instead"
	log, counts := newCountingLogger()
	m := &oci.IDMap{HostUID: 200000, HostGID: 200000, Size: 65536}
	s := newTestStore(t, Config{Root: t.TempDir(), IDMap: m, Logger: log})
	l := newLayout(t, t.TempDir())
	img := baseImage()
	img.layers = append(img.layers,
		testLayer{compression: "gzip", entries: ownersLayer()},
		testLayer{compression: "zstd", entries: []entry{
			{name: "usr/", typ: tar.TypeDir, mode: 0o755},
			{name: "usr/lib/", typ: tar.TypeDir, mode: 0o755, uid: 501, gid: 20},
			{name: "usr/lib/npm.js", typ: tar.TypeReg, mode: 0o644, body: "y", uid: 1516583083},
		}})
	ref := l.tag(l.image(img), "owners")
	pulled, err := s.Pull(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	if n := counts.count(msg); n != 1 {
		t.Errorf("%d warnings, want one for the image", n)
	}
	root := mountRoot(t, s, pulled, t.TempDir())
	for name, want := range map[string][2]uint32{
		"node_modules/npm.js":   {200000 + OverflowID, 200000 + OverflowID},
		"node_modules/mac.js":   {200501, 200020},
		"usr/lib":               {200501, 200020},
		"usr/lib/npm.js":        {200000 + OverflowID, 200000 + OverflowID},
		"etc/hello":             {200000, 200000},
		"node_modules/mixed.js": {201000, 200000 + OverflowID},
	} {
		var st unix.Stat_t
		if err := unix.Lstat(filepath.Join(root, name), &st); err != nil {
			t.Fatal(err)
		}
		if st.Uid != want[0] || st.Gid != want[1] {
			t.Errorf("%s owned by %d:%d, want %d:%d", name, st.Uid, st.Gid, want[0], want[1])
		}
	}
	// Pulled again (from the store), nothing is unpacked and nothing warned.
	if _, err := s.Pull(context.Background(), ref); err != nil {
		t.Fatal(err)
	}
	if n := counts.count(msg); n != 1 {
		t.Errorf("%d warnings after a second pull, want still one", n)
	}
}

// The store refuses id maps the kernel could not set up or that cannot hold
// nobody, and takes the full range.
func TestNewValidatesIDMap(t *testing.T) {
	requireRoot(t)
	tests := []struct {
		m  oci.IDMap
		ok bool
	}{
		{oci.IDMap{HostUID: 65536, HostGID: 65536, Size: 4294901759}, true},
		{oci.IDMap{HostUID: 1000000000, HostGID: 1000000000, Size: 65536}, true},
		{oci.IDMap{HostUID: 65536, HostGID: 65536, Size: 4294901760}, false},
		{oci.IDMap{HostUID: 1000000000, HostGID: 1000000000, Size: 65535}, false},
		{oci.IDMap{HostUID: 0, HostGID: 1000, Size: 65536}, false},
		{oci.IDMap{HostUID: 4294901760, HostGID: 1000, Size: 65536}, false},
	}
	policy := filepath.Join(t.TempDir(), "policy.json")
	if err := os.WriteFile(policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		m := tt.m
		_, err := New(Config{Root: t.TempDir(), IDMap: &m, PolicyPath: policy, Logger: slog.New(slog.DiscardHandler)})
		if (err == nil) != tt.ok {
			t.Errorf("%+v: New = %v, want ok=%v", tt.m, err, tt.ok)
		}
	}
}

// validateIDMap's messages are part of New's error ("images: id map ...: ");
// they are the store's own, not oci's.
func TestValidateIDMap(t *testing.T) {
	tests := []struct {
		m    oci.IDMap
		want string // "" means valid
	}{
		{*oci.FullIDMap(), ""},
		{oci.IDMap{HostUID: 1, HostGID: 1, Size: 4294967294}, ""},
		{oci.IDMap{HostUID: 0, HostGID: 1000, Size: 65536}, "host ids must be positive"},
		{oci.IDMap{HostUID: 1000, HostGID: -1, Size: 65536}, "host ids must be positive"},
		{oci.IDMap{HostUID: 1000, HostGID: 1000, Size: 65535}, "the range must hold at least 65536 ids"},
		{oci.IDMap{HostUID: 2, HostGID: 1, Size: 4294967294}, "the range goes past the largest id 4294967294"},
		{oci.IDMap{HostUID: 1, HostGID: 1, Size: 4294967295}, "the range goes past the largest id 4294967294"},
	}
	for _, tt := range tests {
		err := validateIDMap(tt.m)
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tt.want {
			t.Errorf("validateIDMap(%+v) = %q, want %q", tt.m, got, tt.want)
		}
	}
}

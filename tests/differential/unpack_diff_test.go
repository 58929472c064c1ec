package differential

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"executor/images"
	"executor/oci"
	"executor/tests/testenv"
)

// env is what every comparison shares.
var env struct {
	registry       *testenv.Registry
	registriesConf string // names the registry, plain HTTP
	policy         string // accepts anything: the images are unsigned
	skopeo, umoci  string
}

func TestMain(m *testing.M) {
	if os.Getuid() != 0 {
		fmt.Fprintln(os.Stderr, "differential: these tests need root (owners, devices, overlay mounts); CI runs them as root")
		os.Exit(1)
	}
	code, err := setup(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "differential setup:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func setup(m *testing.M) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var err error
	if env.skopeo, err = tool("skopeo"); err != nil {
		return 1, err
	}
	if env.umoci, err = tool("umoci"); err != nil {
		return 1, err
	}
	work, err := os.MkdirTemp("", "differential-")
	if err != nil {
		return 1, err
	}
	defer os.RemoveAll(work)
	env.registry, err = testenv.StartRegistry(ctx, testenv.RegistryConfig{Dir: filepath.Join(work, "registry")})
	if err != nil {
		return 1, err
	}
	defer env.registry.Stop()
	env.registriesConf = filepath.Join(work, "registries.conf")
	conf := fmt.Sprintf("[[registry]]\nlocation = %q\ninsecure = true\n", env.registry.Addr())
	if err := os.WriteFile(env.registriesConf, []byte(conf), 0o644); err != nil {
		return 1, err
	}
	env.policy = filepath.Join(work, "policy.json")
	if err := os.WriteFile(env.policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o644); err != nil {
		return 1, err
	}
	return m.Run(), nil
}

// tool finds skopeo or umoci on PATH or in GOPATH/bin, where .ci/run puts umoci.
func tool(name string) (string, error) {
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	if gopath, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		p := filepath.Join(strings.TrimSpace(string(gopath)), "bin", name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s is missing: the differential test compares against it (.ci/run installs it)", name)
}

// overflowID is what a mapping that cannot hold an owner shows instead
// (the kernel's overflowuid, "nobody"), as containers-storage does with
// ignore_chown_errors.
const overflowID = 65534

// mappings are the stores each image is pulled into: owners as they are
// (OPR_EXECUTOR_USERNS=off), shifted into the daemon's default range (every
// id an image can use), and shifted into the 65536 ids an operator's
// OPR_EXECUTOR_USERNS=1000000000:65536 gives.
var mappings = []struct {
	name  string
	idmap *oci.IDMap
}{
	{"host-ids", nil},
	{"full-range", oci.FullIDMap()},
	{"65536-ids", &oci.IDMap{HostUID: 1_000_000_000, HostGID: 1_000_000_000, Size: 1 << 16}},
}

// TestUnpackMatchesReference pulls each image into our store, mounts its
// root, and compares it entry by entry with the same image unpacked by the
// reference. The stores are shared by all images, as a daemon's is.
func TestUnpackMatchesReference(t *testing.T) {
	ctx := context.Background()
	stores := make([]*images.Store, len(mappings))
	for i, m := range mappings {
		s, err := images.New(images.Config{
			Root:           filepath.Join(t.TempDir(), "store"),
			RegistriesConf: env.registriesConf,
			PolicyPath:     env.policy,
			IDMap:          m.idmap,
			Logger:         slog.New(slog.DiscardHandler),
		})
		if err != nil {
			t.Fatal(err)
		}
		stores[i] = s
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ref, manifests := push(t, c)
			var theirs map[string]node
			want, index := c.hostPlatform()
			if c.wantErr == nil {
				theirs = unpackReference(t, c, ref)
			}
			for i, m := range mappings {
				t.Run(m.name, func(t *testing.T) {
					img, err := stores[i].Pull(ctx, ref)
					if c.wantErr != nil {
						if !errors.Is(err, c.wantErr) || err == nil || !strings.Contains(err.Error(), c.wantErrText) {
							t.Fatalf("pull: %v; want %v saying %q", err, c.wantErr, c.wantErrText)
						}
						return
					}
					if err != nil {
						t.Fatalf("pull: %v (%v)", err, errors.Unwrap(err))
					}
					if img.Digest != manifests[index].Digest.String() {
						t.Errorf("pulled manifest %s, want %s (linux/%s)", img.Digest, manifests[index].Digest, want.Platform.Architecture)
					}
					checkConfig(t, img.Config, want.Config)
					dir := filepath.Join(t.TempDir(), "runtime")
					rootfs, err := stores[i].MountRoot(ctx, img, dir)
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() {
						if err := stores[i].UnmountRoot(dir); err != nil {
							t.Error(err)
						}
					})
					ours, err := scan(rootfs)
					if err != nil {
						t.Fatal(err)
					}
					// GNU tar sets a directory's mtime before it makes the
					// symlinks in it, so only umoci's are the image's.
					dirMtimes := c.reference == viaUmoci
					if diffs := compare(theirs, ours, owners{m.idmap}, dirMtimes); len(diffs) > 0 {
						if len(diffs) > 60 {
							diffs = append(diffs[:60], fmt.Sprintf("... and %d more", len(diffs)-60))
						}
						t.Errorf("our root differs from the reference's (%d layers):\n%s", len(want.Layers), strings.Join(diffs, "\n"))
					}
				})
			}
		})
	}
}

// push builds the case's image (or list) and pushes it as it was built. It
// returns the reference and the manifests' descriptors.
func push(t *testing.T, c imageCase) (string, []ocispec.Descriptor) {
	t.Helper()
	layout := filepath.Join(t.TempDir(), "built")
	var manifests []ocispec.Descriptor
	for _, spec := range c.images {
		desc, err := testenv.WriteImage(layout, spec)
		if err != nil {
			t.Fatal(err)
		}
		manifests = append(manifests, desc)
	}
	top := manifests[0]
	if len(manifests) > 1 {
		var err error
		if top, err = testenv.WriteManifestList(layout, c.list, manifests); err != nil {
			t.Fatal(err)
		}
	}
	repo := "diff/" + c.name
	if err := testenv.PushRaw(context.Background(), env.registry.Addr(), repo, "v1", layout, top); err != nil {
		t.Fatal(err)
	}
	return env.registry.Addr() + "/" + repo + ":v1", manifests
}

// unpackReference fetches the image with skopeo (the host's platform of a
// list, converted to OCI) and unpacks it with the case's reference.
func unpackReference(t *testing.T, c imageCase, ref string) map[string]node {
	t.Helper()
	dir := t.TempDir()
	layout, bundle := filepath.Join(dir, "layout"), filepath.Join(dir, "bundle")
	run(t, env.skopeo, "--insecure-policy", "--registries-conf", env.registriesConf, "copy", "--quiet",
		"--src-tls-verify=false", "docker://"+ref, "oci:"+layout+":v1")
	rootfs := filepath.Join(bundle, "rootfs")
	switch c.reference {
	case viaUmoci:
		run(t, env.umoci, "unpack", "--image", layout+":v1", bundle)
	case viaGNUTar:
		if err := os.MkdirAll(rootfs, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := extractWithGNUTar(layout, "v1", rootfs); err != nil {
			t.Fatal(err)
		}
	}
	tree, err := scan(rootfs)
	if err != nil {
		t.Fatal(err)
	}
	return tree
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
}

// extractWithGNUTar applies the layers of the image tagged tag in the OCI
// layout, bottom first, with GNU tar as root keeps them: numeric owners,
// permissions, xattrs of every namespace. GNU tar does not apply whiteouts,
// so a layer with one is refused rather than compared wrongly.
func extractWithGNUTar(layout, tag, rootfs string) error {
	var index ocispec.Index
	if err := testenv.ReadJSON(filepath.Join(layout, "index.json"), &index); err != nil {
		return err
	}
	var manifest ocispec.Manifest
	for _, d := range index.Manifests {
		if d.Annotations[ocispec.AnnotationRefName] == tag {
			if err := testenv.ReadJSON(testenv.BlobPath(layout, d.Digest), &manifest); err != nil {
				return err
			}
		}
	}
	if len(manifest.Layers) == 0 {
		return fmt.Errorf("%s: no image tagged %s with layers", layout, tag)
	}
	for _, l := range manifest.Layers {
		raw, err := os.ReadFile(testenv.BlobPath(layout, l.Digest))
		if err != nil {
			return err
		}
		var r io.Reader = bytes.NewReader(raw)
		switch {
		case strings.HasSuffix(l.MediaType, "gzip"):
			if r, err = gzip.NewReader(r); err != nil {
				return fmt.Errorf("layer %s: %w", l.Digest, err)
			}
		case strings.HasSuffix(l.MediaType, "zstd"):
			zr, err := zstd.NewReader(r)
			if err != nil {
				return fmt.Errorf("layer %s: %w", l.Digest, err)
			}
			defer zr.Close()
			r = zr
		}
		tarball, err := io.ReadAll(r)
		if err != nil {
			return fmt.Errorf("layer %s: %w", l.Digest, err)
		}
		cmd := exec.Command("tar", "-t")
		cmd.Stdin = bytes.NewReader(tarball)
		list, err := cmd.Output()
		if err != nil {
			return fmt.Errorf("tar -t layer %s: %w", l.Digest, err)
		}
		if strings.Contains(string(list), ".wh.") {
			return fmt.Errorf("layer %s holds whiteouts, which GNU tar does not apply: compare it with umoci", l.Digest)
		}
		cmd = exec.Command("tar", "-x", "--numeric-owner", "--same-owner", "--preserve-permissions",
			"--xattrs", "--xattrs-include=*", "-C", rootfs)
		cmd.Stdin = bytes.NewReader(tarball)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("tar -x layer %s: %w: %s", l.Digest, err, out)
		}
	}
	return nil
}

// checkConfig compares what the store keeps of the image's config.
func checkConfig(t *testing.T, got images.ImageConfig, want ocispec.ImageConfig) {
	t.Helper()
	if got.User != want.User || got.WorkingDir != want.WorkingDir || !slices.Equal(got.Env, want.Env) ||
		!slices.Equal(got.Entrypoint, want.Entrypoint) || !slices.Equal(got.Cmd, want.Cmd) {
		t.Errorf("config: got User %q WorkingDir %q Env %q Entrypoint %q Cmd %q;\nwant User %q WorkingDir %q Env %q Entrypoint %q Cmd %q",
			got.User, got.WorkingDir, got.Env, got.Entrypoint, got.Cmd,
			want.User, want.WorkingDir, want.Env, want.Entrypoint, want.Cmd)
	}
}

// node is what is compared of one entry of a root.
type node struct {
	typ      uint32 // S_IFMT bits
	perm     uint32 // permission, setuid, setgid and sticky bits
	uid, gid uint32
	size     int64
	sum      string // sha256 of a regular file's content
	target   string // a symlink's
	rdev     uint64
	mtime    time.Time
	xattrs   map[string]string
	ino      uint64
}

// scan reads every entry under root, root itself excluded: its attributes
// are the runtime's, not the image's.
func scan(root string) (map[string]node, error) {
	tree := map[string]node{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil || rel == "." {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			return &os.PathError{Op: "lstat", Path: path, Err: err}
		}
		n := node{
			typ: st.Mode & unix.S_IFMT, perm: st.Mode & 0o7777, uid: st.Uid, gid: st.Gid,
			rdev: st.Rdev, mtime: time.Unix(st.Mtim.Unix()), ino: st.Ino,
		}
		switch n.typ {
		case unix.S_IFREG:
			n.size = st.Size
			if n.sum, err = fileSum(path); err != nil {
				return err
			}
		case unix.S_IFLNK:
			n.perm = 0 // always 0777 on Linux; nothing sets it
			if n.target, err = os.Readlink(path); err != nil {
				return err
			}
		}
		if n.xattrs, err = xattrs(path); err != nil {
			return err
		}
		tree[rel] = n
		return nil
	})
	return tree, err
}

func fileSum(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// xattrs reads path's extended attributes but overlayfs' own, which are
// how each side stores whiteouts, not part of the image.
func xattrs(path string) (map[string]string, error) {
	size, err := unix.Llistxattr(path, nil)
	if err != nil || size == 0 {
		return nil, err
	}
	buf := make([]byte, size)
	if size, err = unix.Llistxattr(path, buf); err != nil {
		return nil, &os.PathError{Op: "llistxattr", Path: path, Err: err}
	}
	out := map[string]string{}
	for name := range strings.SplitSeq(string(buf[:size]), "\x00") {
		if name == "" || strings.HasPrefix(name, "trusted.overlay.") || strings.HasPrefix(name, "user.overlay.") {
			continue
		}
		vsize, err := unix.Lgetxattr(path, name, nil)
		if err != nil {
			return nil, &os.PathError{Op: "lgetxattr " + name, Path: path, Err: err}
		}
		v := make([]byte, vsize)
		if vsize, err = unix.Lgetxattr(path, name, v); err != nil {
			return nil, &os.PathError{Op: "lgetxattr " + name, Path: path, Err: err}
		}
		out[name] = string(v[:vsize])
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}

// owners translates between the reference's owners (the image's) and ours
// (shifted into the store's mapping).
type owners struct{ m *oci.IDMap }

// image turns one of our host ids back into the image's id; ok is false
// when it lies outside the mapping, which nothing in the store should.
func (o owners) image(id uint32, hostBase int64) (uint32, bool) {
	if o.m == nil {
		return id, true
	}
	c := int64(id) - hostBase
	return uint32(c), c >= 0 && c < o.m.Size
}

// expected is what an image id must look like after the mapping: itself
// when the mapping holds it, else the overflow id.
func (o owners) expected(id uint32) uint32 {
	if o.m == nil || int64(id) < o.m.Size {
		return id
	}
	return overflowID
}

// compare lists how ours differs from theirs. Device nodes are the one
// difference on purpose: the store leaves them out (a runtime gets its own
// /dev), so each must be missing from ours, hard links to it included.
func compare(theirs, ours map[string]node, own owners, dirMtimes bool) []string {
	var diffs []string
	add := func(format string, args ...any) { diffs = append(diffs, fmt.Sprintf(format, args...)) }
	for _, p := range sortedKeys(theirs) {
		t := theirs[p]
		o, ok := ours[p]
		if t.typ == unix.S_IFCHR || t.typ == unix.S_IFBLK {
			if ok {
				add("%s: device %d:%d was created (mode %o)", p, unix.Major(t.rdev), unix.Minor(t.rdev), o.typ|o.perm)
			}
			continue
		}
		if !ok {
			add("%s: missing (reference: %s)", p, describe(t))
			continue
		}
		if t.typ != o.typ {
			add("%s: type %s, reference %s", p, typeName(o.typ), typeName(t.typ))
			continue
		}
		if t.perm != o.perm {
			add("%s: mode %04o, reference %04o", p, o.perm, t.perm)
		}
		var hostUID, hostGID int64
		if own.m != nil {
			hostUID, hostGID = own.m.HostUID, own.m.HostGID
		}
		uid, uok := own.image(o.uid, hostUID)
		gid, gok := own.image(o.gid, hostGID)
		switch {
		case !uok || !gok:
			add("%s: host owner %d:%d is outside the mapping", p, o.uid, o.gid)
		case uid != own.expected(t.uid) || gid != own.expected(t.gid):
			add("%s: owner %d:%d (host %d:%d), image says %d:%d, want %d:%d", p, uid, gid, o.uid, o.gid,
				t.uid, t.gid, own.expected(t.uid), own.expected(t.gid))
		}
		if t.size != o.size || t.sum != o.sum {
			add("%s: %d bytes sha256 %.12s, reference %d bytes sha256 %.12s", p, o.size, o.sum, t.size, t.sum)
		}
		if t.target != o.target {
			add("%s: symlink to %q, reference %q", p, o.target, t.target)
		}
		if !t.mtime.Equal(o.mtime) && (dirMtimes || t.typ != unix.S_IFDIR) {
			add("%s: mtime %s, reference %s", p, o.mtime.UTC().Format(time.RFC3339Nano), t.mtime.UTC().Format(time.RFC3339Nano))
		}
		if !mapsEqual(t.xattrs, o.xattrs) {
			add("%s: xattrs %q, reference %q", p, o.xattrs, t.xattrs)
		}
	}
	for _, p := range sortedKeys(ours) {
		if _, ok := theirs[p]; !ok {
			add("%s: not in the reference (%s)", p, describe(ours[p]))
		}
	}
	// Hard links: the names sharing an inode must be the same sets. Inode
	// numbers differ between the trees; the groups must not.
	theirGroups, ourGroups := linkGroups(theirs), linkGroups(ours)
	for _, p := range sortedKeys(theirs) {
		t, ok := ours[p]
		if !ok || t.typ == unix.S_IFDIR {
			continue
		}
		if tg, og := theirGroups[theirs[p].ino], ourGroups[t.ino]; !slices.Equal(tg, og) {
			add("%s: hard linked with %q, reference %q", p, og, tg)
		}
	}
	return diffs
}

// linkGroups maps each inode to the sorted names it has in the tree.
func linkGroups(tree map[string]node) map[uint64][]string {
	g := map[uint64][]string{}
	for _, p := range sortedKeys(tree) {
		if n := tree[p]; n.typ != unix.S_IFDIR {
			g[n.ino] = append(g[n.ino], p)
		}
	}
	return g
}

func describe(n node) string {
	return fmt.Sprintf("%s %04o %d:%d %d bytes", typeName(n.typ), n.perm, n.uid, n.gid, n.size)
}

func typeName(t uint32) string {
	switch t {
	case unix.S_IFREG:
		return "file"
	case unix.S_IFDIR:
		return "directory"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFCHR:
		return "char device"
	case unix.S_IFBLK:
		return "block device"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFSOCK:
		return "socket"
	}
	return fmt.Sprintf("type %o", t)
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func sortedKeys(m map[string]node) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

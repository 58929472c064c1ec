package differential

import (
	"archive/tar"
	"bytes"
	"path"
	"runtime"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"executor/images"
	"executor/tests/testenv"
)

// reference is the independent unpacker an image is compared with.
type reference int

const (
	// viaUmoci: `skopeo copy docker://… oci:…` then `umoci unpack`, which
	// applies every layer with its whiteouts into one directory.
	viaUmoci reference = iota
	// viaGNUTar: skopeo copy, then GNU tar extracts each layer in order. For
	// layers umoci cannot read (old GNU sparse entries, typeflag 'S'); such
	// images hold no whiteouts, which GNU tar would leave as files.
	viaGNUTar
)

// imageCase is one image of the differential test.
type imageCase struct {
	name string
	// images holds one image, or the platforms of a manifest list.
	images []testenv.ImageSpec
	// list is the schema of the manifest list when there are several images.
	list      testenv.ManifestFormat
	reference reference
	// wantErr, when set, is the error the pull must fail with (errors.Is),
	// and wantErrText a part of its message; nothing is compared then.
	wantErr     error
	wantErrText string
}

// hostPlatform is the image of a list the pull must choose.
func (c imageCase) hostPlatform() (testenv.ImageSpec, int) {
	for i, s := range c.images {
		if len(c.images) == 1 || s.Platform.Architecture == runtime.GOARCH {
			return s, i
		}
	}
	return testenv.ImageSpec{}, -1
}

var (
	// Owners real images carry: npm as root keeps the owners of its package
	// tarballs (1516583083 in a rebuilt Open Runtimes image; 501:20 from
	// macOS), and everything around the edges of a 65536-id range and of
	// 32-bit signed arithmetic.
	npmUID    = 1516583083
	macUID    = 501
	macGID    = 20
	deepDir   = strings.Repeat("a", 100) + "/" + strings.Repeat("b", 100) + "/" + strings.Repeat("c", 100)
	longLink  = "/" + deepDir + "/" + strings.Repeat("t", 60)
	block     = bytes.Repeat([]byte("data-block-"), 512)[:4096]
	capRaw    = testenv.FileCapability(13) // cap_net_raw, what ping carries
	capBind   = testenv.FileCapability(10) // cap_net_bind_service
	paxFile   = testenv.TarFile(deepDir+"/pax-file-"+strings.Repeat("p", 80), 0o644, "pax\n").In(tar.FormatPAX)
	gnuFile   = testenv.TarFile(deepDir+"/gnu-file-"+strings.Repeat("g", 80), 0o644, "gnu\n").In(tar.FormatGNU)
	shortFile = testenv.TarFile("srv/short", 0o644, "short\n")
	linked    = testenv.TarFile("srv/a", 0o640, "linked\n").Owned(npmUID, macGID).In(tar.FormatPAX)
	upper     = testenv.TarFile("srv/x", 0o644, "upper\n")
	baseLayer = testenv.Layer{Entries: []testenv.Entry{
		testenv.TarDir("bin", 0o755), testenv.TarDir("etc", 0o755), testenv.TarDir("srv", 0o755), testenv.TarDir("usr", 0o755),
		testenv.TarFile("etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\n"),
		testenv.TarSymlink("bin/sh", "busybox"),
		testenv.TarFile("bin/busybox", 0o755, "not really busybox\n"),
	}}
)

func sparseFile(format testenv.SparseFormat, size int64, chunks ...testenv.SparseChunk) testenv.Sparse {
	return testenv.Sparse{Format: format, Size: size, Chunks: chunks}
}

// sparseLayer holds sparse files as `tar --sparse` writes them in format.
func sparseLayer(format testenv.SparseFormat) testenv.Layer {
	var many []testenv.SparseChunk
	for i := range 30 { // more chunks than an old GNU header holds
		many = append(many, testenv.SparseChunk{Offset: int64(i) * 65536, Data: block[:1024]})
	}
	return testenv.Layer{Entries: []testenv.Entry{
		testenv.TarDir("var", 0o755), testenv.TarDir("var/log", 0o755), testenv.TarDir("var/lib", 0o755),
		// lastlog: a few records far apart, ending in a hole.
		testenv.TarSparse("var/log/lastlog", 0o664, sparseFile(format, 16<<20,
			testenv.SparseChunk{Offset: 0, Data: block}, testenv.SparseChunk{Offset: 8 << 20, Data: block[:700]})).Owned(0, 43),
		// Starts with a hole, ends in data.
		testenv.TarSparse("var/lib/tail.db", 0o600, sparseFile(format, 1<<20+512,
			testenv.SparseChunk{Offset: 1 << 20, Data: block[:512]})).Owned(npmUID, macGID),
		// All hole.
		testenv.TarSparse("var/lib/empty.img", 0o644, sparseFile(format, 4<<20)),
		testenv.TarSparse("var/lib/many", 0o644, sparseFile(format, 30*65536+100, many...)),
		// Zeros written out: what most builders (archive/tar) make of a sparse file.
		testenv.TarFile("var/lib/zeros", 0o644, string(make([]byte, 2<<20))),
	}}
}

// cases are the images compared. Each is pushed as diff/<name>:v1.
var cases = []imageCase{
	{name: "owners", images: []testenv.ImageSpec{{Layers: []testenv.Layer{baseLayer, layer(
		testenv.TarDir("usr/lib/node_modules", 0o755),
		testenv.TarDir("usr/lib/node_modules/npm-pkg", 0o755).Owned(npmUID, npmUID).In(tar.FormatPAX),
		testenv.TarFile("usr/lib/node_modules/npm-pkg/index.js", 0o644, "module.exports = 1\n").Owned(npmUID, npmUID).In(tar.FormatPAX),
		// GNU tar and Docker's older writer: base-256 numeric fields.
		testenv.TarFile("usr/lib/node_modules/npm-pkg/gnu.js", 0o644, "gnu\n").Owned(npmUID, npmUID).In(tar.FormatGNU),
		testenv.TarSymlink("usr/lib/node_modules/npm-pkg/link.js", "index.js").Owned(npmUID, npmUID),
		testenv.TarDir("usr/lib/node_modules/mac-pkg", 0o755).Owned(macUID, macGID),
		testenv.TarFile("usr/lib/node_modules/mac-pkg/index.js", 0o644, "mac\n").Owned(macUID, macGID),
		testenv.TarFile("srv/nobody", 0o644, "65534\n").Owned(65534, 65534),
		testenv.TarFile("srv/65535", 0o644, "65535\n").Owned(65535, 65535),
		testenv.TarFile("srv/65536", 0o644, "65536\n").Owned(65536, 65536),
		testenv.TarFile("srv/100000", 0o644, "100000\n").Owned(100000, 100000),
		testenv.TarFile("srv/user-npm-group", 0o644, "mixed\n").Owned(1000, npmUID),
		testenv.TarFile("srv/2147483647", 0o644, "int32 max\n").Owned(2147483647, 2147483647),
		testenv.TarFile("srv/3000000000", 0o644, "above int32\n").Owned(3000000000, 3000000000).In(tar.FormatPAX),
		// Mode bits the kernel clears on chown: an unpacker must chmod after it.
		testenv.TarFile("srv/setuid-npm", 0o4755, "setuid\n").Owned(npmUID, 0),
		testenv.TarFile("srv/setgid", 0o2755, "setgid\n").Owned(0, 42),
		testenv.TarFile("srv/setuid-root", 0o4755, "setuid\n"),
		testenv.TarDir("srv/sticky", 0o1777),
		testenv.TarDir("srv/setgid-dir", 0o2775).Owned(1000, 1000),
		testenv.TarFile("srv/private", 0o600, "private\n").Owned(1000, 1000),
		testenv.TarFile("srv/no-perms", 0o000, "none\n"),
	)}, Config: ocispec.ImageConfig{Cmd: []string{"sh"}}}}},

	{name: "long-names", images: []testenv.ImageSpec{{Layers: []testenv.Layer{baseLayer, layer(
		// PAX 'x' headers: path and linkpath records.
		testenv.TarDir(strings.Repeat("a", 100), 0o755).In(tar.FormatPAX),
		testenv.TarDir(strings.Repeat("a", 100)+"/"+strings.Repeat("b", 100), 0o755).In(tar.FormatPAX),
		testenv.TarDir(deepDir, 0o755).In(tar.FormatPAX),
		paxFile,
		// GNU 'L' and 'K' entries.
		gnuFile,
		testenv.TarSymlink("srv/pax-link", longLink).In(tar.FormatPAX),
		testenv.TarSymlink("srv/gnu-link", longLink).In(tar.FormatGNU),
		paxFile.LinkedAs("srv/pax-hardlink"),
		gnuFile.LinkedAs("srv/gnu-hardlink"),
		// A short name linking to a long one, and a long one to a short one.
		shortFile,
		shortFile.LinkedAs(deepDir+"/to-short-"+strings.Repeat("s", 80)).In(tar.FormatGNU),
		// USTAR's prefix field: 150 characters without an extension header.
		testenv.TarDir("srv/"+strings.Repeat("u", 120), 0o755),
		testenv.TarFile("srv/"+strings.Repeat("u", 120)+"/ustar-split", 0o644, "prefix\n"),
		// Names only PAX can spell.
		testenv.TarFile("srv/ünïcödé-名前.txt", 0o644, "utf-8\n"),
		testenv.TarFile("srv/with spaces and = signs", 0o644, "spaces\n"),
		testenv.TarSymlink("srv/dangling", "/nowhere/"+strings.Repeat("x", 200)),
	)}}}},

	{name: "hardlinks", images: []testenv.ImageSpec{{Layers: []testenv.Layer{baseLayer, layer(
		linked,
		linked.LinkedAs("srv/b"),
		linked.LinkedAs("srv/c"),
		testenv.TarDir("srv/sub", 0o755),
		linked.LinkedAs("srv/sub/d"),
		testenv.TarSymlink("srv/sym", "a"),
		testenv.TarSymlink("srv/sym", "a").LinkedAs("srv/sym-hardlink"), // a hard link to the symlink itself
		testenv.TarFile("srv/lone", 0o644, "one name\n"),
		testenv.TarFile("srv/capped", 0o755, "capped\n").WithXattr("security.capability", capBind),
		testenv.TarFile("srv/capped", 0o755, "capped\n").WithXattr("security.capability", capBind).LinkedAs("srv/capped-too"),
	), layer(
		// A later layer breaks up a group and makes one of its own.
		testenv.TarWhiteout("srv/c"),
		upper,
		upper.LinkedAs("srv/y"),
	)}}}},

	// A hard link to a file of a lower layer: umoci links to it in its one
	// root; each of our layers is unpacked alone, so the file is copied up.
	{name: "hardlink-lower", images: []testenv.ImageSpec{{Layers: []testenv.Layer{baseLayer, layer(
		testenv.TarFile("srv/lower.txt", 0o640, "lower\n").Owned(npmUID, macGID).WithXattr("user.origin", []byte("lower")),
		testenv.TarFile("srv/replaced", 0o644, "old\n"),
		testenv.TarDir("usr/share", 0o755), testenv.TarDir("usr/share/doc", 0o750).Owned(1000, 1000),
		testenv.TarFile("usr/share/doc/README", 0o600, "readme\n").Owned(1000, 1000),
		testenv.TarFile("srv/gone", 0o644, "gone\n"),
	), layer(
		testenv.TarFile("srv/replaced", 0o600, "new\n"),
		testenv.TarWhiteout("srv/gone"),
		testenv.TarFile("srv/gone", 0o644, "again\n"),
	), layer(
		testenv.TarHardlink("srv/upper-link", "srv/lower.txt"),
		// A second link to it in the same layer stays a hard link.
		testenv.TarHardlink("srv/again", "srv/lower.txt"),
		// The topmost layer that has the file is the one linked to.
		testenv.TarHardlink("srv/replaced-link", "srv/replaced"),
		testenv.TarHardlink("srv/gone-link", "srv/gone"),
		// Parents this layer does not name keep their lower attributes.
		testenv.TarHardlink("srv/readme", "usr/share/doc/README"),
	)}}}},

	// An entry followed by its own whiteout in one layer: a whiteout hides
	// only what lies below (image-spec, "Whiteouts"), so the entry stays.
	{name: "whiteout-after-entry", images: []testenv.ImageSpec{{Layers: []testenv.Layer{baseLayer, layer(
		testenv.TarFile("opt/x", 0o644, "lower\n"),
		testenv.TarFile("opt/lower-only", 0o644, "lower\n"),
	), layer(
		testenv.TarFile("opt/x", 0o600, "upper\n"),
		testenv.TarWhiteout("opt/x"),
		testenv.TarFile("opt/y", 0o644, "y\n"),
		testenv.TarWhiteout("opt/y"),
		testenv.TarWhiteout("opt/lower-only"),
	)}}}},

	{name: "whiteouts", images: []testenv.ImageSpec{{Layers: []testenv.Layer{baseLayer, layer(
		testenv.TarFile("opt/removed.txt", 0o644, "removed\n"),
		testenv.TarFile("opt/kept.txt", 0o644, "kept\n"),
		testenv.TarDir("opt/gone", 0o755), testenv.TarDir("opt/gone/sub", 0o755), testenv.TarFile("opt/gone/sub/deep", 0o644, "deep\n"),
		testenv.TarDir("opt/opaque", 0o750).Owned(1000, 1000), testenv.TarFile("opt/opaque/old.txt", 0o644, "old\n"),
		testenv.TarDir("opt/opaque/sub", 0o755), testenv.TarFile("opt/opaque/sub/older.txt", 0o644, "older\n"),
		testenv.TarDir("opt/readded", 0o755), testenv.TarFile("opt/readded/first", 0o644, "first\n"),
		testenv.TarFile("opt/types/file-to-dir", 0o644, "file\n"),
		testenv.TarDir("opt/types/dir-to-file", 0o755), testenv.TarFile("opt/types/dir-to-file/child", 0o644, "child\n"),
		testenv.TarSymlink("opt/types/link-to-dir", "/srv"),
		testenv.TarFile("opt/types/file-to-link", 0o644, "file\n"),
	), layer(
		testenv.TarWhiteout("opt/removed.txt"),
		testenv.TarWhiteout("opt/gone"),
		testenv.TarWhiteout("opt/never-existed"),
		testenv.TarDir("opt/opaque", 0o755),
		testenv.TarOpaque("opt/opaque"),
		testenv.TarFile("opt/opaque/new.txt", 0o644, "new\n"),
		testenv.TarWhiteout("opt/readded"),
		testenv.TarDir("opt/types/file-to-dir", 0o700), testenv.TarFile("opt/types/file-to-dir/child", 0o644, "now a dir\n"),
		testenv.TarFile("opt/types/dir-to-file", 0o600, "now a file\n"),
		testenv.TarDir("opt/types/link-to-dir", 0o755), testenv.TarFile("opt/types/link-to-dir/inside", 0o644, "not in /srv\n"),
		testenv.TarSymlink("opt/types/file-to-link", "../kept.txt"),
		// Opaque where nothing lies below: harmless.
		testenv.TarDir("opt/fresh", 0o755), testenv.TarOpaque("opt/fresh"), testenv.TarFile("opt/fresh/f", 0o644, "fresh\n"),
	), layer(
		testenv.TarDir("opt/readded", 0o711), testenv.TarFile("opt/readded/second", 0o644, "second\n"),
		// The opaque marker before its directory's entry, and a whiteout
		// with the name it hides in the same layer: a whiteout only hides
		// what lies below (image-spec, "Whiteouts").
		testenv.TarOpaque("opt/opaque"), testenv.TarDir("opt/opaque", 0o700), testenv.TarFile("opt/opaque/newer.txt", 0o644, "newer\n"),
		testenv.TarWhiteout("opt/kept.txt"), testenv.TarFile("opt/kept.txt", 0o644, "kept again\n"),
	)}}}},

	// What tar writers other than Docker's leave in layers.
	{name: "tar-quirks", images: []testenv.ImageSpec{{Layers: []testenv.Layer{{Entries: []testenv.Entry{
		// GNU tar -C dir . names everything "./", the root included.
		testenv.TarDir(".", 0o755), testenv.TarDir("./bin", 0o755), testenv.TarFile("./bin/dot", 0o755, "dot\n"),
		testenv.TarFile("/bin/absolute", 0o755, "absolute\n"),
		testenv.TarDir("./srv", 0o755),
	}}, layer(
		// Appended archives: the last entry of a name wins.
		testenv.TarFile("srv/dup", 0o644, "first\n"), testenv.TarFile("srv/dup", 0o600, "second\n").Owned(7, 7),
		testenv.TarDir("srv/dir-then-file", 0o755), testenv.TarFile("srv/dir-then-file", 0o644, "now a file\n"),
		// A link to a name that a later entry replaces keeps the old content.
		testenv.TarFile("srv/t", 0o644, "old\n"), testenv.TarFile("srv/t", 0o644, "old\n").LinkedAs("srv/l"),
		testenv.TarFile("srv/t", 0o644, "new\n"),
		// Modes with the file type in them (S_IFREG, S_IFDIR), as some writers put them.
		testenv.TarFile("srv/typed", 0o100755, "typed\n"), testenv.TarDir("srv/typed-dir", 0o40700),
	)}}}},

	// umoci refuses PAX global headers (typeflag 'g', what git archive
	// writes first): GNU tar is the reference.
	{name: "pax-global-header", reference: viaGNUTar, images: []testenv.ImageSpec{{Layers: []testenv.Layer{baseLayer, layer(
		testenv.Entry{Header: tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "pax_global_header", PAXRecords: map[string]string{"comment": "0123456789abcdef"}}},
		testenv.TarFile("srv/after-global", 0o644, "after\n"),
	)}}}},

	{name: "xattrs", images: []testenv.ImageSpec{{Layers: []testenv.Layer{baseLayer, layer(
		testenv.TarFile("usr/bin/ping", 0o755, "ping\n").WithXattr("security.capability", capRaw),
		testenv.TarFile("usr/bin/server", 0o750, "server\n").Owned(npmUID, npmUID).WithXattr("security.capability", capBind),
		testenv.TarFile("usr/bin/later-cap", 0o755, "no cap yet\n"),
		testenv.TarFile("usr/bin/loses-xattr", 0o755, "has one\n").WithXattr("user.origin", []byte("lower")),
		testenv.TarFile("srv/tagged", 0o644, "tagged\n").WithXattr("user.mime_type", []byte("text/plain")).
			WithXattr("user.binary", []byte{0, 1, 2, 0xff}),
		testenv.TarDir("srv/tagged-dir", 0o755).WithXattr("user.dir", []byte("yes")),
	), layer(
		testenv.TarFile("usr/bin/later-cap", 0o755, "cap now\n").WithXattr("security.capability", capBind),
		testenv.TarFile("usr/bin/loses-xattr", 0o755, "has none\n"),
	)}}}},

	{name: "sparse-pax", images: []testenv.ImageSpec{{Layers: []testenv.Layer{baseLayer, sparseLayer(testenv.SparsePAX1)}}}},

	// umoci refuses typeflag 'S' ("unknown typeflag"): GNU tar is the reference.
	{name: "sparse-oldgnu", reference: viaGNUTar, images: []testenv.ImageSpec{{Layers: []testenv.Layer{baseLayer, sparseLayer(testenv.SparseOldGNU)}}}},

	{name: "devices", images: []testenv.ImageSpec{{Layers: []testenv.Layer{baseLayer, layer(
		testenv.TarDir("dev", 0o755),
		testenv.TarDevice("dev/null", tar.TypeChar, 1, 3),
		testenv.TarDevice("dev/sda", tar.TypeBlock, 8, 0),
		testenv.TarFifo("dev/initctl"),
		testenv.TarDevice("dev/null", tar.TypeChar, 1, 3).LinkedAs("srv/null-too"),
		testenv.TarFile("srv/shadowed.txt", 0o644, "a later layer puts a 0/0 device here\n"),
	), layer(
		testenv.TarDevice("srv/shadowed.txt", tar.TypeChar, 0, 0),
		testenv.TarDevice("srv/zero-zero", tar.TypeChar, 0, 0),
		testenv.TarDevice("srv/kmsg", tar.TypeChar, 1, 11),
	)}}}},

	{name: "empty-layers", images: []testenv.ImageSpec{{EmptyHistory: 3, Layers: []testenv.Layer{
		{}, // an empty tar, gzip'd, as the bottom layer
		baseLayer,
		{},                                  // the same layer again (same diffID and blob)
		{Compression: testenv.Uncompressed}, // and once more as another blob
		layer(testenv.TarFile("srv/after-empty", 0o644, "after\n")),
		{Compression: testenv.Zstd},
	}}}},

	{name: "zstd", images: []testenv.ImageSpec{{Layers: []testenv.Layer{
		compressed(testenv.Zstd, baseLayer),
		compressed(testenv.Uncompressed, layer(testenv.TarFile("srv/plain", 0o644, "plain\n"), testenv.TarFile("srv/doomed", 0o644, "doomed\n"))),
		layer(testenv.TarFile("srv/gzip", 0o644, "gzip\n").Owned(npmUID, npmUID).In(tar.FormatPAX)),
		compressed(testenv.Zstd, layer(testenv.TarWhiteout("srv/doomed"), testenv.TarFile("srv/zstd", 0o644, string(block)))),
	}}}},

	{name: "docker-schema2", images: []testenv.ImageSpec{{Format: testenv.DockerSchema2,
		Config: ocispec.ImageConfig{
			User:       "1000:1000",
			Env:        []string{"PATH=/usr/local/bin:/usr/bin:/bin", "NODE_ENV=production"},
			WorkingDir: "/srv",
			Entrypoint: []string{"/bin/sh", "-c"},
			Cmd:        []string{"exec server"},
		},
		Layers: []testenv.Layer{baseLayer,
			compressed(testenv.Uncompressed, layer(testenv.TarDir("srv", 0o755).Owned(1000, 1000), testenv.TarFile("srv/app.js", 0o644, "app\n").Owned(1000, 1000))),
			layer(testenv.TarWhiteout("bin/busybox")),
		}}}},

	// What an Open Runtimes image's config looks like (umoci resolves User
	// through the image's /etc/passwd, as a runtime does).
	{name: "config", images: []testenv.ImageSpec{{
		Config: ocispec.ImageConfig{
			User:         "node",
			Env:          []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "NODE_VERSION=18.20.4", "OPEN_RUNTIMES_ENTRYPOINT=index.js"},
			WorkingDir:   "/usr/local/server",
			Entrypoint:   []string{"docker-entrypoint.sh"},
			Cmd:          []string{"sh", "helpers/start.sh", "node src/server.js"},
			ExposedPorts: map[string]struct{}{"3000/tcp": {}},
		},
		Layers: []testenv.Layer{baseLayer, layer(
			testenv.TarFile("etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\nnode:x:1000:1000::/home/node:/bin/sh\n"),
			testenv.TarFile("etc/group", 0o644, "root:x:0:\nnode:x:1000:\n"),
			testenv.TarDir("usr/local/server", 0o755).Owned(1000, 1000),
			testenv.TarFile("usr/local/bin/docker-entrypoint.sh", 0o755, "#!/bin/sh\nexec \"$@\"\n"),
		)},
	}}},

	{name: "index-oci", images: multiArch(testenv.OCIManifest, "arm64", runtime.GOARCH), list: testenv.OCIManifest},
	{name: "index-docker", images: multiArch(testenv.DockerSchema2, runtime.GOARCH, "arm64"), list: testenv.DockerSchema2},
	{name: "index-without-host", images: multiArch(testenv.OCIManifest, "arm64", "ppc64le", "s390x"), list: testenv.OCIManifest,
		wantErr: images.ErrImageNotFound, wantErrText: "no image for linux/" + runtime.GOARCH},
}

// layer is a gzip layer of entries, with an entry for each parent
// directory the entries do not name (root's, 0755) before its first use:
// Docker's and buildah's writers record the directories of what a layer
// changes.
func layer(entries ...testenv.Entry) testenv.Layer {
	named := map[string]bool{}
	for _, e := range entries {
		if e.Header.Typeflag == tar.TypeDir {
			named[path.Clean(e.Header.Name)] = true
		}
	}
	var out []testenv.Entry
	for _, e := range entries {
		var parents []string
		for d := path.Dir(path.Clean(e.Header.Name)); d != "." && !named[d]; d = path.Dir(d) {
			named[d] = true
			parents = append([]string{d}, parents...)
		}
		for _, d := range parents {
			out = append(out, testenv.TarDir(d, 0o755))
		}
		out = append(out, e)
	}
	return testenv.Layer{Entries: out}
}

func compressed(c testenv.Compression, l testenv.Layer) testenv.Layer {
	l.Compression = c
	return l
}

// multiArch is one image per architecture, each saying which it is in its
// files and its config.
func multiArch(format testenv.ManifestFormat, archs ...string) []testenv.ImageSpec {
	var out []testenv.ImageSpec
	for _, arch := range archs {
		out = append(out, testenv.ImageSpec{
			Format:   format,
			Platform: ocispec.Platform{OS: "linux", Architecture: arch},
			Config:   ocispec.ImageConfig{WorkingDir: "/" + arch, Env: []string{"ARCH=" + arch}},
			Layers: []testenv.Layer{baseLayer, layer(
				testenv.TarFile("etc/arch", 0o644, arch+"\n"),
				testenv.TarDir(arch, 0o755),
			)},
		})
	}
	return out
}

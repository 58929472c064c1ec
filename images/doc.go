// Package images turns an image reference into unpacked layers on disk and
// gives each runtime its own writable root over them.
//
// Pulling uses go.podman.io/image/v5 for everything that talks to a source
// (registries.conf, mirrors, insecure registries, credentials, manifest lists,
// signature policy) but not for storage: layers are unpacked by this package,
// once each, into a content-addressed store that overlayfs can use directly.
//
// # Store layout
//
//	<Root>/layers/<hex>/         one unpacked layer; <hex> is the hex of the layer's
//	                             sha256 diffID (the digest of the *uncompressed* tar),
//	                             so gzip and zstd copies of one layer share a directory
//	                             (layers-<uid>-<gid>-<size>/ with Config.IDMap, and
//	                             layers-userxattr[-...]/ in a user namespace, below)
//	<Root>/images/<sha256>.json  one pulled image; <sha256> is the hex sha256 of the
//	                             canonical reference ("docker://docker.io/library/node:20");
//	                             the file's mtime is when the image was last used
//	<Root>/tmp/                  work in progress and what GC is removing; emptied by New
//	<Root>/empty/                lower layer for images without layers
//	<Root>/blobinfocache/        containers/image's cache directory
//
// A layer is unpacked into <Root>/tmp/layer-*, verified (compressed digest and
// diffID), synced, and only then renamed into layers/, so a layer directory is
// either absent or complete. The image record is written last, also by rename,
// so an image is "pulled" only when all of its layers are in place.
//
// # Garbage collection
//
// Store.GC removes image records that no runtime has used for a given time
// and that are not in use now (a root made by MountRoot and not yet
// UnmountRoot-ed), then the layer directories no remaining record refers to.
// Removal is a rename into Root/tmp followed by the deletion, so a crash
// never leaves half a layer in Root/layers. See gc.go for how it stays safe
// against concurrent pulls and mounts.
//
// # Registries
//
// registries.conf (containers-registries.conf(5)) is honoured as
// containers/image does, with two choices of our own: a short name is
// resolved through its [aliases] or else is docker.io's (no search of
// unqualified-search-registries), and a blocked registry fails the pull with
// ErrBlocked before anything is asked of it.
//
// # Layer safety
//
// Layers are applied with go.podman.io/storage/pkg/archive, which confines
// every path (names with "..", absolute names, symlinked parents, hard link
// targets) to the layer directory; AUFS whiteouts become overlay whiteouts
// (0/0 character devices) and opaque markers the trusted.overlay.opaque
// xattr. Every trusted.overlay.* and user.overlay.* xattr in the image's tar
// headers is dropped before unpacking (and a walk after it removes any that
// is not an opaque marker the store wrote), so an image cannot plant overlay
// redirects, metacopy or opaque markers in its own layers: the only overlay
// xattrs in the store are the store's.
//
// # Rootless: a store in a user namespace
//
// A rootless daemon runs the store as root of a user namespace, detected
// once by New (github.com/moby/sys/userns). The kernel refuses trusted.*
// xattrs there, and overlayfs reads its own from user.overlay.* when mounted
// with "userxattr" (Linux >= 5.11). So such a store marks opaque directories
// with user.overlay.opaque and mounts roots with userxattr; whiteouts stay
// 0/0 character devices, which a user namespace may create (Linux >= 5.8;
// those a tar holds as devices are passed to the unpacker in their .wh. form,
// since it creates no devices there). A kernel that cannot mount overlayfs
// in the namespace gets copied roots, which read the same markers.
//
// The two kinds of layer must never be mixed: root's opaque markers are
// invisible to a rootless overlay (its directories would show what a layer
// deleted) and a rootless layer's are no markers to root's overlay. So a
// store in a user namespace keeps its layers in layers-userxattr/ (or
// layers-userxattr-<uid>-<gid>-<size>/), never in root's layers/: a rootless
// daemon given a root daemon's Root unpacks its own copies, and GC removes
// the other kind's directory once it has not changed for olderThan (as it
// does another IDMap's). Image records name layers by
// digest only and are shared; a record whose layers are not in this store's
// directory is pulled again. The rootless daemon's default Root is in the
// user's home, not root's, so this is the unusual case.
//
// Before the unpacker sees an entry, a filter on the tar stream charges it
// to the pull's limits (Config.SizeLimit bytes and Config.MaxEntries files
// per pull, sparse files at their apparent size): a decompression bomb stops
// at the limit with ErrImageTooLarge and its partial layer is removed.
// The same filter leaves device nodes out of the store (character and block
// devices other than overlay whiteouts), with one warning per layer: the
// store is the host's filesystem, and runtimes get their own /dev.
//
// Ownership and permission bits (setuid/setgid included) are kept as the
// image describes them, as Docker does: no_new_privs or a user namespace
// decides what setuid files are worth. With Config.IDMap, owners are shifted
// into the runtimes' host range when a layer is unpacked, so a
// user-namespaced runtime sees the image's own owners: unshifted, its files
// would belong to host ids outside the runtime's mapping, show as nobody, and
// not even the runtime's root could write them (images whose start scripts
// write into their own directories would break). An owner the range cannot
// hold (real images carry npm's 1516583083) belongs to OverflowID (nobody)
// instead of failing the pull, with one warning per image. The daemon's
// default range holds every id but the top 65536.
//
// # Errors
//
// A failed pull says whose fault it was (PullError.Kind): the reference's,
// the registry's, the image's (ErrBadImage: whatever breaks in what the
// source served), or, with no kind, this host's own (a full disk).
//
// # Sources
//
// Only registries by default. The oci:, oci-archive: and docker-archive:
// transports read host paths, as root, named by the caller: they are refused
// unless Config.ArchiveDir names a directory for air-gapped archives, and
// then only paths inside it are read. Registries on this host's own
// addresses (loopback, link-local, its interfaces) are refused unless
// registries.conf names them. Pull's errors say what kind of failure it was,
// never what the source answered (see PullError).
package images

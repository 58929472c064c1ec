// Package differential checks the image store's unpacking against an
// independent unpacker: images built with what real images carry (owners
// far above 65535, long names, hard links, whiteouts, xattrs, sparse files,
// zstd and empty layers, Docker and OCI manifests, multi-arch indexes) are
// pushed to a real registry on loopback, pulled and mounted by
// images.Store, fetched by skopeo and unpacked by umoci (or GNU tar where
// umoci cannot read the layer), and the two roots are compared entry by
// entry. It holds tests only; they need root and the tools .ci/run installs.
package differential

// Package build holds what a build leaves behind, moved between a runtime's
// directory and the storage devices: its output (timestamped, capped,
// followable while it grows), its cache (the squashfs the image's helpers
// restore from /cache and save there, §5.5 of the runtime protocol) and its
// artifact (builds/code.tar.gz, uploaded under a PHP-uniqid name).
//
// The runtime writes everything beneath its directory, so this package
// reaches it only through a *safefs.Dir: no link is followed, no FIFO blocks
// it, only regular files are taken, and every copy is capped (Limit) both by
// the size seen at open and by what is actually read.
package build

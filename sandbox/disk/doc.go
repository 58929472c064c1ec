// Package disk gives one runtime a filesystem of its own, capped in size and
// in inodes, so that nothing a runtime writes (its overlay upper layer, its
// sources, builds, logs, cache) can take more of the host's disk than its
// limit: writes beyond it fail with ENOSPC inside the runtime.
//
// # How
//
// The runtime's directory is itself the mount point of an ext4 filesystem
// (no journal, no reserved blocks, inode tables marked zeroed so that the
// kernel's lazy-init thread never writes them) on a loop device. The loop
// device's backing file is made with O_TMPFILE in the directory's parent: it
// never has a name, so nothing is left on the host's disk once the filesystem
// is unmounted, whenever the daemon dies. The file is sparse: the host pays
// for what the runtime writes, at most Size.
//
// The loop device is attached through LOOP_CONFIGURE (kernel 5.8+) with
// LO_FLAGS_AUTOCLEAR, so it frees itself at its last close: the unmount, or
// Mount's own close when mounting fails or the daemon dies before mounting.
// Mount takes a free device from /dev/loop-control and asks again when
// another process binds the same device first (EBUSY). Direct I/O keeps the
// backing file out of the host's page cache: the runtime's files are cached
// once, by the disk's own filesystem, in the runtime's memory cgroup.
//
// The filesystem is mounted nosuid, nodev, and without barriers: it is thrown
// away with its runtime, so a runtime's fsync need not make the host flush
// its disk.
//
// # Formatting
//
// A run of mke2fs costs ~15 ms (process start, writes, fsync). With
// Config.TemplateDir set, mke2fs runs once per (Size, Inodes), into a template
// kept there, and each Mount copies the template's metadata (144 KiB for
// 1 GiB) into its own backing file instead. All disks made from one template
// share its filesystem UUID, which nothing here uses.
//
// # Cost
//
// Attaching the loop device costs a flush of the host's disk (the kernel
// fsyncs the backing file in LOOP_CONFIGURE), mounting reads and writes the
// superblock synchronously, and the first files made read the allocation
// metadata through the loop device: ~3-5 ms in all on an idle host, but each
// waits behind whatever else is queued on the host's disk.
//
// Spares takes that off a runtime's cold start: it keeps disks made ahead of
// need, each mounted nowhere (fsmount) with its root prepared and its
// metadata read, and Spares.Mount attaches one at the runtime's directory
// (move_mount, ~0.1 ms). A spare has no name in any directory or mount
// table: its fd is all that holds it, so the kernel frees it (filesystem,
// loop device, backing file) when the process dies, and nothing is left to
// sweep. Mount itself makes a disk the same way and attaches it at once.
//
// # Unmounting
//
// Unmount writes back what the runtime wrote in its last seconds before the
// filesystem goes (~25 ms for 64 MiB just written, ~2 ms otherwise): shutting
// it down first would skip that, but the kernel logs each shutdown at
// KERN_ALERT, which an operator's alerting must not see for every runtime
// removed. Submounts (the runtime's overlay root) or processes still inside
// do not block it: the tree is detached and freed when its last user lets go.
//
// After a crash, a runtime directory may still be a mount point. Unmount(dir)
// needs no state: it unmounts dir when it is a disk made by this package (an
// ext4 on a loop device whose name carries this package's mark) and refuses
// any other mount.
//
// # Host requirements
//
// Root, /dev/loop-control (the loop module), ext4, and mke2fs and debugfs
// from e2fsprogs. Check reports what is missing.
package disk

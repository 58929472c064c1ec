package images

import (
	"archive/tar"
	"fmt"

	"executor/oci"
)

// OverflowID is the owner given to a file whose recorded uid or gid the
// store's id range cannot hold: nobody, the kernel's overflowuid and
// overflowgid, which every range the store accepts contains.
const OverflowID = 65534

// maxHostID is the largest id a file can have: the kernel reserves
// (uid_t)-1 as "no id" (chown's "leave it as it is").
const maxHostID = 1<<32 - 2

// minIDs is the smallest IDMap.Size the store accepts: ids 0..65535, which
// base images use, OverflowID among them.
const minIDs = 1 << 16

// ownerSquash counts the owners of one pull that were outside the id range
// and became OverflowID, as containers-storage does with
// ignore_chown_errors: the image still runs, and those files belong to
// nobody rather than failing the pull.
type ownerSquash struct {
	files int64 // entries with a uid or gid squashed
	// first names one of them, with the owner its image recorded, for the log.
	first              string
	firstUID, firstGID int
}

// add counts the squashed entries of one layer.
func (o *ownerSquash) add(l ownerSquash) {
	if l.files == 0 {
		return
	}
	if o.files == 0 {
		o.first, o.firstUID, o.firstGID = l.first, l.firstUID, l.firstGID
	}
	o.files += l.files
}

// ownerRange is which owners a layer's entries may keep: container ids
// [0, size) of the store's IDMap, or every id a file can have without one.
func ownerRange(m *oci.IDMap) int64 {
	if m == nil {
		return maxHostID + 1
	}
	return m.Size
}

// squash gives hdr's owner OverflowID where the range of size ids cannot
// hold it and counts the entry in o. It runs on every entry before the
// unpacker sees it, which would otherwise fail the whole layer ("container
// ID ... cannot be mapped to a host ID"), or, without an id map, let lchown
// read a uid past 32 bits as another one (or (uid_t)-1 as "unchanged").
func (o *ownerSquash) squash(hdr *tar.Header, size int64) {
	uid, gid := hdr.Uid, hdr.Gid
	if int64(uid) >= 0 && int64(uid) < size && int64(gid) >= 0 && int64(gid) < size {
		return
	}
	if o.files == 0 {
		o.first, o.firstUID, o.firstGID = hdr.Name, uid, gid
	}
	o.files++
	if int64(uid) < 0 || int64(uid) >= size {
		hdr.Uid = OverflowID
	}
	if int64(gid) < 0 || int64(gid) >= size {
		hdr.Gid = OverflowID
	}
}

// warnSquashed logs, once for the pull of image name, the owners squashed while
// unpacking its layers.
func (s *Store) warnSquashed(name string, o ownerSquash) {
	if o.files == 0 {
		return
	}
	attrs := []any{"ref", name, "files", o.files, "first", o.first, "owner", fmt.Sprintf("%d:%d", o.firstUID, o.firstGID)}
	if m := s.cfg.IDMap; m != nil {
		attrs = append(attrs, "range", fmt.Sprintf("0-%d", m.Size-1))
	}
	s.log.Warn("image has files owned by ids outside the runtimes' id range; they belong to nobody (65534) instead", attrs...)
}

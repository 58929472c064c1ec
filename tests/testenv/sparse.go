package testenv

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"path"
	"strconv"
)

// archive/tar reads GNU sparse files but cannot write them, so the two
// encodings GNU tar uses are written here block by block: real layers made
// with `tar --sparse` (lastlog, database files, preallocated images) carry
// them.

const blockSize = 512

// writeSparse appends hdr's sparse file s to buf in s.Format. Only the
// name, mode, owners and mtime of hdr are used.
//
// GNU tar finds holes a block at a time and reads each chunk's data in
// whole blocks, while archive/tar reads the chunks as one contiguous run:
// both agree only when every chunk starts on a block and all but the last
// are whole blocks long, which is all GNU tar ever writes. Other chunks are
// refused rather than written as an archive the two read differently.
func writeSparse(buf *bytes.Buffer, hdr *tar.Header, s *Sparse) error {
	var prev int64
	for i, c := range s.Chunks {
		if c.Offset < prev || c.Offset+int64(len(c.Data)) > s.Size {
			return errors.New("sparse chunks must be in order, not overlap, and lie within Size")
		}
		if c.Offset%blockSize != 0 || (i < len(s.Chunks)-1 && len(c.Data)%blockSize != 0) {
			return fmt.Errorf("sparse chunk at %d: chunks start on %d-byte blocks and all but the last are whole blocks", c.Offset, blockSize)
		}
		prev = c.Offset + int64(len(c.Data))
	}
	// GNU tar ends the map of a file that ends in a hole with an empty
	// chunk at its end; without it GNU tar cuts the file at its last data.
	chunks := s.Chunks
	if prev < s.Size || len(chunks) == 0 {
		chunks = append(append([]SparseChunk(nil), chunks...), SparseChunk{Offset: s.Size})
	}
	switch s.Format {
	case SparsePAX1:
		return writeSparsePAX1(buf, hdr, s.Size, chunks)
	case SparseOldGNU:
		return writeSparseOldGNU(buf, hdr, s.Size, chunks)
	}
	return fmt.Errorf("unknown sparse format %d", s.Format)
}

// writeSparsePAX1 writes what `tar --sparse --format=posix` writes: a PAX
// header naming the real file and its size, then a regular file entry under
// GNUSparseFile.0/ whose data is the map ("count\n" then "offset\nlength\n"
// pairs, padded to a block) followed by the chunks.
func writeSparsePAX1(buf *bytes.Buffer, hdr *tar.Header, size int64, chunks []SparseChunk) error {
	dir, base := path.Split(hdr.Name)
	var m bytes.Buffer
	fmt.Fprintf(&m, "%d\n", len(chunks))
	for _, c := range chunks {
		fmt.Fprintf(&m, "%d\n%d\n", c.Offset, len(c.Data))
	}
	m.Write(make([]byte, padding(int64(m.Len()))))
	for _, c := range chunks {
		m.Write(c.Data)
	}

	var recs bytes.Buffer
	kvs := [][2]string{
		{"GNU.sparse.major", "1"},
		{"GNU.sparse.minor", "0"},
		{"GNU.sparse.name", hdr.Name},
		{"GNU.sparse.realsize", strconv.FormatInt(size, 10)},
	}
	// Owners past the octal fields go in records, as GNU tar puts them.
	if int64(hdr.Uid) > maxOctal7 {
		kvs = append(kvs, [2]string{"uid", strconv.Itoa(hdr.Uid)})
	}
	if int64(hdr.Gid) > maxOctal7 {
		kvs = append(kvs, [2]string{"gid", strconv.Itoa(hdr.Gid)})
	}
	for _, kv := range kvs {
		recs.WriteString(paxRecord(kv[0], kv[1]))
	}
	pax := ustarBlock(dir+"PaxHeaders.0/"+base, tar.TypeXHeader, hdr, int64(recs.Len()))
	if err := appendEntry(buf, pax, recs.Bytes()); err != nil {
		return err
	}
	return appendEntry(buf, ustarBlock(dir+"GNUSparseFile.0/"+base, tar.TypeReg, hdr, int64(m.Len())), m.Bytes())
}

// writeSparseOldGNU writes GNU tar's 'S' entry: up to four (offset, length)
// pairs in the header block, the rest in extension blocks of 21 each, the
// real size in the header, then the chunks.
func writeSparseOldGNU(buf *bytes.Buffer, hdr *tar.Header, size int64, chunks []SparseChunk) error {
	var data bytes.Buffer
	for _, c := range chunks {
		data.Write(c.Data)
	}
	blk := ustarBlock(hdr.Name, tar.TypeGNUSparse, hdr, int64(data.Len()))
	copy(blk[257:265], "ustar  \x00") // the old GNU magic and version
	putOctal(blk[483:495], size)      // realsize
	first := min(len(chunks), 4)
	for i, c := range chunks[:first] {
		putOctal(blk[386+24*i:398+24*i], c.Offset)
		putOctal(blk[398+24*i:410+24*i], int64(len(c.Data)))
	}
	rest := chunks[first:]
	if len(rest) > 0 {
		blk[482] = 1 // isextended
	}
	setChecksum(blk)
	buf.Write(blk)
	for len(rest) > 0 {
		ext := make([]byte, blockSize)
		n := min(len(rest), 21)
		for i, c := range rest[:n] {
			putOctal(ext[24*i:24*i+12], c.Offset)
			putOctal(ext[24*i+12:24*i+24], int64(len(c.Data)))
		}
		rest = rest[n:]
		if len(rest) > 0 {
			ext[504] = 1
		}
		buf.Write(ext)
	}
	buf.Write(data.Bytes())
	buf.Write(make([]byte, padding(int64(data.Len()))))
	return nil
}

// ustarBlock is a POSIX ustar header block for an entry of typeflag and
// size with hdr's mode, owners and mtime, its checksum set.
func ustarBlock(name string, typeflag byte, hdr *tar.Header, size int64) []byte {
	blk := make([]byte, blockSize)
	copy(blk[0:100], name)
	putOctal(blk[100:108], hdr.Mode)
	putNumber(blk[108:116], int64(hdr.Uid))
	putNumber(blk[116:124], int64(hdr.Gid))
	putOctal(blk[124:136], size)
	putOctal(blk[136:148], hdr.ModTime.Unix())
	blk[156] = typeflag
	copy(blk[257:265], "ustar\x0000")
	setChecksum(blk)
	return blk
}

// appendEntry writes a header block and its data padded to whole blocks.
func appendEntry(buf *bytes.Buffer, blk, data []byte) error {
	if len(blk) != blockSize || bytes.IndexByte(blk[0:100], 0) < 0 {
		return errors.New("name too long for a hand-written header")
	}
	buf.Write(blk)
	buf.Write(data)
	buf.Write(make([]byte, padding(int64(len(data)))))
	return nil
}

// maxOctal7 is the largest number an 8-byte octal field holds.
const maxOctal7 = 1<<21 - 1

// putNumber writes v in octal where it fits and else in GNU's base-256
// (the top bit of the first byte set, big-endian), as GNU tar does for
// owners such as npm's 1516583083. A PAX reader takes the "uid" and "gid"
// records over it.
func putNumber(field []byte, v int64) {
	if v <= maxOctal7 || len(field) != 8 {
		putOctal(field, v)
		return
	}
	for i := len(field) - 1; i > 0; i-- {
		field[i] = byte(v)
		v >>= 8
	}
	field[0] = 0x80
}

// putOctal writes v as zero-padded octal digits and a NUL, filling field.
func putOctal(field []byte, v int64) {
	s := strconv.FormatInt(v, 8)
	for len(s) < len(field)-1 {
		s = "0" + s
	}
	copy(field, s)
	field[len(field)-1] = 0
}

// setChecksum fills the header checksum: the byte sum with the field
// itself counted as spaces, in six octal digits, a NUL and a space.
func setChecksum(blk []byte) {
	copy(blk[148:156], "        ")
	var sum int64
	for _, b := range blk {
		sum += int64(b)
	}
	copy(blk[148:156], fmt.Sprintf("%06o\x00 ", sum))
}

// paxRecord is "<length> <key>=<value>\n", the length counting itself.
func paxRecord(k, v string) string {
	size := len(k) + len(v) + 3 // space, '=', newline
	size += len(strconv.Itoa(size))
	rec := strconv.Itoa(size) + " " + k + "=" + v + "\n"
	if len(rec) != size { // the length's own digits pushed it over
		size = len(rec)
		rec = strconv.Itoa(size) + " " + k + "=" + v + "\n"
	}
	return rec
}

func padding(n int64) int64 { return -n & (blockSize - 1) }

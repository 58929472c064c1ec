package testenv

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// The layer builder's entries read back as written, through archive/tar (the
// reader our unpacker and umoci use) and through GNU tar (the writer whose
// sparse formats sparse.go copies).
func TestLayerEntriesReadBack(t *testing.T) {
	longDir := strings.Repeat("d", 90) + "/" + strings.Repeat("e", 90)
	block := bytes.Repeat([]byte("b"), 512)
	sparseChunks := []SparseChunk{{Offset: 0, Data: block}, {Offset: 70144, Data: []byte("middle")}}
	var manyChunks []SparseChunk
	for i := range 30 { // more than fit in the header and one extension block
		manyChunks = append(manyChunks, SparseChunk{Offset: int64(i) * 4096, Data: bytes.Repeat([]byte{byte('a' + i%26)}, 1024)})
	}
	tests := []struct {
		name  string
		entry Entry
		// want is what archive/tar must report.
		wantName, wantLink string
		wantUID            int
		wantData           []byte
		wantXattr          string // a SCHILY.xattr key that must be present
		wantErr            bool
	}{
		{name: "gnu long name and base-256 owner",
			entry:    TarFile(longDir+"/f", 0o644, "x").Owned(1516583083, 1516583083).In(tar.FormatGNU),
			wantName: longDir + "/f", wantUID: 1516583083, wantData: []byte("x")},
		{name: "pax long name and owner",
			entry:    TarFile(longDir+"/g", 0o644, "y").Owned(1516583083, 20).In(tar.FormatPAX),
			wantName: longDir + "/g", wantUID: 1516583083, wantData: []byte("y")},
		{name: "gnu long link target",
			entry:    TarSymlink("l", longDir+"/f").In(tar.FormatGNU),
			wantName: "l", wantLink: longDir + "/f", wantData: []byte{}},
		{name: "xattr",
			entry:    TarFile("cap", 0o755, "z").WithXattr("security.capability", FileCapability(10)),
			wantName: "cap", wantData: []byte("z"), wantXattr: "SCHILY.xattr.security.capability"},
		{name: "pax 1.0 sparse ending in a hole",
			entry:    TarSparse("s1", 0o644, Sparse{Format: SparsePAX1, Size: 1 << 20, Chunks: sparseChunks}).Owned(1516583083, 20),
			wantName: "s1", wantUID: 1516583083, wantData: (&Sparse{Size: 1 << 20, Chunks: sparseChunks}).Content()},
		{name: "old gnu sparse with extension blocks",
			entry:    TarSparse("s2", 0o644, Sparse{Format: SparseOldGNU, Size: 30*4096 + 10, Chunks: manyChunks}).Owned(1516583083, 20),
			wantName: "s2", wantUID: 1516583083, wantData: (&Sparse{Size: 30*4096 + 10, Chunks: manyChunks}).Content()},
		{name: "sparse chunk off a block boundary is refused",
			entry:   TarSparse("s3", 0o644, Sparse{Size: 4096, Chunks: []SparseChunk{{Offset: 100, Data: []byte("x")}}}),
			wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// An ordinary entry after it: hand-written entries must leave
			// the stream where archive/tar can go on.
			raw, err := Layer{Entries: []Entry{tt.entry, TarFile("after", 0o644, "end")}}.tar()
			if tt.wantErr {
				if err == nil {
					t.Fatal("built a layer GNU tar and archive/tar would read differently")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tr := tar.NewReader(bytes.NewReader(raw))
			hdr, err := tr.Next()
			if err != nil {
				t.Fatal(err)
			}
			data, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			if hdr.Name != tt.wantName || hdr.Linkname != tt.wantLink || hdr.Uid != tt.wantUID {
				t.Errorf("read %q -> %q uid %d, want %q -> %q uid %d", hdr.Name, hdr.Linkname, hdr.Uid, tt.wantName, tt.wantLink, tt.wantUID)
			}
			if !bytes.Equal(data, tt.wantData) {
				t.Errorf("read %d bytes (sha256 %s), want %d (sha256 %s)", len(data), sum(data), len(tt.wantData), sum(tt.wantData))
			}
			if tt.wantXattr != "" && hdr.PAXRecords[tt.wantXattr] == "" {
				t.Errorf("PAX records %v lack %s", hdr.PAXRecords, tt.wantXattr)
			}
			if next, err := tr.Next(); err != nil || next.Name != "after" {
				t.Errorf("after the entry: %v, %v; want the entry \"after\"", next, err)
			} else if _, err := tr.Next(); !errors.Is(err, io.EOF) {
				t.Errorf("after the last entry: %v, want EOF", err)
			}

			// GNU tar extracts the same bytes under the same name.
			dir := t.TempDir()
			cmd := exec.Command("tar", "-x", "--numeric-owner", "-C", dir)
			cmd.Stdin = bytes.NewReader(raw)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("GNU tar: %v: %s", err, out)
			}
			if tt.entry.Header.Typeflag != tar.TypeReg {
				return
			}
			got, err := os.ReadFile(filepath.Join(dir, tt.wantName))
			if err != nil {
				t.Fatal(err)
			}
			var st syscall.Stat_t
			if err := syscall.Lstat(filepath.Join(dir, tt.wantName), &st); err != nil {
				t.Fatal(err)
			}
			if int(st.Uid) != tt.wantUID {
				t.Errorf("GNU tar extracted uid %d, want %d", st.Uid, tt.wantUID)
			}
			if !bytes.Equal(got, tt.wantData) {
				t.Errorf("GNU tar extracted %d bytes (sha256 %s), want %d (sha256 %s)", len(got), sum(got), len(tt.wantData), sum(tt.wantData))
			}
		})
	}
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:8])
}

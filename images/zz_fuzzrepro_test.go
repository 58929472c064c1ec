package images

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestZZRepro(t *testing.T) {
	files, _ := filepath.Glob("/root/.cache/go-build/fuzz/executor/images/FuzzUnpack/*")
	for _, f := range files {
		raw, _ := os.ReadFile(f)
		// corpus format: "go test fuzz v1\n[]byte(\"...\")\n"
		lines := strings.SplitN(string(raw), "\n", 2)
		s := strings.TrimSpace(lines[1])
		s = strings.TrimSuffix(strings.TrimPrefix(s, "[]byte("), ")")
		data, err := strconv.Unquote(s)
		if err != nil { t.Fatal(err) }
		tr := tar.NewReader(bytes.NewReader([]byte(data)))
		for {
			h, err := tr.Next()
			if err != nil { t.Logf("%s: end %v", filepath.Base(f), err); break }
			t.Logf("%s: %q type=%c size=%d link=%q sparse? %v", filepath.Base(f), h.Name, h.Typeflag, h.Size, h.Linkname, h.Typeflag == tar.TypeGNUSparse)
		}
		sb := newSandbox(t)
		start := time.Now()
		done := make(chan error)
		go func() { done <- unpackLayer(bytes.NewReader([]byte(data)), sb.dest) }()
		select {
		case err := <-done:
			t.Logf("%s: %v in %v", filepath.Base(f), err, time.Since(start))
		case <-time.After(5 * time.Second):
			t.Logf("%s: still running after 5s", filepath.Base(f))
		}
	}
}

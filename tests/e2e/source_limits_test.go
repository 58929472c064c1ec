package e2e

import (
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A source larger than OPR_EXECUTOR_BUILD_SIZE_LIMIT, or one that does not
// fit on the runtime's own disk, is the client's to fix: a 400 naming the
// setting, quickly, with nothing left behind.
func TestSourceLimits(t *testing.T) {
	dir, err := os.MkdirTemp(shared.storage, "big-")
	noErr(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	big := filepath.Join(dir, "code.tar.gz")
	data := make([]byte, 24<<20) // incompressible: the disk holds it as it is
	_, _ = rand.Read(data)
	noErr(t, os.WriteFile(big, data, 0o644))

	tests := []struct {
		name string
		env  []string
		want string
	}{
		{"over the build size limit", []string{"OPR_EXECUTOR_BUILD_SIZE_LIMIT=1MiB"},
			"is larger than the build size limit of 1048576 bytes (OPR_EXECUTOR_BUILD_SIZE_LIMIT)"},
		{"larger than the runtime's disk", []string{"OPR_EXECUTOR_DISK_LIMIT=16MiB"},
			"does not fit on the runtime's disk of 16777216 bytes (OPR_EXECUTOR_DISK_LIMIT)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			x := startExecutor(t, tc.env...)
			for _, path := range []string{"/v1/runtimes/big/executions", "/v1/runtimes"} {
				body := execBody(big, nil)
				if path == "/v1/runtimes" {
					body["runtimeId"] = "big"
				}
				r := x.request(t, "POST", path, body, jsonAccept)
				res := r.json(t)
				if msg, _ := res["message"].(string); r.status != 400 || res["type"] != "runtime_failed" || !strings.Contains(msg, tc.want) {
					t.Fatalf("POST %s: %d %s; want 400 runtime_failed with %q", path, r.status, r.body, tc.want)
				}
				x.waitClean(t)
				assertNothingCreated(t, x)
			}
		})
	}
}

package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"executor/tests/testenv"
)

// ownersSquashedWarning is what the executor logs, once per image, for the
// files whose owners its id range cannot hold.
const ownersSquashedWarning = "image has files owned by ids outside the runtimes' id range"

// An image whose node_modules layer is owned the way npm as root leaves it
// (1516583083, and macOS's 501:20) cold-starts. With the default full range
// its files keep the owners the image recorded and are readable and
// writable by the runtime's root; with a small explicit range the image
// still starts, the owners that range cannot hold show as nobody
// (65534:65534) and the executor warns once for the image.
func TestImageOwnersOutsideTheHostRange(t *testing.T) {
	const image = "openruntimes/test:v5-owners"
	layout, err := testenv.BuildOwnersImage(context.Background(), testenv.OwnersImageOptions{
		ImageOptions: testenv.ImageOptions{
			Dir: filepath.Join(t.TempDir(), "owners"), Protocol: testenv.ProtocolV5, WithBash: true, Tag: "v5-owners",
			ServerBinary: filepath.Join(shared.work, "runtime-server"),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := testenv.PushImage(context.Background(), layout, "v5-owners", shared.registry.Addr()+"/"+image, true); err != nil {
		t.Fatal(err)
	}
	npm := fmt.Sprintf("%d:%d", testenv.NpmOwner, testenv.NpmOwner)
	mac := fmt.Sprintf("%d:%d", testenv.MacOSUID, testenv.MacOSGID)
	tests := []struct {
		name     string
		env      []string
		npm      string // owner of the npm package's files inside the runtime
		warnings int
	}{
		{"full range by default", nil, npm, 0},
		{"small explicit range", []string{"OPR_EXECUTOR_USERNS=1000000000:65536"}, "65534:65534", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x := startExecutor(t, tt.env...)
			// Cold start: pull, unpack, root, container, first execution.
			imagesColdStart(t, x, "owners", image)

			dir := "/" + testenv.NodeModDir
			want := map[string]string{
				dir + "/npm-pkg":              tt.npm,
				dir + "/npm-pkg/package.json": tt.npm,
				dir + "/npm-pkg/index.js":     tt.npm,
				dir + "/mac-pkg":              mac,
				dir + "/mac-pkg/index.js":     mac,
			}
			var paths []string
			for p := range want {
				paths = append(paths, p)
			}
			out, status := command(t, x, "owners", "stat -c '%n %u:%g' "+strings.Join(paths, " "))
			if status != 200 {
				t.Fatalf("stat: %d %s", status, out)
			}
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				name, owner, _ := strings.Cut(strings.TrimSpace(line), " ")
				if w, ok := want[name]; !ok || owner != w {
					t.Errorf("%s owned by %s inside the runtime, want %s", name, owner, w)
				}
				delete(want, name)
			}
			if len(want) > 0 {
				t.Errorf("not reported by stat: %v (output %q)", want, out)
			}
			// Readable by the runtime's root, 0600 ones included, and
			// writable where the image put them (start scripts write there).
			out, status = command(t, x, "owners", fmt.Sprintf(
				"cat %[1]s/npm-pkg/index.js %[1]s/mac-pkg/index.js && touch %[1]s/npm-pkg/written %[1]s/mac-pkg/written && echo wrote",
				dir))
			if status != 200 || !strings.Contains(out, "module.exports = 'npm';") ||
				!strings.Contains(out, "module.exports = 'mac';") || !strings.Contains(out, "wrote") {
				t.Fatalf("reading and writing node_modules: %d %q", status, out)
			}
			if n := strings.Count(x.logs.String(), ownersSquashedWarning); n != tt.warnings {
				t.Errorf("%d warnings about squashed owners, want %d", n, tt.warnings)
			}
			if r := x.request(t, "DELETE", "/v1/runtimes/owners", nil, nil); r.status != 200 {
				t.Fatalf("delete: %d %s", r.status, r.body)
			}
			x.waitClean(t)
		})
	}
}

// BenchmarkColdStartIDRange compares cold starts under the default full id
// range and under a 65536-id one, interleaved with -count: the size of the
// mapping is one line in uid_map and gid_map either way.
func BenchmarkColdStartIDRange(b *testing.B) {
	for _, c := range []struct{ name, userns string }{{"full", "full"}, {"65536", "1000000000:65536"}} {
		b.Run(c.name, func(b *testing.B) { benchColdStart(b, "OPR_EXECUTOR_USERNS="+c.userns, "OPR_EXECUTOR_DISK_LIMIT=0") })
	}
}

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"executor/tests/testenv"
)

// A missing image behind a registries.conf mirror whose primary location
// answers nothing (here a closed loopback port, as docker.io is on a host
// without internet) is "image not found", a 400 whose message says so once;
// the executor logs the registries' own answers above debug, and no log line
// repeats the error.
func TestImagePullErrorSaidOnce(t *testing.T) {
	closed, err := testenv.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(t.TempDir(), "registries.conf")
	mirror := fmt.Sprintf("%q", shared.registry.Addr())
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`
[[registry]]
prefix = "docker.io"
location = "127.0.0.1:%d"

[[registry.mirror]]
location = %s
insecure = true

[[registry]]
location = %s
insecure = true
`, closed, mirror, mirror)), 0o644); err != nil {
		t.Fatal(err)
	}
	x := startExecutor(t, "CONTAINERS_REGISTRIES_CONF="+conf)
	// The mirror serves what it has.
	imagesColdStart(t, x, "present", "openruntimes/test:v5-1")
	if r := x.request(t, "DELETE", "/v1/runtimes/present", nil, nil); r.status != 200 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}

	const image = "openruntimes/test:does-not-exist"
	src := source(t, map[string]string{"index.js": "x"})
	r := x.request(t, "POST", "/v1/runtimes/missing/executions", execBody(src, map[string]any{"image": image}), jsonAccept)
	msg, _ := r.json(t)["message"].(string)
	if want := `Missing image "` + image + `" and failed to pull it: image not found`; r.status != 400 || msg != want {
		t.Fatalf("missing image: %d %q, want 400 %q", r.status, msg, want)
	}
	logs := x.logs.String()
	var pullFailed []string
	for _, line := range logLines(logs) {
		if strings.Contains(line, `msg="image pull failed"`) && strings.Contains(line, image) {
			pullFailed = append(pullFailed, line)
		}
		if strings.Count(line, "image not found") > 1 || strings.Count(line, "failed to pull it") > 1 {
			t.Errorf("a log line repeats the error: %s", line)
		}
	}
	if len(pullFailed) != 1 || !strings.Contains(pullFailed[0], "level=WARN") || !strings.Contains(pullFailed[0], "manifest unknown") {
		t.Errorf("want one warning with the registries' answers, got %q", pullFailed)
	}
	x.waitClean(t)
}

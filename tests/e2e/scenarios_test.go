package e2e

import (
	"archive/zip"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// buildAndRun builds source with command, then cold-starts an execution of
// the artifact and returns the echo the test runtime answers.
func buildAndRun(t *testing.T, x *executor, id string, build map[string]any, exec map[string]any) map[string]any {
	t.Helper()
	body := map[string]any{"runtimeId": id + "-build", "image": "openruntimes/test:v5-1", "entrypoint": "index.js",
		"destination": shared.storage + "/builds/" + id, "remove": true}
	for k, v := range build {
		body[k] = v
	}
	r := x.request(t, "POST", "/v1/runtimes", body, nil)
	if r.status != 201 {
		t.Fatalf("build: %d %s", r.status, r.body)
	}
	res := r.json(t)
	for _, k := range []string{"path", "output", "duration", "startTime", "size"} {
		if res[k] == nil {
			t.Fatalf("build result lacks %s: %s", k, r.body)
		}
	}
	eb := execBody(res["path"].(string), exec)
	r = x.request(t, "POST", "/v1/runtimes/"+id+"/executions", eb, jsonAccept)
	if r.status != 200 || r.json(t)["statusCode"] != float64(200) {
		t.Fatalf("execution: %d %s", r.status, r.body)
	}
	var echo map[string]any
	if err := json.Unmarshal([]byte(r.json(t)["body"].(string)), &echo); err != nil {
		t.Fatal(err)
	}
	echo["_buildOutput"] = res["output"]
	x.deleteRuntime(t, id)
	return echo
}

func TestBuildScenarios(t *testing.T) {
	// The reference's node-specs scenario asks for 2.5 CPUs: more than the default maximum (the host's CPUs)
	// on a 2-core machine.
	x := startExecutor(t, "OPR_EXECUTOR_MAX_CPUS=4")
	const buildCmd = `tar -zxf /tmp/code.tar.gz -C /mnt/code && sh helpers/build.sh "true"`

	t.Run("output directory", func(t *testing.T) {
		src := source(t, map[string]string{"index.js": "top-level", "dist/index.js": "from-dist"})
		echo := buildAndRun(t, x, "outdir", map[string]any{"source": src, "command": buildCmd, "outputDirectory": "./dist"}, nil)
		if echo["code"] != "from-dist" {
			t.Fatalf("runtime loaded %q, want the output directory's file", echo["code"])
		}
	})
	t.Run("uncompressed artifact", func(t *testing.T) {
		src := source(t, map[string]string{"index.js": "uncompressed-code"})
		echo := buildAndRun(t, x, "plain", map[string]any{"source": src, "command": buildCmd,
			"variables": map[string]any{"OPEN_RUNTIMES_BUILD_COMPRESSION": "none"}}, nil)
		if echo["code"] != "uncompressed-code" {
			t.Fatalf("runtime loaded %q", echo["code"])
		}
	})
	t.Run("zip source", func(t *testing.T) {
		dir, _ := os.MkdirTemp(shared.storage, "zip-")
		p := filepath.Join(dir, "code.zip")
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		zw := zip.NewWriter(f)
		w, _ := zw.Create("index.js")
		w.Write([]byte("zipped-code"))
		zw.Close()
		f.Close()
		echo := buildAndRun(t, x, "zip", map[string]any{"source": p,
			"command": `unzip /tmp/code.tar.gz -d /mnt/code && sh helpers/build.sh "true"`}, nil)
		if echo["code"] != "zipped-code" {
			t.Fatalf("runtime loaded %q", echo["code"])
		}
	})
	t.Run("cpus and memory reach build and runtime", func(t *testing.T) {
		src := source(t, map[string]string{"index.js": "x"})
		echo := buildAndRun(t, x, "specs", map[string]any{"source": src, "cpus": 2.5, "memory": 1024,
			"command": `echo "cpus=$OPEN_RUNTIMES_CPUS" && echo "memory=$OPEN_RUNTIMES_MEMORY" && ` + buildCmd},
			map[string]any{"cpus": 2.5, "memory": 1024})
		var out strings.Builder
		for _, e := range echo["_buildOutput"].([]any) {
			out.WriteString(e.(map[string]any)["content"].(string))
		}
		if !strings.Contains(out.String(), "cpus=2.5") || !strings.Contains(out.String(), "memory=1024") {
			t.Fatalf("build output %q", out.String())
		}
		env := echo["env"].(map[string]any)
		if env["OPEN_RUNTIMES_CPUS"] != "2.5" || env["OPEN_RUNTIMES_MEMORY"] != "1024" {
			t.Fatalf("runtime env %v", env)
		}
	})
	t.Run("empty object and array bodies pass through", func(t *testing.T) {
		src := source(t, map[string]string{"index.js": "x"})
		for _, body := range []string{"{}", "[]"} {
			r := x.request(t, "POST", "/v1/runtimes/empty/executions", execBody(src, map[string]any{"path": "/", "method": "POST", "body": body}), jsonAccept)
			got, ok := r.json(t)["body"].(string)
			if r.status != 200 || !ok {
				t.Fatalf("execution with body %s: status %d: %s", body, r.status, r.body)
			}
			var echo map[string]any
			_ = json.Unmarshal([]byte(got), &echo)
			if echo["body"] != body {
				t.Fatalf("runtime got %v, want %s", echo["body"], body)
			}
		}
		x.deleteRuntime(t, "empty")
	})
	x.waitClean(t)
}

// Bodies up to 20 MiB reach the runtime whole; one byte more is refused.
func TestLargeBodies(t *testing.T) {
	x := startExecutor(t)
	createIdle(t, x, "big", nil)
	body := strings.Repeat("b", 20<<20)
	r := x.request(t, "POST", "/v1/runtimes/big/executions", map[string]any{"path": "/write?path=/usr/local/server/big", "method": "POST", "body": body, "timeout": 60}, jsonAccept)
	if r.status != 200 || r.json(t)["statusCode"] != float64(200) {
		t.Fatalf("%d %.300s", r.status, r.body)
	}
	if out, _ := command(t, x, "big", "wc -c < /usr/local/server/big"); strings.TrimSpace(out) != "20971520" {
		t.Fatalf("the runtime received %q bytes", out)
	}
	r = x.request(t, "POST", "/v1/runtimes/big/executions", map[string]any{"path": "/", "method": "POST", "body": body + "b"}, jsonAccept)
	if r.status != 400 || !strings.Contains(string(r.body), "Invalid `body` param") {
		t.Fatalf("21 MiB body: %d %.300s", r.status, r.body)
	}
}

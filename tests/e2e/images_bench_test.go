package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"executor/images"
	"executor/tests/testenv"
)

// bigImage is a ~100 MB image (busybox base + 5 layers of 20 MiB of
// incompressible data) pushed once to the shared registry.
var bigImage struct {
	once sync.Once
	ref  string
	err  error
}

func pushBigImage(b *testing.B) string {
	bigImage.once.Do(func() {
		ctx := context.Background()
		layout, err := testenv.BuildLayeredImage(ctx, testenv.LayeredImageOptions{
			Dir: filepath.Join(shared.work, "big-image"), Tag: "v1", Layers: 5, LayerSize: 20 << 20, Seed: 42,
		})
		if err != nil {
			bigImage.err = err
			return
		}
		bigImage.ref = shared.registry.Addr() + "/bench/big:v1"
		bigImage.err = testenv.PushImage(ctx, layout, "v1", bigImage.ref, true)
	})
	if bigImage.err != nil {
		b.Fatal(bigImage.err)
	}
	return bigImage.ref
}

// benchTool finds a tool the comparison needs, or fails saying how to get it.
func benchTool(b *testing.B, name, install string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if gopath, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		p := filepath.Join(strings.TrimSpace(string(gopath)), "bin", name)
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	b.Fatalf("%s is missing: the pull benchmark compares against it (install: %s; .ci/run does)", name, install)
	return ""
}

// BenchmarkImagePull pulls and unpacks a ~100 MB, 6-layer image from the
// loopback registry into a fresh store, and, in the same iteration, does the
// same with the standard tools: `skopeo copy docker://… oci:…` then
// `umoci unpack`. It reports both and their ratio (goal: ours/theirs <= 1).
//
//	make build && go test -tags '...' -run '^$' -bench ImagePull -benchtime 5x ./tests/e2e/
func BenchmarkImagePull(b *testing.B) {
	skopeo := benchTool(b, "skopeo", "apt-get install skopeo")
	umoci := benchTool(b, "umoci", "build github.com/opencontainers/umoci/cmd/umoci@v0.6.0")
	ref := pushBigImage(b)
	ctx := context.Background()
	work := b.TempDir()
	conf := filepath.Join(work, "registries.conf")
	if err := os.WriteFile(conf, fmt.Appendf(nil, "[[registry]]\nlocation = %q\ninsecure = true\n", shared.registry.Addr()), 0o644); err != nil {
		b.Fatal(err)
	}
	policy := filepath.Join(work, "policy.json")
	if err := os.WriteFile(policy, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o644); err != nil {
		b.Fatal(err)
	}

	ours := func(dir string) error {
		s, err := images.New(images.Config{Root: dir, RegistriesConf: conf, PolicyPath: policy, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			return err
		}
		_, err = s.Pull(ctx, ref)
		return err
	}
	theirs := func(dir string) error {
		layout, bundle := filepath.Join(dir, "layout"), filepath.Join(dir, "bundle")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		cp := exec.Command(skopeo, "--insecure-policy", "--registries-conf", conf, "copy", "--quiet",
			"--src-tls-verify=false", "docker://"+ref, "oci:"+layout+":v1")
		if out, err := cp.CombinedOutput(); err != nil {
			return fmt.Errorf("skopeo copy: %v: %s", err, out)
		}
		if out, err := exec.Command(umoci, "unpack", "--image", layout+":v1", bundle).CombinedOutput(); err != nil {
			return fmt.Errorf("umoci unpack: %v: %s", err, out)
		}
		return nil
	}

	var tOurs, tTheirs time.Duration
	var dOurs, dTheirs []time.Duration
	i := 0
	for b.Loop() {
		dirOurs, dirTheirs := filepath.Join(work, fmt.Sprint("ours-", i)), filepath.Join(work, fmt.Sprint("theirs-", i))
		run := func(f func(string) error, dir string, total *time.Duration, ds *[]time.Duration) {
			start := time.Now()
			if err := f(dir); err != nil {
				b.Fatal(err)
			}
			d := time.Since(start)
			*total += d
			*ds = append(*ds, d)
		}
		// Alternate the order so neither side always gets the warmer cache.
		if i%2 == 0 {
			run(ours, dirOurs, &tOurs, &dOurs)
			run(theirs, dirTheirs, &tTheirs, &dTheirs)
		} else {
			run(theirs, dirTheirs, &tTheirs, &dTheirs)
			run(ours, dirOurs, &tOurs, &dOurs)
		}
		b.StopTimer()
		if err := os.RemoveAll(dirOurs); err != nil {
			b.Fatal(err)
		}
		if err := os.RemoveAll(dirTheirs); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		i++
	}
	reportDurations(b, "ours", dOurs)
	reportDurations(b, "skopeo+umoci", dTheirs)
	b.ReportMetric(float64(tOurs)/float64(tTheirs), "ours/theirs")
}

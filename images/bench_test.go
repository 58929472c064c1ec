package images

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"executor/tests/cmd/benchtable/samples"
)

// BenchmarkMountRoot measures what a cold start pays for its root once the
// image is in the store: Pull (a cache hit) plus MountRoot; and, separately,
// UnmountRoot at destroy; each as n, p50, p90 and p99.
//
//	go test -tags containers_image_openpgp,containers_image_storage_stub -run '^$' -bench MountRoot ./images/
func BenchmarkMountRoot(b *testing.B) {
	requireRoot(b)
	ctx := context.Background()
	for _, layers := range []int{3, 20} {
		s := newTestStore(b, Config{})
		l := newLayout(b, b.TempDir())
		img := baseImage()
		for i := len(img.layers); i < layers; i++ {
			img.layers = append(img.layers, testLayer{compression: "gzip", entries: []entry{
				dir("data/"), file(fmt.Sprintf("data/%d", i), strings.Repeat("x", 4096)),
			}})
		}
		ref := l.tag(l.image(img), "bench")
		if _, err := s.Pull(ctx, ref); err != nil {
			b.Fatal(err)
		}
		base := b.TempDir()
		var dirs []string
		b.Cleanup(func() {
			for _, d := range dirs {
				s.UnmountRoot(d)
			}
		})

		b.Run(fmt.Sprintf("layers=%d/prepare", layers), func(b *testing.B) {
			var ds []time.Duration
			for b.Loop() {
				dir := filepath.Join(base, fmt.Sprint(len(dirs)))
				dirs = append(dirs, dir)
				start := time.Now()
				img, err := s.Pull(ctx, ref)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := s.MountRoot(ctx, img, dir); err != nil {
					b.Fatal(err)
				}
				ds = append(ds, time.Since(start))
				b.StopTimer()
				if err := s.UnmountRoot(dir); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			samples.Report(b, "prepare", ds)
		})
		b.Run(fmt.Sprintf("layers=%d/unmount", layers), func(b *testing.B) {
			var ds []time.Duration
			for b.Loop() {
				b.StopTimer()
				dir := filepath.Join(base, fmt.Sprint(len(dirs)))
				dirs = append(dirs, dir)
				img, err := s.Pull(ctx, ref)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := s.MountRoot(ctx, img, dir); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				start := time.Now()
				if err := s.UnmountRoot(dir); err != nil {
					b.Fatal(err)
				}
				ds = append(ds, time.Since(start))
			}
			samples.Report(b, "unmount", ds)
		})
	}
}

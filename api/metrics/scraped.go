package metrics

import (
	"golang.org/x/sys/unix"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	runtimesDesc = prometheus.NewDesc("executor_runtimes",
		"Runtimes in the table, by state: pending (being created) or ready.", []string{"state"}, nil)
	layerBytesDesc = prometheus.NewDesc("executor_image_layer_store_bytes",
		"Size of the files in the image layer store.", nil, nil)
	dataDirSizeDesc = prometheus.NewDesc("executor_data_dir_size_bytes",
		"Size of the filesystem holding the data dir.", nil, nil)
	dataDirFreeDesc = prometheus.NewDesc("executor_data_dir_free_bytes",
		"Bytes free for the executor on the filesystem holding the data dir.", nil, nil)
	runtimeCPUDesc = prometheus.NewDesc("executor_runtimes_cpu_cores",
		"CPU the runtimes used over the latest usage sample, in cores (the sum of GET /v1/health's per-runtime usage / 100).", nil, nil)
	runtimeMemoryDesc = prometheus.NewDesc("executor_runtimes_memory_bytes",
		"Memory charged to the runtimes' cgroups at the latest usage sample, page cache included.", nil, nil)
	runtimeTasksDesc = prometheus.NewDesc("executor_runtimes_tasks",
		"Tasks (processes and threads) in the runtimes' cgroups at the latest usage sample.", nil, nil)
)

// scraped are the metrics read when scraped: each read is a lock, a
// counter or one statfs, never a walk of cgroups or directories.
type scraped struct{ src Sources }

func (s *scraped) Describe(ch chan<- *prometheus.Desc) {
	if s.src.Runtimes != nil {
		ch <- runtimesDesc
	}
	if s.src.LayerBytes != nil {
		ch <- layerBytesDesc
	}
	if s.src.DataDir != "" {
		ch <- dataDirSizeDesc
		ch <- dataDirFreeDesc
	}
	if s.src.Usage != nil {
		ch <- runtimeCPUDesc
		ch <- runtimeMemoryDesc
		ch <- runtimeTasksDesc
	}
}

func (s *scraped) Collect(ch chan<- prometheus.Metric) {
	if s.src.Runtimes != nil {
		pending, ready := s.src.Runtimes()
		ch <- prometheus.MustNewConstMetric(runtimesDesc, prometheus.GaugeValue, float64(pending), "pending")
		ch <- prometheus.MustNewConstMetric(runtimesDesc, prometheus.GaugeValue, float64(ready), "ready")
	}
	if s.src.LayerBytes != nil {
		ch <- prometheus.MustNewConstMetric(layerBytesDesc, prometheus.GaugeValue, float64(s.src.LayerBytes()))
	}
	if s.src.Usage != nil {
		cpu, mem, tasks := s.src.Usage()
		ch <- prometheus.MustNewConstMetric(runtimeCPUDesc, prometheus.GaugeValue, cpu)
		ch <- prometheus.MustNewConstMetric(runtimeMemoryDesc, prometheus.GaugeValue, float64(mem))
		ch <- prometheus.MustNewConstMetric(runtimeTasksDesc, prometheus.GaugeValue, float64(tasks))
	}
	if s.src.DataDir != "" {
		var st unix.Statfs_t
		if err := unix.Statfs(s.src.DataDir, &st); err != nil {
			ch <- prometheus.NewInvalidMetric(dataDirFreeDesc, err)
			return
		}
		ch <- prometheus.MustNewConstMetric(dataDirSizeDesc, prometheus.GaugeValue, float64(st.Blocks)*float64(st.Bsize))
		ch <- prometheus.MustNewConstMetric(dataDirFreeDesc, prometheus.GaugeValue, float64(st.Bavail)*float64(st.Bsize))
	}
}

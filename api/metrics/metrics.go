// Package metrics keeps the executor's Prometheus metrics and serves them.
// The packages doing the work know nothing of Prometheus: each reports
// through an Observer of its own (api, sandbox, images, storage), which
// Metrics implements, and what is cheap to read when scraped (runtimes,
// the layer store's size, the data dir's free space) is read then.
//
// Every label has a bounded set of values: no runtime id, image or path is
// ever a label.
package metrics

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"executor/api"
	"executor/images"
	"executor/sandbox"
	"executor/sandbox/protocol"
	"executor/storage"
)

// Buckets, in seconds. Executions and cold starts run from milliseconds
// (warm, prewarmed) to minutes (a first pull of a large image); a stage can
// be well under a millisecond.
var (
	latencyBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}
	stageBuckets   = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300}
)

// Stages are the cold-start stages reported; any other name is counted as
// "other", so that the label stays bounded.
var stages = []string{"source", "pull", "root", "network", "config", "container", "readiness"}

// Metrics is the executor's metrics, in a registry of their own.
type Metrics struct {
	reg *prometheus.Registry

	executions        *prometheus.CounterVec
	executionDuration *prometheus.HistogramVec
	coldStarts        *prometheus.CounterVec
	coldStartDuration *prometheus.HistogramVec
	stageDuration     *prometheus.HistogramVec
	prewarm           *prometheus.CounterVec
	builds            *prometheus.CounterVec
	buildDuration     prometheus.Histogram
	exits             *prometheus.CounterVec
	restarts          prometheus.Counter
	removed           *prometheus.CounterVec
	pulls             *prometheus.CounterVec
	pullBytes         prometheus.Counter
	pullDuration      prometheus.Histogram
	storageOps        *prometheus.CounterVec
	storageErrors     *prometheus.CounterVec
	storageDuration   *prometheus.HistogramVec
	requests          *prometheus.CounterVec
	requestDuration   *prometheus.HistogramVec
}

// New makes the metrics, with the Go runtime and process collectors.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		executions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "executor_executions_total",
			Help: "Executions by protocol version and status: the runtime's answer's status class (2xx..5xx), or the failure when it gave none (timeout, out_of_memory, runtime_failed, ...).",
		}, []string{"version", "status"}),
		executionDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "executor_execution_duration_seconds",
			Help:    "Executions' latency, from the request to the runtime's answer, the creation of a runtime it started included.",
			Buckets: latencyBuckets,
		}, []string{"version"}),
		coldStarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "executor_cold_starts_total",
			Help: "Runtimes created (assembled and their container started), by outcome (ok, error) and whether a prewarmed sandbox served them.",
		}, []string{"outcome", "prewarmed"}),
		coldStartDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "executor_cold_start_duration_seconds",
			Help:    "Time from a runtime's creation to its container started (readiness not included: see the readiness stage).",
			Buckets: latencyBuckets,
		}, []string{"prewarmed"}),
		stageDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "executor_cold_start_stage_duration_seconds",
			Help:    "Duration of each stage of a cold start: source, pull, root, network, config, container, and readiness (the starting execution's wait for the runtime to listen).",
			Buckets: stageBuckets,
		}, []string{"stage"}),
		prewarm: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "executor_prewarm_lookups_total",
			Help: "Cold starts the prewarm pool could serve, by result: hit (a prewarmed sandbox was taken) or miss.",
		}, []string{"result"}),
		builds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "executor_builds_total",
			Help: "Build commands run, by outcome: ok, failed (the command or its artifact), timeout, error.",
		}, []string{"outcome"}),
		buildDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "executor_build_duration_seconds",
			Help:    "Builds' duration: the command and the upload of its artifact.",
			Buckets: latencyBuckets,
		}),
		exits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "executor_runtime_exits_total",
			Help: "Runtimes' main processes that ended on their own, by reason: oom (killed by the OOM killer at the runtime's memory limit) or exit.",
		}, []string{"reason"}),
		restarts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "executor_runtime_restarts_total",
			Help: "Main processes restarted by their runtime's restart policy.",
		}),
		removed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "executor_runtimes_removed_total",
			Help: "Runtimes removed, by reason: deleted (API or build), maintenance (idle), oom or exited (main process gone and not restarted).",
		}, []string{"reason"}),
		pulls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "executor_image_pulls_total",
			Help: "Image pulls from a registry or archive (not uses of an image already stored), by outcome: ok, error.",
		}, []string{"outcome"}),
		pullBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "executor_image_pull_bytes_total",
			Help: "Bytes pulls unpacked into the layer store (layers already stored cost nothing).",
		}),
		pullDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "executor_image_pull_duration_seconds",
			Help:    "Image pulls' duration.",
			Buckets: latencyBuckets,
		}),
		storageOps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "executor_storage_operations_total",
			Help: "Operations on the storage devices (sources, artifacts, build caches), by device kind (local, s3) and operation (read, write, exists, delete).",
		}, []string{"device", "operation"}),
		storageErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "executor_storage_errors_total",
			Help: "Storage operations that failed, by device kind, operation and reason (not_found, unauthorized, unavailable, too_large, refused, canceled, other).",
		}, []string{"device", "operation", "reason"}),
		storageDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "executor_storage_operation_duration_seconds",
			Help:    "Storage operations' duration (a read: until the object is open).",
			Buckets: stageBuckets,
		}, []string{"device", "operation"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "executor_api_requests_total",
			Help: "API requests answered, by route pattern (unmatched when none), method and status code.",
		}, []string{"route", "method", "status"}),
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "executor_api_request_duration_seconds",
			Help:    "API requests' duration, by route pattern and method.",
			Buckets: latencyBuckets,
		}, []string{"route", "method"}),
	}
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.executions, m.executionDuration, m.coldStarts, m.coldStartDuration, m.stageDuration, m.prewarm,
		m.builds, m.buildDuration, m.exits, m.restarts, m.removed, m.pulls, m.pullBytes, m.pullDuration,
		m.storageOps, m.storageErrors, m.storageDuration, m.requests, m.requestDuration,
	)
	// Series that alerts and rate() look for exist from the start, at 0.
	for _, outcome := range []string{"ok", "error"} {
		for _, pw := range []string{"false", "true"} {
			m.coldStarts.WithLabelValues(outcome, pw)
		}
		m.pulls.WithLabelValues(outcome)
	}
	for _, r := range []string{"hit", "miss"} {
		m.prewarm.WithLabelValues(r)
	}
	for _, o := range []string{"ok", "failed", "timeout", "error"} {
		m.builds.WithLabelValues(o)
	}
	for _, r := range []string{"oom", "exit"} {
		m.exits.WithLabelValues(r)
	}
	for _, r := range []string{sandbox.RemovedDeleted, sandbox.RemovedMaintenance, sandbox.RemovedOOM, sandbox.RemovedExited} {
		m.removed.WithLabelValues(r)
	}
	return m
}

// Sources are what is read when the metrics are scraped; each is optional.
type Sources struct {
	// Runtimes counts the runtimes being created and made (sandbox.Manager.Count).
	Runtimes func() (pending, ready int)
	// LayerBytes is the layer store's size (images.Store.LayerBytes).
	LayerBytes func() int64
	// DataDir is the data dir, whose filesystem's size and free space are
	// read (one statfs).
	DataDir string
	// Usage sums the runtimes' figures from the usage sampler's latest
	// sample (the numbers GET /v1/health shows per runtime): CPU in cores,
	// memory charged in bytes, tasks. It reads no cgroup itself.
	Usage func() (cpuCores float64, memoryBytes, tasks uint64)
}

// Watch adds the metrics read at scrape time from src. Call it once, before
// serving.
func (m *Metrics) Watch(src Sources) error {
	return m.reg.Register(&scraped{src: src})
}

// Registry is the registry the metrics are in, for tests and for adding
// collectors of other parts.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in Prometheus' text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// Sandbox is the sandbox's Observer.
func (m *Metrics) Sandbox() sandbox.Observer { return sandboxObserver{m} }

// API is the API's Observer.
func (m *Metrics) API() api.Observer { return apiObserver{m} }

// Images is the image store's Observer.
func (m *Metrics) Images() images.Observer { return imagesObserver{m} }

// Storage is the storage devices' Observer.
func (m *Metrics) Storage() storage.Observer { return storageObserver{m} }

type sandboxObserver struct{ m *Metrics }

func (o sandboxObserver) Stage(_ context.Context, name string, _ time.Time, took time.Duration) {
	if !isStage(name) {
		name = "other"
	}
	o.m.stageDuration.WithLabelValues(name).Observe(took.Seconds())
}

func (o sandboxObserver) ColdStart(_ context.Context, prewarmed bool, took time.Duration, err error) {
	pw := strconv.FormatBool(prewarmed)
	o.m.coldStarts.WithLabelValues(outcome(err), pw).Inc()
	if err == nil {
		o.m.coldStartDuration.WithLabelValues(pw).Observe(took.Seconds())
	}
}

func (o sandboxObserver) Prewarm(_ context.Context, hit bool) {
	r := "miss"
	if hit {
		r = "hit"
	}
	o.m.prewarm.WithLabelValues(r).Inc()
}

func (o sandboxObserver) Execution(_ context.Context, version protocol.Version, status int, took time.Duration, err error) {
	v := string(version)
	if v == "" {
		v = "unknown"
	}
	o.m.executions.WithLabelValues(v, executionStatus(status, err)).Inc()
	o.m.executionDuration.WithLabelValues(v).Observe(took.Seconds())
}

func (o sandboxObserver) Build(_ context.Context, took time.Duration, err error) {
	var out string
	switch {
	case err == nil:
		out = "ok"
	case errors.Is(err, context.DeadlineExceeded):
		out = "timeout"
	case sandbox.KindOf(err) == sandbox.BuildFailed:
		out = "failed"
	default:
		out = "error"
	}
	o.m.builds.WithLabelValues(out).Inc()
	o.m.buildDuration.Observe(took.Seconds())
}

func (o sandboxObserver) RuntimeExited(oom bool) {
	r := "exit"
	if oom {
		r = "oom"
	}
	o.m.exits.WithLabelValues(r).Inc()
}

func (o sandboxObserver) RuntimeRestarted() { o.m.restarts.Inc() }

func (o sandboxObserver) RuntimeRemoved(reason string) {
	switch reason {
	case sandbox.RemovedDeleted, sandbox.RemovedMaintenance, sandbox.RemovedOOM, sandbox.RemovedExited:
	default:
		reason = "other"
	}
	o.m.removed.WithLabelValues(reason).Inc()
}

type apiObserver struct{ m *Metrics }

func (o apiObserver) Request(r *http.Request, route string, status int, took time.Duration) {
	if route == "" {
		route = "unmatched"
	}
	method := r.Method
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions:
	default:
		method = "other"
	}
	code := "other"
	if status >= 100 && status <= 599 {
		code = strconv.Itoa(status)
	}
	o.m.requests.WithLabelValues(route, method, code).Inc()
	o.m.requestDuration.WithLabelValues(route, method).Observe(took.Seconds())
}

type imagesObserver struct{ m *Metrics }

func (o imagesObserver) Pull(_ context.Context, took time.Duration, bytes int64, err error) {
	o.m.pulls.WithLabelValues(outcome(err)).Inc()
	o.m.pullBytes.Add(float64(max(0, bytes)))
	o.m.pullDuration.Observe(took.Seconds())
}

type storageObserver struct{ m *Metrics }

func (o storageObserver) Operation(_ context.Context, kind, op string, took time.Duration, err error) {
	o.m.storageOps.WithLabelValues(kind, op).Inc()
	o.m.storageDuration.WithLabelValues(kind, op).Observe(took.Seconds())
	if err != nil {
		o.m.storageErrors.WithLabelValues(kind, op, storageReason(err)).Inc()
	}
}

func isStage(name string) bool {
	for _, s := range stages {
		if s == name {
			return true
		}
	}
	return false
}

func outcome(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}

// executionStatus is the status label of an execution: its runtime's
// answer's class, else the failure's kind.
func executionStatus(status int, err error) string {
	if err == nil {
		if status >= 100 && status <= 599 {
			return strconv.Itoa(status/100) + "xx"
		}
		return "other"
	}
	switch sandbox.KindOf(err) {
	case sandbox.NotFound:
		return "not_found"
	case sandbox.Timeout:
		return "timeout"
	case sandbox.RuntimeFailed:
		return "runtime_failed"
	case sandbox.HostFailed:
		return "host_failed"
	case sandbox.OutOfMemory:
		return "out_of_memory"
	case sandbox.Capacity:
		return "capacity"
	case sandbox.ShuttingDown:
		return "shutting_down"
	}
	if errors.Is(err, context.Canceled) {
		return "canceled"
	}
	return "error"
}

func storageReason(err error) string {
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return "not_found"
	case errors.Is(err, storage.ErrUnauthorized):
		return "unauthorized"
	case errors.Is(err, storage.ErrUnavailable):
		return "unavailable"
	case errors.Is(err, storage.ErrTooLarge):
		return "too_large"
	case errors.Is(err, storage.ErrInvalidPath), errors.Is(err, storage.ErrOutsideRoots), errors.Is(err, storage.ErrNotRegular):
		return "refused"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "canceled"
	}
	return "other"
}

// Package observe is paster's process-wide view of itself, for the
// egg:paster#metrics and egg:paster#health apps: request counts and
// latencies by app and status, the cost of the hop to plugin processes, and
// snapshots of the current generation (coroutines, the Core, plugin
// processes, reloads).
//
// Metrics are kept and exposed with github.com/prometheus/client_golang
// (Registry.Handler: the Prometheus text format, or OpenMetrics when the
// scraper asks for it), with the Go runtime's and the process's collectors
// beside paster's own.
//
// A Registry is made by whoever serves (paster serve makes one per process)
// and reaches apps through the request context (With, From), so a metrics
// app mounted anywhere in a composition reports on the process serving it,
// without globals. The serving side records requests (Instrument) and gives
// the Registry a Source that takes a Snapshot on demand; the registry holds
// no copy of the scheduler's or the plugins' state.
//
// Label sets are bounded: at most MaxApps app labels (later ones are counted
// under "other"), status codes 100-599 (anything else is "other"), at most
// MaxDists plugin dist labels (later ones are "other"), and otherwise names
// taken from the configuration (coroutines, plugin binaries), never from
// requests.
package observe

import (
	"context"
	"maps"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/paster-dev/paster/runner"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// MaxApps bounds the number of distinct app labels a Registry keeps.
const MaxApps = 32

// Buckets are the upper bounds, in seconds, of the request latency
// histogram. They reach a minute because long-polls are requests too.
var Buckets = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// Plugin is one plugin process as a Snapshot shows it.
type Plugin struct {
	Path, Dist, Version string
	PID                 int
	// State is running, restarting, crash_loop, failed or closed, as
	// /health and /metrics show it.
	State string
	// Running says that State is running; Stopped that it is closed (the
	// host stopped the process on purpose). Decisions use these, never
	// State's text.
	Running, Stopped bool
	// NextRestart is when the next start attempt is due while restarting
	// or in a crash loop (zero otherwise).
	NextRestart time.Time
	// Restarts counts the processes started after a crash.
	Restarts int
	// Instances counts the instances living in the process.
	Instances int
	// LogDropped counts the lines of the binary's output dropped over the
	// log rate limit.
	LogDropped uint64
	// Generations lists the generations using the process.
	Generations []int
}

// Reloads describes the reloads so far.
type Reloads struct {
	// Total counts reloads attempted; Failed those that kept the old
	// generation serving.
	Total, Failed int
	// Last is when the last reload ended (zero: none yet); LastOK whether it
	// succeeded and LastError why not.
	Last      time.Time
	LastOK    bool
	LastError string
}

// Snapshot is the state of the serving process at one moment.
type Snapshot struct {
	// Generation numbers the current generation (1 for the first load);
	// Draining lists older generations still finishing requests.
	Generation int
	Draining   []int
	// Coroutines are the current generation's startup coroutines.
	Coroutines []runner.CoroutineStatus
	// ServerCoroutines are those the running server runner added to its
	// own scheduler in code (r.Sched.Add in a runner.Runner), in this
	// process or in the plugin process the server runs in.
	ServerCoroutines []runner.CoroutineStatus
	// Core is what the process-wide Core holds; HasCore says whether it is
	// known.
	Core    runner.CoreStats
	HasCore bool
	Plugins []Plugin
	Reloads Reloads
	// Started is when the process began serving.
	Started time.Time
	// Stopping is set once the process is shutting down.
	Stopping bool
}

// Source returns a Snapshot of the serving process.
type Source func() Snapshot

// Registry holds the process's metrics — requests, plugin hops, the Go
// runtime and the process — in a prometheus.Registry of its own (never the
// global one, so that several Registries live side by side in one process),
// and the Source of snapshots read at each scrape. Every collector is
// registered once, by New: generations come and go without registering
// anything. The zero value is not usable; make one with New. It is safe for
// concurrent use.
type Registry struct {
	source atomic.Pointer[Source]

	inflight atomic.Int64

	prom     *prometheus.Registry
	handler  http.Handler
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	hop      hopVecs

	mu    sync.Mutex
	apps  atomic.Pointer[map[string]*appMetrics] // copied on write, under mu: read without a lock
	dists map[string]*hopMetrics
}

// appMetrics caches one app label's series, so that recording a request
// looks nothing up in the vectors and takes no lock once its status code
// has been seen.
type appMetrics struct {
	name     string
	requests *prometheus.CounterVec
	duration prometheus.Observer
	codes    [statusCodes + 1]atomic.Pointer[codeCounter] // by code-100; the last is "other"
}

// statusCodes is the number of status codes with a label of their own,
// 100-599.
const statusCodes = 500

// codeCounter is the requests counter of one app and status code.
type codeCounter struct{ prometheus.Counter }

// New returns a Registry with no requests recorded yet, holding paster's
// metrics and the Go runtime's and process's collectors
// (collectors.NewGoCollector, collectors.NewProcessCollector).
func New() *Registry {
	r := &Registry{
		prom: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "paster_http_requests_total",
			Help: "Requests served, by app and status code.",
		}, []string{"app", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "paster_http_request_duration_seconds",
			Help:    "Request latency, by app (long-polls included).",
			Buckets: Buckets,
		}, []string{"app"}),
		hop:   newHopVecs(),
		dists: map[string]*hopMetrics{},
	}
	r.apps.Store(&map[string]*appMetrics{})
	r.prom.MustRegister(
		r.requests, r.duration,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "paster_http_requests_in_flight",
			Help: "Requests being served.",
		}, func() float64 { return float64(r.inflight.Load()) }),
		r.hop.duration, r.hop.sent, r.hop.received,
		snapshotCollector{r},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	r.handler = promhttp.HandlerFor(r.prom, promhttp.HandlerOpts{EnableOpenMetrics: true})
	return r
}

// SetSource makes f the Registry's Source.
func (r *Registry) SetSource(f Source) { r.source.Store(&f) }

// Snapshot returns the Source's snapshot, or a zero Snapshot without one.
func (r *Registry) Snapshot() Snapshot {
	if f := r.source.Load(); f != nil {
		return (*f)()
	}
	return Snapshot{}
}

// InFlight returns how many instrumented requests are being served.
func (r *Registry) InFlight() int64 { return r.inflight.Load() }

// Observe records one finished request of app with status code and
// duration d. Past MaxApps distinct apps, new ones are recorded as
// "other"; a code outside 100-599 is recorded as "other".
func (r *Registry) Observe(app string, code int, d time.Duration) {
	r.app(app).observe(code, d)
}

// app returns the series of the app label app ("other" past MaxApps).
func (r *Registry) app(app string) *appMetrics {
	if a := (*r.apps.Load())[app]; a != nil {
		return a
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	apps := *r.apps.Load()
	if a := apps[app]; a != nil {
		return a
	}
	if len(apps) >= MaxApps {
		if a := apps["other"]; a != nil {
			return a
		}
		app = "other"
	}
	a := &appMetrics{name: app, requests: r.requests, duration: r.duration.WithLabelValues(app)}
	grown := maps.Clone(apps)
	grown[app] = a
	r.apps.Store(&grown)
	return a
}

// observe records one request of the app with status code and duration d.
func (a *appMetrics) observe(code int, d time.Duration) {
	i := statusCodes // "other"
	if code >= 100 && code <= 599 {
		i = code - 100
	}
	c := a.codes[i].Load()
	if c == nil {
		text := "other"
		if i < statusCodes {
			text = statusText[i]
		}
		// Two first requests of a code may both get here; the vector
		// hands both the same counter.
		c = &codeCounter{a.requests.WithLabelValues(a.name, text)}
		a.codes[i].Store(c)
	}
	c.Inc()
	a.duration.Observe(d.Seconds())
}

var statusText = func() []string {
	out := make([]string, statusCodes)
	for i := range out {
		out[i] = itoa(i + 100)
	}
	return out
}()

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for n >= 10 {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
	}
	i--
	b[i] = byte('0' + n)
	return string(b[i:])
}

type registryKey struct{}

// With returns a copy of ctx carrying r.
func With(ctx context.Context, r *Registry) context.Context {
	return context.WithValue(ctx, registryKey{}, r)
}

// From returns the Registry ctx carries, or nil.
func From(ctx context.Context) *Registry {
	switch v := ctx.Value(registryKey{}).(type) {
	case *Registry:
		return v
	case *requestContext:
		return v.reg
	}
	if c, ok := ctx.Value(labelKey{}).(*requestContext); ok {
		return c.reg // attached to the request's context (runner.Attach)
	}
	return nil
}

// requestContext is the context of a request Instrument serves: the
// request's own, with the Registry (From) and the request's app label
// (SetApp), and the writer that notes the status, all in one allocation.
// Under a runner.Mount it is not the request's context but attached to
// it (runner.Attach), as what labelKey finds, which saves the copy of
// the request a new context costs.
type requestContext struct {
	context.Context
	reg *Registry
	sw  statusWriter
	// label is the app label the request is counted under: nil for the
	// instrumented handler's own, else what SetApp set.
	label atomic.Pointer[string]
}

// Value answers registryKey (From) and labelKey (SetApp) itself and asks
// the request's context for anything else.
func (c *requestContext) Value(key any) any {
	switch key.(type) {
	case registryKey, labelKey:
		return c
	}
	return c.Context.Value(key)
}

type labelKey struct{}

// SetApp names the app serving the request of ctx, for its metrics: a
// composite that dispatches (egg:paster#urlmap) calls it with the mount path
// it chose, so requests are counted by mount. The number of distinct names
// stays bounded as long as callers pass names from the configuration, never
// from the request. Outside Instrument it does nothing.
func SetApp(ctx context.Context, name string) {
	if c, ok := ctx.Value(labelKey{}).(*requestContext); ok {
		c.label.Store(&name)
	}
}

// Instrument returns a handler that serves next, with r in each request's
// context, and records each request under the label app (or what SetApp set
// meanwhile): in flight while it runs, then its status (200 if the handler
// wrote nothing) and duration. The
// ResponseWriter passed on keeps Flush and Hijack, and unwraps for
// http.ResponseController; a hijacked request counts as 101.
//
// The handler is a runner.RejectObserver: a request the server answered
// itself (413, 431, 400) is counted the same way, under the label next
// sets through SetApp as it passes the rejection on, with duration 0.
func Instrument(r *Registry, app string, next http.Handler) http.Handler {
	return &instrumented{reg: r, app: app, next: next}
}

type instrumented struct {
	reg  *Registry
	app  string
	next http.Handler

	own atomic.Pointer[appMetrics] // the series of app, once looked up
}

// clockBase anchors the request durations: read through time.Since alone,
// the monotonic clock is read once per reading (time.Now reads two clocks).
var clockBase = time.Now()

func (h *instrumented) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r := h.reg
	start := time.Since(clockBase)
	r.inflight.Add(1)
	c := h.labelled(req)
	c.sw.ResponseWrapper = runner.WrapResponse(w, &c.sw)
	defer func() {
		r.inflight.Add(-1)
		code := c.sw.code
		if code == 0 {
			code = http.StatusOK
		}
		if rc := runner.ReplacedStatus(w); rc != 0 {
			code = rc // the server replaced the response (body over max_body_bytes)
		}
		h.series(c).observe(code, time.Since(clockBase)-start)
	}()
	if !runner.Attach(c.Context, labelKey{}, c) {
		req = req.WithContext(c)
	}
	h.next.ServeHTTP(&c.sw, req)
}

// ObserveRejected counts a request the server answered with code itself.
func (h *instrumented) ObserveRejected(req *http.Request, code int) {
	c := h.labelled(req)
	runner.ObserveRejected(h.next, req.WithContext(c), code)
	h.series(c).observe(code, 0)
}

// labelled returns the context of req as Instrument serves it.
func (h *instrumented) labelled(req *http.Request) *requestContext {
	return &requestContext{Context: req.Context(), reg: h.reg}
}

// series returns the series the request of c is counted in: those of
// the label SetApp gave, else the handler's own app.
func (h *instrumented) series(c *requestContext) *appMetrics {
	if name := c.label.Load(); name != nil {
		return h.reg.app(*name)
	}
	if a := h.own.Load(); a != nil {
		return a
	}
	a := h.reg.app(h.app)
	h.own.Store(a)
	return a
}

type statusWriter struct {
	runner.ResponseWrapper
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 && code >= 200 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// BeforeFlush notes the 200 a flush sends (runner.ResponseHooks).
func (w *statusWriter) BeforeFlush() (bool, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return true, nil
}

// Hijacked counts a hijacked request as 101 (runner.ResponseHooks).
func (w *statusWriter) Hijacked() {
	if w.code == 0 {
		w.code = http.StatusSwitchingProtocols
	}
}

package builtin

import (
	"net/http"

	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/runner/observe"
)

// metricsFactory is egg:paster#metrics, an app answering GET with the
// process's metrics, served by prometheus/client_golang's promhttp: the
// Prometheus text format, or OpenMetrics when the scraper asks for it
// (Accept). It reports requests by app and status code, latency histograms,
// requests in flight, the plugin hop's latency and bytes per plugin dist,
// operations parked on the Core, startup coroutines' states and restarts,
// plugin processes' states, the current generation, reloads by result, and
// the Go runtime's (go_*) and the process's (process_*) metrics. It reads
// the observe.Registry that paster serve puts in each request's context;
// served without one (another server) it answers 503 saying so. It takes no
// keys (unknown keys are logged).
//
//	[app:metrics]
//	use = egg:paster#metrics
func metricsFactory(_ map[string]string, local entrypoints.Local) (http.Handler, error) {
	warnUnknown("metrics", local, nil)
	return http.HandlerFunc(serveMetrics), nil
}

func serveMetrics(w http.ResponseWriter, r *http.Request) {
	if !onlyGetHead(w, r, "method not allowed") {
		return
	}
	reg := observe.From(r.Context())
	if reg == nil {
		http.Error(w, "no metrics: this server does not keep an observe.Registry (run under paster serve)", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	reg.Handler().ServeHTTP(w, r)
}

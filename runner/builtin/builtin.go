// Package builtin is the built-in dist "paster": the entry points of Paste
// and PasteDeploy that configuration files commonly use, compiled into every
// paster binary. Importing the package registers the dist, so that
// egg:paster#urlmap and its siblings resolve:
//
//	urlmap       composite   dispatch by path prefix and domain
//	cascade      composite   try apps in turn until one does not answer 404
//	static       app         files under document_root
//	metrics      app         Prometheus metrics of paster serve (metrics.go)
//	health       app         liveness /live and readiness /ready (health.go)
//	pprof        app         Go's profiler, loopback clients by default (pprof.go)
//	limits       filter-app  per-app request body limit (limits.go)
//	translogger  filter-app  access log (Apache combined, JSON or a template)
//	gzip         filter-app  gzip responses for clients that accept it
//	prefix       filter-app  PrefixMiddleware: mount prefix and X-Forwarded-*
//	request_id   filter-app  X-Request-ID in, made if absent, echoed, logged
//	cors         filter-app  CORS headers and preflight answers (rs/cors)
//	ratelimit    filter-app  token bucket per client or header value, 429
//	http         runner      the HTTP server (runner.New and Run)
//
// The dists "Paste" and "PasteDeploy" are registered too, as aliases of the
// entry points Paste's own configuration files name (egg:Paste#urlmap,
// egg:PasteDeploy#prefix), so such files run unchanged.
//
// Apps mounted under a prefix learn it from ScriptName(r), Paste's
// SCRIPT_NAME; r.URL.Path holds the rest (PATH_INFO). Scheme(r) is the
// scheme the client used, as far as the prefix filter could tell.
package builtin

import (
	"net/http"

	"github.com/hashicorp/go-hclog"

	"github.com/paster-dev/paster/entrypoints"
)

// Version is paster's version: the built-in dist's, and what `paster
// version` prints. Set it at build time with
// -ldflags "-X github.com/paster-dev/paster/runner/builtin.Version=...".
var Version = "0.1.0"

// Dist is the built-in dist "paster". It is registered in the default
// registry when the package is imported.
var Dist = &entrypoints.Dist{
	Name:    "paster",
	Version: Version,
	Apps: map[string]entrypoints.AppFactory{
		"static":  staticFactory,
		"metrics": metricsFactory,
		"health":  healthFactory,
		"pprof":   pprofFactory,
	},
	Composites: map[string]entrypoints.CompositeFactory{
		"urlmap":  urlmapFactory,
		"cascade": cascadeFactory,
	},
	FilterApps: map[string]entrypoints.FilterAppFactory{
		"translogger": transloggerFactory,
		"gzip":        gzipFactory,
		"prefix":      prefixFactory,
		"limits":      limitsFactory,
		"request_id":  requestIDFactory,
		"cors":        corsFactory,
		"ratelimit":   ratelimitFactory,
	},
	Runners: map[string]entrypoints.ServerRunner{
		"http": httpRunner,
	},
	Cores: map[string]entrypoints.CoreFactory{
		"memory": memoryCoreFactory,
		"nats":   natsCoreFactory,
	},
}

func init() {
	entrypoints.Register(Dist)
	entrypoints.Register(PasteDist)
	entrypoints.Register(PasteDeployDist)
}

// logger returns the logger for the dist's warnings, looked up at each use
// so that the command's hclog.SetDefault applies.
func logger() hclog.Logger { return hclog.Default().Named("paster") }

// onlyGetHead answers 405 with an Allow header and message, and returns
// false, unless r is a GET or HEAD: the read-only apps' method check.
func onlyGetHead(w http.ResponseWriter, r *http.Request, message string) bool {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return true
	}
	w.Header().Set("Allow", "GET, HEAD")
	http.Error(w, message, http.StatusMethodNotAllowed)
	return false
}

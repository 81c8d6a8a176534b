package runner

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/paster-dev/paster/entrypoints"
)

// Defaults of the runner's own settings.
const (
	DefaultReadyTimeout = 30 * time.Second
)

// Timeout reads the duration key of a server section (SECONDS or a Go
// duration): def when unset; an error naming the file, line, section and key
// when it is not a duration or is negative (0 turns it off). ParseHTTPConfig,
// New and package engine read every timeout of a server section with it
// (shutdown_timeout, ready_timeout, ...), so they agree on what is valid.
func Timeout(local entrypoints.Local, key string, def time.Duration) (time.Duration, error) {
	v, err := local.Duration(key, def)
	if err != nil {
		return 0, err
	}
	if v < 0 {
		return 0, local.Errorf(key, "negative duration %s (0 turns it off)", v)
	}
	return v, nil
}

// RunnerKeys are the server-section keys New reads itself; the rest go to
// NewHTTPServer (HTTPServerKeys). A server runner built on Runner that reads
// keys of its own removes them from local (Local.Without) before New, so
// that they are not reported as unknown.
var RunnerKeys = append([]string{"ready_timeout"}, CoreKeys...)

// ignoredSchedKeys are cogen scheduler options that mean nothing here; New
// warns about each and does not pass it on.
var ignoredSchedKeys = map[string]string{
	"sched_default_priority":   "goroutines have no priorities",
	"proactor_resolution":      "Go's network poller replaces cogen's proactor",
	"proactor_greedy":          "Go's network poller replaces cogen's proactor",
	"proactor_multiplex_first": "Go's network poller replaces cogen's proactor",
	"proactor_default_size":    "Go's network poller replaces cogen's proactor",
	"ops_greedy":               "goroutines are scheduled by the Go runtime",
	"sockaccept_greedy":        "net/http accepts connections as they come",
}

// Runner serves an application the way cogen's Runner did, with
// coroutines on a scheduler beside it. The seed's recipe, for a server
// runner entry point (such as egg:chat#hijacked_runner):
//
//	func hijacked(ctx context.Context, app http.Handler, global map[string]string, local entrypoints.Local) error {
//		r, err := runner.New(app, local)
//		if err != nil {
//			return err
//		}
//		r.Sched.Add("ticker", tick)
//		return r.Run(ctx)
//	}
type Runner struct {
	// Sched supervises the coroutines; add them before or during Run.
	Sched *Sched
	// Core is the Core that coroutines and requests use: a LocalCore made
	// by New, replaced by Run with the Core of Run's context if that has
	// one (the host's, shared with plugins). Coroutines and handlers should
	// reach it through CoreFrom(ctx).
	Core Core
	// HTTP is the HTTP server (its keys are in HTTPServerKeys).
	HTTP *HTTPServer
	// Logger gets the runner's messages (hclog's default logger named
	// "runner"; set it before Run to change where they go).
	Logger hclog.Logger
	// ReadyTimeout bounds how long Run waits for required coroutines
	// before serving (ready_timeout; 0 means no limit).
	ReadyTimeout time.Duration

	app     http.Handler
	own     *LocalCore
	started atomic.Bool
}

// New reads a server section's configuration and returns a Runner that
// will serve app, with an empty scheduler and a new LocalCore. It binds
// nothing. Keys it reads, besides the HTTP server's (see NewHTTPServer) and
// the Core's (sched_default_timeout, pubsub_retain_count,
// pubsub_retain_age, core_max_value, pubsub_retain_bytes and
// pubsub_retain_total_bytes; see CoreOptionsFromLocal):
//
//	ready_timeout          how long to wait for required coroutines before
//	                       serving (default 30s; 0: no limit)
//
// With acme = true, the scheduler has the coroutine that obtains and
// renews the certificates (HTTPServer.ACMECoroutine, named
// ACMECoroutineName; not required, restarted on failure with backoff from
// 1s to 10m).
//
// shutdown_timeout (the HTTP server's) bounds both the draining of requests
// and then the stopping of coroutines. cogen's scheduler options
// (sched_default_priority, proactor_*, ops_greedy, sockaccept_greedy) are
// accepted with a warning. A key of the section that a global of the same
// name hides (a variable on paster serve's command line) takes the
// global's value (Unshadow). A bad value is an error naming the file, line,
// section and key.
func New(app http.Handler, local entrypoints.Local) (*Runner, error) {
	if app == nil {
		return nil, errors.New("runner: no application to serve")
	}
	logger := hclog.Default().Named("runner")
	local = Unshadow(local, logger)

	opts, err := CoreOptionsFromLocal(local)
	if err != nil {
		return nil, err
	}
	readyTimeout, err := Timeout(local, "ready_timeout", DefaultReadyTimeout)
	if err != nil {
		return nil, err
	}
	opts.Logger = logger.Named("core")

	httpLocal := local
	for _, k := range RunnerKeys {
		httpLocal = httpLocal.Without(k)
	}
	for _, k := range local.Keys() {
		if why, ok := ignoredSchedKeys[k]; ok {
			logger.Warn("scheduler option ignored", "key", k, "at", local.Where(k).String(), "why", why)
			httpLocal = httpLocal.Without(k)
		}
	}
	srv, err := NewHTTPServer(httpLocal, logger)
	if err != nil {
		return nil, err
	}

	sched := NewSched(logger)
	if co := srv.ACMECoroutine(); co != nil {
		// Not required: the server must serve for the challenges to be
		// answered. A failure is retried with backoff, slowly, as an
		// ACME CA's rate limits ask.
		if err := sched.Add(ACMECoroutineName, co, Policy{Backoff: time.Second, MaxBackoff: 10 * time.Minute, Jitter: true}); err != nil {
			return nil, err
		}
	}
	core := NewCore(opts)
	return &Runner{
		Sched:        sched,
		Core:         core,
		HTTP:         srv,
		Logger:       logger,
		ReadyTimeout: readyTimeout,
		app:          app,
		own:          core,
	}, nil
}

// Run runs the coroutines and serves until ctx ends, then shuts down. In
// order:
//
//  1. If ctx carries a Core (WithCore; paster serve gives the host's, which
//     plugins share) and r.Core is still the one New made, that Core is used
//     and r.Core set to it.
//  2. r.Sched starts, with the coroutines the runner added to it.
//     Coroutines get the Core in their context; it
//     is not cancelled with ctx but by step 6, so they outlive the drain.
//     While Run runs, r.Sched is in the Scheds ctx carries (WithScheds),
//     so whoever reports on the process sees its coroutines.
//  3. Run waits up to ReadyTimeout for the required coroutines to report
//     ready; if they do not, it stops them and returns an error wrapping
//     ErrNotReady without ever binding.
//  4. The HTTP server binds and serves app; every request's context
//     carries a CoreScope over the Core.
//  5. When ctx ends the server stops accepting and the scope is closed, so
//     every parked wait of a request returns ErrClosed at once and its
//     handler can answer; in-flight requests are drained within
//     shutdown_timeout.
//  6. The scheduler is stopped, with shutdown_timeout as grace, and the
//     LocalCore New made is closed (a Core from ctx is left open: its owner
//     closes it).
//
// Run returns nil after a clean shutdown (also when ctx ends before
// serving began), the error that kept it from serving (a duplicate
// readiness, binding), or the errors of an unclean shutdown
// (requests cut after shutdown_timeout; a *StopError naming coroutines that
// did not stop), joined. When ctx asks for a check (WithCheck), Run starts
// nothing and binds nothing: it returns the section's unknown keys
// (HTTPConfig.Unknown), or nil. A Runner runs once.
func (r *Runner) Run(ctx context.Context) (err error) {
	if !r.started.CompareAndSwap(false, true) {
		return errors.New("runner: Run called twice")
	}
	log := r.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	if r.Core == Core(r.own) && HasCore(ctx) {
		r.Core = CoreFrom(ctx)
		log.Debug("using the core given by the host")
	}
	core := r.Core
	grace := r.HTTP.Config().ShutdownTimeout
	defer r.own.Close()
	if Checking(ctx) {
		// New read and validated the settings; HTTP.Serve reports the
		// keys nothing reads, and binds nothing.
		return r.HTTP.Serve(ctx, r.app)
	}

	if scheds := SchedsFrom(ctx); scheds != nil {
		defer scheds.Add(r.Sched)()
	}
	if err := r.Sched.Start(WithCore(context.WithoutCancel(ctx), core)); err != nil {
		return err
	}
	defer func() {
		if stopErr := r.Sched.Stop(grace); stopErr != nil {
			err = errors.Join(err, stopErr)
		}
	}()

	if err := r.Sched.WaitReady(ctx, r.ReadyTimeout); err != nil {
		if ctx.Err() != nil {
			log.Info("stopped before serving")
			return nil
		}
		return fmt.Errorf("runner: not serving: %w", err)
	}

	scope := NewCoreScope(core)
	defer scope.Close()
	r.HTTP.OnShutdown(func() {
		log.Debug("closing the requests' core scope")
		scope.Close()
	})
	return r.HTTP.Serve(WithCore(ctx, scope), r.app)
}

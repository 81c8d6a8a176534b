package builtin

import (
	"context"
	"net/http"

	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/runner"
)

// httpRunner is egg:paster#http, the server runner of [server:main]
// sections: runner.New(app, local) and Run(ctx), so every request gets a
// CoreScope over the Core of ctx and parked waiters are woken at shutdown
// (the app's startup coroutines run on the engine's scheduler of their
// generation, not here). Its keys are the runner's (runner.New:
// sched_default_timeout, ready_timeout, pubsub_retain_*) and the HTTP
// server's (runner.NewHTTPServer): host, port, the timeouts,
// max_header_bytes, max_body_bytes, shutdown_timeout, and TLS (cert_file
// and key_file, ssl_pem, acme, tls_min_version, client_ca, redirect_http;
// HTTP/2 over TLS) or h2c.
// It serves until ctx ends (paster serve cancels it on SIGINT and SIGTERM)
// and returns nil after a clean shutdown; a bad key, a failed bind or
// requests cut by shutdown_timeout are errors.
func httpRunner(ctx context.Context, app http.Handler, global map[string]string, local entrypoints.Local) error {
	r, err := runner.New(app, local)
	if err != nil {
		return err
	}
	return r.Run(ctx)
}

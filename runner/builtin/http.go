package builtin

import (
	"context"
	"net/http"

	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/runner"
)

// httpRunner is egg:paster#http, the server runner of [server:main]
// sections. Its keys are the HTTP server's (runner.NewHTTPServer): host,
// port, the timeouts, max_header_bytes, max_body_bytes, shutdown_timeout.
// It serves until ctx ends (paster serve cancels it on SIGINT and SIGTERM)
// and returns nil after a clean shutdown; a bad key, a failed bind or
// requests cut by shutdown_timeout are errors.
func httpRunner(ctx context.Context, app http.Handler, global map[string]string, local entrypoints.Local) error {
	srv, err := runner.NewHTTPServer(local, nil)
	if err != nil {
		return err
	}
	return srv.Serve(ctx, app)
}

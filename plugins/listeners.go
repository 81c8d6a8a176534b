package plugins

import (
	"context"

	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/plugins/internal/wire"
	"github.com/paster-dev/paster/runner"
)

// # Listening sockets of plugin servers
//
// A server that runs in a plugin process (a server or server runner entry
// point, such as chat's hijacked_runner) does not bind its socket there when
// the host gives it listeners: when the context it is run with carries a
// runner.ListenerSource (paster serve's ListenerPool), the host lends it the
// sockets of that source. The server's runner.HTTPServer asks the host for
// the address it would bind; the host takes a listener on that address from
// its source and, each time the plugin server is ready to accept, accepts a
// connection on the server's behalf and passes the connection's file
// descriptor to the plugin process (over a unix socket pair the plugin was
// started with; see wire.LendMsg). The socket itself never leaves the host,
// so a server moving to another process, a rebuilt binary or back into the
// host accepts on the same socket as the old one, and stopping the old
// server refuses no connection. A plugin server run without a
// ListenerSource, or on a system without socket passing (other than Linux),
// binds its own socket in the plugin process.

// serveLent runs server instance req as serveWithStartup does, lending it
// the listeners ctx carries (runner.WithListeners) for as long as it runs.
func (p *proc) serveLent(ctx context.Context, local entrypoints.Local, req wire.RunRequest) error {
	if src := runner.ListenersFrom(ctx); src != nil && lendSupported {
		req.Listeners = p.h.lends.add(src)
		defer p.h.lends.remove(req.Listeners)
	}
	return p.serveWithStartup(ctx, local, req)
}

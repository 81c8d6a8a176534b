package plugins

import (
	"context"

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

// serveLent runs server instance req (a server or server runner instance
// of p) until ctx ends, lending it the listeners ctx carries
// (runner.WithListeners) for as long as it runs. While it runs, the
// scheduler of the instance in the plugin (a runner.Runner's) is in the
// runner.Scheds ctx carries. When ctx asks for a check (runner.WithCheck),
// the instance runs with the check flag: it checks its settings and
// returns, binding nothing.
func (p *proc) serveLent(ctx context.Context, req wire.RunRequest) error {
	if runner.Checking(ctx) {
		req.Check = true
		return p.run(ctx, req)
	}
	if scheds := runner.SchedsFrom(ctx); scheds != nil {
		defer scheds.Add(remoteSched{p: p, id: req.ID})()
	}
	if src := runner.ListenersFrom(ctx); src != nil && lendSupported {
		req.Listeners = p.h.lends.add(src)
		defer p.h.lends.remove(req.Listeners)
	}
	return p.run(ctx, req)
}

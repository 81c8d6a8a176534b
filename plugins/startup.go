package plugins

import (
	"context"
	"errors"
	"fmt"

	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/plugins/internal/wire"
	"github.com/paster-dev/paster/runner"
)

// Startup coroutines and plugin servers. Values in a context do not cross
// the process boundary, so the startup coroutines paster serve hands to a
// server in its context (runner.WithStartup) cannot reach a server or
// server runner that lives in a plugin. The host-side wrapper of such a
// server runs them itself, on a runner.Sched in the host, for as long as the
// plugin's server runs: the INI file's coroutines and the apps' own (those
// of a plugin app run inside their plugin, supervised from here) start
// first, serving waits for the required ones, and they are stopped, with
// shutdown_timeout as grace, after the plugin's server has returned.

// serveWithStartup runs req (a server or server runner instance of p) until
// ctx ends, with the startup coroutines ctx carries on a host scheduler.
// local is the server section: ready_timeout bounds the wait for required
// coroutines (default runner.DefaultReadyTimeout), shutdown_timeout is the
// grace of their stop (default runner.DefaultShutdownTimeout). While it
// runs, the scheduler of the instance in the plugin (a runner.Runner's) and
// the host scheduler are in the runner.Scheds ctx carries. When ctx asks
// for a check (runner.WithCheck), the instance runs with the check flag
// (it checks its settings and returns) and no coroutine starts.
func (p *proc) serveWithStartup(ctx context.Context, local entrypoints.Local, req wire.RunRequest) (err error) {
	if runner.Checking(ctx) {
		// paster check: the instance checks its settings and returns;
		// no coroutine starts.
		req.Check = true
		return p.run(ctx, req)
	}
	scheds := runner.SchedsFrom(ctx)
	if scheds != nil {
		defer scheds.Add(remoteSched{p: p, id: req.ID})()
	}
	cos := runner.StartupFrom(ctx)
	if len(cos) == 0 {
		return p.run(ctx, req)
	}
	local, _ = local.Unshadow() // as the runner reads its settings
	readyTimeout, err := local.Duration("ready_timeout", runner.DefaultReadyTimeout)
	if err != nil {
		return err
	}
	grace, err := local.Duration("shutdown_timeout", runner.DefaultShutdownTimeout)
	if err != nil {
		return err
	}
	core := p.h.coreFor()
	if runner.HasCore(ctx) {
		core = runner.CoreFrom(ctx)
	}
	sched := runner.NewSched(p.log)
	if scheds != nil {
		defer scheds.Add(sched)()
	}
	defer func() {
		if stopErr := sched.Stop(grace); stopErr != nil {
			err = errors.Join(err, stopErr)
		}
	}()
	for _, co := range cos {
		if err := sched.Add(co.Name, co.Run, co.Policy); err != nil {
			return err
		}
	}
	// The coroutines outlive ctx until Stop, as with runner.Runner: they
	// are stopped after the server has drained its requests.
	if err := sched.Start(runner.WithCore(context.WithoutCancel(ctx), core)); err != nil {
		return err
	}
	p.log.Debug("startup coroutines of a plugin server run in the host", "count", len(cos))
	if err := sched.WaitReady(ctx, readyTimeout); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("plugin %s: not serving: %w", p.name, err)
	}
	return p.run(ctx, req)
}

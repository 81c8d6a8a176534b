package builtin

import (
	"errors"

	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/runner"
	"github.com/paster-dev/paster/runner/natscore"
)

// memoryCoreFactory is egg:paster#memory: the in-memory Core of one process
// (runner.CoreOptionsFromLocal's keys; any other key is an error), the
// default when a server section names no core.
func memoryCoreFactory(_ map[string]string, local entrypoints.Local) (entrypoints.Core, error) {
	if err := runner.UnknownKey(local, "the memory core", runner.CoreKeys); err != nil {
		return nil, err
	}
	opts, err := runner.CoreOptionsFromLocal(local)
	if err != nil {
		return nil, err
	}
	opts.Logger = logger().Named("core")
	return runner.NewCore(opts), nil
}

// natsCoreFactory is egg:paster#nats: the Core shared by several paster
// nodes over NATS (natscore.OptionsFromLocal's keys). It connects, so a
// NATS server that cannot be reached fails the load naming the url key;
// with embedded = true it only validates, and the nats-server starts (binds
// listen) when paster serve starts the Core (runner.CoreStarter), so that
// paster check binds nothing.
func natsCoreFactory(_ map[string]string, local entrypoints.Local) (entrypoints.Core, error) {
	o, err := natscore.OptionsFromLocal(local)
	if err != nil {
		return nil, err
	}
	o.Core.Logger = logger().Named("core")
	c := natscore.Prepare(o)
	if o.Embedded != nil {
		return c, nil
	}
	if err := c.Start(); err != nil {
		c.Close()
		key := "url"
		if _, set := local.Lookup("core_max_value"); set && errors.Is(err, natscore.ErrServerMaxPayload) {
			key = "core_max_value"
		}
		return nil, local.Errorf(key, "%v", err)
	}
	return c, nil
}

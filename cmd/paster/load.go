package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/plugins"
	"github.com/paster-dev/paster/runner"

	// The built-in dist "paster" (urlmap, static, http, ...).
	_ "github.com/paster-dev/paster/runner/builtin"
)

// pluginStopTimeout bounds how long stopping the plugin processes may take
// once serving has ended.
const pluginStopTimeout = 10 * time.Second

// composition is a loaded configuration: the server, the app it serves, the
// startup coroutines collected while loading, the plugin processes the
// loading started, and the one Core of the process.
type composition struct {
	session *entrypoints.Session
	host    *plugins.Host
	server  entrypoints.Server
	app     http.Handler
	startup []runner.StartupCoroutine
	// core is the host's Core: made from the server section's keys
	// (runner.CoreOptionsFromLocal), served to every plugin process and
	// handed to the server runner in its context, so that a waiter in one
	// plugin is woken by a signal from another plugin or from the host.
	core *runner.LocalCore
}

// loadComposition loads the server section first and then the app, as
// PasteScript does, both with vars as global conf and relative to the
// current directory. On error, plugins started so far are stopped.
func loadComposition(cfg configArg, appName, serverName string, vars map[string]string, pluginDirs []string, logger hclog.Logger) (*composition, error) {
	base, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	host := plugins.NewHost(plugins.HostOptions{Logger: logger, PluginDirs: pluginDirs})
	comp := &composition{
		host:    host,
		session: &entrypoints.Session{Resolver: host, Logger: logger.Named("loader")},
	}
	if err := comp.load(cfg, appName, serverName, vars, base); err != nil {
		comp.Close(context.Background())
		return nil, err
	}
	return comp, nil
}

func (c *composition) load(cfg configArg, appName, serverName string, vars map[string]string, base string) error {
	var err error
	if c.server, err = c.session.LoadServer(cfg.target(cfg.pick(serverName)), base, vars); err != nil {
		return err
	}
	opts, err := runner.CoreOptionsFromLocal(serverLocal(c.session))
	if err != nil {
		return err
	}
	opts.Logger = c.session.Logger.ResetNamed("core")
	c.core = runner.NewCore(opts)
	c.host.SetCore(c.core)
	if c.app, err = c.session.LoadApp(cfg.target(cfg.pick(appName)), base, vars); err != nil {
		return err
	}
	for _, co := range c.session.Coroutines {
		policy, err := runner.PolicyFromLocal(co.Local)
		if err != nil {
			return fmt.Errorf("startup coroutine %s (%s): %w", co.Name, co.Origin, err)
		}
		c.startup = append(c.startup, runner.StartupCoroutine{Name: co.Name, Run: co.Run, Policy: policy})
	}
	return nil
}

// serverLocal returns the local configuration of the server section
// LoadServer loaded (the session's first tree). Its keys carry the
// section's location, as the tree does not keep each key's line.
func serverLocal(s *entrypoints.Session) entrypoints.Local {
	var local entrypoints.Local
	if len(s.Root) == 0 {
		return local
	}
	n := s.Root[0]
	at := entrypoints.Location{File: n.File, Line: n.Line, Section: n.Section}
	for _, kv := range n.Local {
		local = local.With(kv.Key, kv.Value, at)
	}
	return local
}

// Serve runs the server with the app until ctx ends. The startup coroutines
// and the host's Core travel in the context to whichever server runner the
// INI file names (runner.Runner uses both; a plugin's server runner gets the
// Core through the plugin and its startup coroutines run on a scheduler in
// this process, see package plugins).
func (c *composition) Serve(ctx context.Context) error {
	ctx = runner.WithCore(ctx, c.core)
	return c.server(runner.WithStartup(ctx, c.startup...), c.app)
}

// Close stops every plugin process the composition started, after their
// requests have ended, and then closes the Core.
func (c *composition) Close(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, pluginStopTimeout)
	defer cancel()
	err := c.host.Close(ctx)
	if c.core != nil {
		c.core.Close()
	}
	return err
}

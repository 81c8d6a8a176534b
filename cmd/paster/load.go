package main

import (
	"context"
	"fmt"
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

// composition is a configuration loaded the way paster serve loads a
// generation, for paster check: every factory called, every plugin started,
// nothing bound and no coroutine started.
type composition struct {
	session *entrypoints.Session
	host    *plugins.Host
}

// loadComposition loads the server section first and then the app, as
// PasteScript does, both with vars as global conf and relative to the
// current directory, and checks the startup coroutines' policies. On error,
// plugins started so far are stopped.
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
	if _, err := c.session.LoadServer(cfg.target(cfg.pick(serverName)), base, vars); err != nil {
		return err
	}
	if _, err := runner.CoreOptionsFromLocal(serverLocal(c.session)); err != nil {
		return err
	}
	if _, err := c.session.LoadApp(cfg.target(cfg.pick(appName)), base, vars); err != nil {
		return err
	}
	_, err := startupCoroutines(c.session)
	return err
}

// startupCoroutines returns the coroutines session collected (INI-registered
// and app-declared) with their supervision policies; a bad policy key is an
// error naming the coroutine and where it was written.
func startupCoroutines(session *entrypoints.Session) ([]runner.StartupCoroutine, error) {
	var out []runner.StartupCoroutine
	for _, co := range session.Coroutines {
		policy, err := runner.PolicyFromLocal(co.Local)
		if err != nil {
			return nil, fmt.Errorf("startup coroutine %s (%s): %w", co.Name, co.Origin, err)
		}
		out = append(out, runner.StartupCoroutine{Name: co.Name, Run: co.Run, Policy: policy})
	}
	return out, nil
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

// Close stops every plugin process the composition started.
func (c *composition) Close(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, pluginStopTimeout)
	defer cancel()
	return c.host.Close(ctx)
}

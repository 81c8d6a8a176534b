package pastercmd

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

// composition is a configuration loaded the way paster serve loads a
// generation, for paster check: every factory called, every plugin started,
// nothing bound and no coroutine started.
type composition struct {
	session *entrypoints.Session
	host    *plugins.Host
	server  entrypoints.Server
	app     http.Handler
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
	srv, err := c.session.LoadServer(cfg.target(cfg.pick(serverName)), base, vars)
	if err != nil {
		return err
	}
	local := serverLocal(c.session)
	if _, err := readServerSettings(local); err != nil {
		return err
	}
	if _, err := runner.CoreOptionsFromLocal(local); err != nil {
		return err
	}
	app, err := c.session.LoadApp(cfg.target(cfg.pick(appName)), base, vars)
	if err != nil {
		return err
	}
	if _, err := startupCoroutines(c.session); err != nil {
		return err
	}
	c.server, c.app = srv, app
	return nil
}

// makeCore makes the Core a server section names with its core key (spec),
// or without one the in-memory Core configured by the section's own keys
// (runner.CoreOptionsFromLocal: sched_default_timeout, pubsub_retain_count,
// pubsub_retain_age). A factory that makes something other than a
// runner.ManagedCore is an error naming the core key.
func makeCore(spec *entrypoints.CoreSpec, local entrypoints.Local, logger hclog.Logger) (runner.ManagedCore, error) {
	if spec == nil {
		opts, err := runner.CoreOptionsFromLocal(local)
		if err != nil {
			return nil, err
		}
		opts.Logger = logger.Named("core")
		return runner.NewCore(opts), nil
	}
	made, err := spec.Make()
	if err != nil {
		return nil, err
	}
	core, ok := made.(runner.ManagedCore)
	if !ok {
		made.Close()
		return nil, fmt.Errorf("%s: core = %s: factory %s made a %T, which is not a runner.Core", spec.Origin, spec.Name, spec.EntryPoint, made)
	}
	logger.Info("core", "name", spec.Name, "factory", spec.EntryPoint)
	return core, nil
}

// serverSettings are the keys of a server section that paster serve reads
// itself, whatever server the section names.
type serverSettings struct {
	// grace is shutdown_timeout, which bounds the drain of a generation.
	grace time.Duration
	// readyTimeout is ready_timeout, which bounds the wait for a
	// generation's required coroutines.
	readyTimeout time.Duration
	// addr is the address the section asks the http server for (host,
	// port; host:port in host wins), read as the http server reads it, or
	// "" when they are not valid http server settings.
	addr string
}

// readServerSettings reads serverSettings from a server section. A bad
// shutdown_timeout or ready_timeout is an error naming the file, line,
// section and key; a bad host or port only leaves addr empty (the server
// reports it).
func readServerSettings(local entrypoints.Local) (serverSettings, error) {
	var st serverSettings
	var err error
	if st.grace, err = local.Duration("shutdown_timeout", defaultGrace); err != nil {
		return st, err
	}
	if st.readyTimeout, err = local.Duration("ready_timeout", defaultReadyTimeout); err != nil {
		return st, err
	}
	if cfg, err := runner.ParseHTTPConfig(local); err == nil {
		st.addr = cfg.Addr
	}
	return st, nil
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
// LoadServer loaded (the session's first tree), each key with where it was
// written, and with the keys a global hides set to the global's value, as
// the server runners read them (runner.Unshadow, which logs them).
func serverLocal(s *entrypoints.Session) entrypoints.Local {
	if len(s.Root) == 0 {
		return entrypoints.Local{}
	}
	local, _ := s.Root[0].Conf().Unshadow()
	return local
}

// Close stops every plugin process the composition started.
func (c *composition) Close(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, pluginStopTimeout)
	defer cancel()
	return c.host.Close(ctx)
}

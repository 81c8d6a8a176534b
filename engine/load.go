package engine

import (
	"crypto/sha256"
	"fmt"
	"os"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/runner"

	// The built-in dist "paster" (urlmap, static, http, ...).
	_ "github.com/paster-dev/paster/runner/builtin"
)

// PluginStopTimeout bounds how long stopping the plugin processes may take
// once serving has ended.
const PluginStopTimeout = 10 * time.Second

// coreKey says what a generation asks of its Core: the factory and its
// keys, or without a core key the in-memory Core's keys of the server
// section. Two generations with the same key want the same Core.
func coreKey(spec *entrypoints.CoreSpec, local entrypoints.Local) string {
	if spec == nil {
		key := "memory"
		for _, k := range runner.CoreKeys {
			key += fmt.Sprintf(" %s=%q", k, local.Get(k))
		}
		return key
	}
	return fmt.Sprintf("%s %v", spec.EntryPoint, spec.Local.Map())
}

// makeCore makes the Core a server section names with its core key (spec),
// or without one the in-memory Core configured by the section's own keys
// (runner.CoreOptionsFromLocal: runner.CoreKeys), and with start starts it if it is a
// runner.CoreStarter (check does not: starting may bind). A factory that
// makes something other than a runner.ManagedCore is an error naming the
// core key; a Start error names the core section.
func makeCore(spec *entrypoints.CoreSpec, local entrypoints.Local, logger hclog.Logger, start bool) (runner.ManagedCore, error) {
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
	if s, ok := core.(runner.CoreStarter); ok && start {
		if err := s.Start(); err != nil {
			core.Close()
			return nil, fmt.Errorf("%s: core = %s: %w", spec.Origin, spec.Name, err)
		}
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
	// files are the files the http server's settings read (certificate,
	// key, CA: runner.TLSConfig.Files), nil when they are not valid.
	files []string
	// binds are the sockets the http server's settings ask for (addr,
	// and redirect_http's), which are bound before privileges are
	// dropped.
	binds []bind
}

// bind is a socket a server will ask the ListenerPool for.
type bind struct {
	addr string
	opt  runner.ListenOptions
}

// readServerSettings reads serverSettings from a server section. A bad
// shutdown_timeout or ready_timeout is an error naming the file, line,
// section and key; a bad host or port only leaves addr empty (the server
// reports it).
func readServerSettings(local entrypoints.Local) (serverSettings, error) {
	var st serverSettings
	var err error
	if st.grace, err = runner.Timeout(local, "shutdown_timeout", defaultGrace); err != nil {
		return st, err
	}
	if st.readyTimeout, err = runner.Timeout(local, "ready_timeout", defaultReadyTimeout); err != nil {
		return st, err
	}
	if cfg, err := runner.ParseHTTPConfig(local); err == nil {
		st.addr = cfg.Addr
		st.files = cfg.TLS.Files()
		st.binds = []bind{{cfg.Addr, runner.ListenOptions{SocketMode: cfg.SocketMode}}}
		if cfg.RedirectHTTP != "" {
			st.binds = append(st.binds, bind{addr: cfg.RedirectHTTP})
		}
	}
	return st, nil
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

// fileSum returns the SHA-256 of path's content in hex, or the error that
// kept it from being read.
func fileSum(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("%x", sha256.Sum256(b))
}

// dropPrivileges makes the process run as Config.User, once, when the first
// generation has loaded its server section: the sockets the section asks
// for (binds) are bound first, into the ListenerPool where the server
// finds them, so that a port below 1024 or a unix socket in a directory
// only root may write still works; the unix socket files bound are given
// to the user, who removes them at shutdown. Nothing else of the
// configuration has run as root but the server section's factory (and a
// plugin process it needs, which starts as the user): the core, the apps,
// filters and coroutines are made after the drop. A server that binds on
// its own (not through runner.HTTPServer) binds after the drop. A bind or
// a drop that fails is an error; the process does not serve as root.
func (m *Engine) dropPrivileges(g *generation, log hclog.Logger) error {
	u := m.cfg.User
	if u == nil || m.dropped {
		return nil
	}
	for _, b := range g.binds {
		ln, err := m.listeners.Listen(b.addr, b.opt)
		if err != nil {
			return fmt.Errorf("binding before running as %s: %w", u.Name, err)
		}
		ln.Close() // the socket stays in the pool for the server
	}
	if len(g.binds) == 0 {
		log.Warn("the server section names no address paster can bind before dropping privileges; the server binds as " + u.Name)
	}
	uid := -1
	if u.SetUID {
		uid = int(u.UID)
	}
	for _, f := range m.listeners.SocketFiles() {
		if err := os.Lchown(f, uid, int(u.GID)); err != nil {
			return fmt.Errorf("giving the socket %s to %s: %w", f, u.Name, err)
		}
	}
	if err := u.Drop(); err != nil {
		return fmt.Errorf("running as %s: %w", u.Name, err)
	}
	m.dropped = true
	log.Info("privileges dropped", "user", u.Name, "uid", os.Getuid(), "gid", os.Getgid())
	return nil
}

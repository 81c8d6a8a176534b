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
// (runner.CoreOptionsFromLocal: sched_default_timeout, pubsub_retain_count,
// pubsub_retain_age), and with start starts it if it is a
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

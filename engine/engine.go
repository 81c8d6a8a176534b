package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/plugins"
	"github.com/paster-dev/paster/privilege"
	"github.com/paster-dev/paster/runner"
	"github.com/paster-dev/paster/runner/observe"
)

// Defaults for a generation when its server section does not say.
const (
	defaultGrace        = runner.DefaultShutdownTimeout
	defaultReadyTimeout = runner.DefaultReadyTimeout
	// bindTimeout bounds how long a new server may take to bind before a
	// reload gives up on it.
	bindTimeout = 30 * time.Second
	// detachTimeout bounds how long an old server keeps connections that
	// were handed to it but have not sent their request yet.
	detachTimeout = 2 * time.Second
)

// generation is one load of the configuration.
type generation struct {
	id      int
	session *entrypoints.Session
	server  entrypoints.Server
	app     http.Handler
	core    *genCore
	sched   *runner.Sched
	mount   *runner.Mount
	// serverScope owns the plugin instances the server section made
	// (the server, a server runner's when it starts, the section's
	// startup coroutines); scope those of the app, its filters and
	// coroutines. Both close when the generation has drained, except
	// serverScope while the generation's server serves a newer generation:
	// the serving closes it once that server has stopped.
	serverScope, scope *plugins.Scope

	serverKey    string        // what a server restart is decided on
	serverFiles  []string      // files the server's settings read (TLS)
	binds        []bind        // sockets the server will ask for
	addr         string        // host:port of the server section, "" if unknown
	grace        time.Duration // shutdown_timeout
	readyTimeout time.Duration
}

// genCore is a Core and how many generations use it. A reload that keeps
// the core's configuration (coreKey) hands the same genCore to the new
// generation, so parked waits, subscriptions and connections carry on
// untouched; one that changes it makes a new Core for the new generation.
// The Core is closed when the last generation using it is released (drained,
// discarded or shut down).
type genCore struct {
	core runner.ManagedCore
	key  string // coreKey
	gens int    // generations using it; guarded by Engine.mu
}

// closeObjects closes what the generation's factories made that implements
// io.Closer (entrypoints.Session.Close); call it once nothing of the
// generation serves.
func (g *generation) closeObjects(log hclog.Logger) {
	if err := g.session.Close(); err != nil {
		log.Warn("closing the generation's apps and filters", "generation", g.id, "error", err)
	}
}

// files returns what a reload watcher should watch for this generation:
// every INI file read, every plugin binary used and the files the server's
// settings read (its certificates).
func (g *generation) files() []string {
	return append(append(append([]string(nil), g.session.Files...), g.pluginPaths()...), g.serverFiles...)
}

// serving is a running server.
type serving struct {
	gen    int
	key    string
	cancel context.CancelFunc
	done   chan error // receives the server's return value once
	view   *runner.ListenerView
	err    error
	ended  bool
	// scope is the serverScope of the generation that started the server:
	// closed once the server has returned (Engine.forget).
	scope *plugins.Scope
}

// wait waits for the server to return, at most until ctx ends.
func (s *serving) wait(ctx context.Context) error {
	if s.ended {
		return s.err
	}
	select {
	case s.err = <-s.done:
		s.ended = true
		return s.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Engine runs the generations of one configuration: it serves the first,
// reloads on request, and drains and closes what a generation made once a
// newer one serves. New makes one; Run serves until its context ends.
type Engine struct {
	cfg       Config
	logger    hclog.Logger
	front     *runner.Front
	listeners *runner.ListenerPool
	pool      *plugins.Pool
	reg       *observe.Registry
	started   time.Time
	// scheds holds the schedulers of the running servers (a runner's
	// r.Sched, here or in a plugin) for the snapshot.
	scheds runner.Scheds

	// checking says that the Engine only checks (Check): a Core is made
	// but not started (runner.CoreStarter), so nothing is bound.
	checking bool

	// watchFiles, if set (Config.ReloadInterval), is told the files to
	// watch after every load.
	watchFiles func([]string)

	mu       sync.Mutex // guards what snapshot reads
	cur      *generation
	core     runner.ManagedCore // the current generation's Core
	draining map[int]bool
	reloads  observe.Reloads
	nextID   int
	stopping bool

	srv *serving
	// dropped says that the process runs as Config.User now.
	dropped bool
	drains  sync.WaitGroup
}

// Config is what an Engine loads and how.
type Config struct {
	// ConfigURI names the configuration in logs (config:FILE).
	ConfigURI string
	// ServerURI and AppURI load the server section and the app
	// (config:FILE#NAME, or any URI the loader takes).
	ServerURI, AppURI string
	// AppName names the app in the metrics (egg:paster#metrics).
	AppName string
	// Vars is the global conf the loader is given (var=value arguments).
	Vars map[string]string
	// Base is the directory relative paths are resolved against; "" is
	// the current directory.
	Base string
	// PluginDirs are searched for plugin binaries before the plugin path.
	PluginDirs []string
	// Logger receives the engine's log lines; nil is hclog.Default().
	Logger hclog.Logger
	// ReloadInterval, when positive, is how often Run looks at the INI
	// files read and the plugin binaries started, and reloads once a
	// change has settled (paster serve --reload).
	ReloadInterval time.Duration
	// OnServing, if set, is called once the first generation serves.
	OnServing func()
	// OnReloading and OnReloaded, if set, are called when a reload
	// starts and when it has ended, with its error (nil when the new
	// generation serves; otherwise the previous one still does). paster
	// serve tells systemd with them (RELOADING=1, READY=1).
	OnReloading func()
	OnReloaded  func(error)
	// User, if set, is who the process runs as once the first
	// generation's server section is loaded and its sockets bound
	// (paster serve --user/--group): see dropPrivileges. Plugin
	// processes start as that user too.
	User *privilege.User
	// Activated are listening sockets bound by someone else, by name:
	// those systemd passed (socket activation, LISTEN_FDS). The servers
	// take them instead of binding (runner.ListenerPool.Adopt says which
	// addresses match); they are closed when Run ends.
	Activated map[string][]net.Listener
}

// New returns an Engine for cfg. It loads nothing yet: Run does. The error
// is that of finding the current directory when cfg.Base is "".
func New(cfg Config) (*Engine, error) {
	if cfg.Base == "" {
		base, err := os.Getwd()
		if err != nil {
			return nil, err
		}
		cfg.Base = base
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.Default()
	}
	if cfg.AppName == "" {
		cfg.AppName = "main"
	}
	m := &Engine{
		cfg: cfg, logger: cfg.Logger,
		front:     runner.NewFront(nil),
		listeners: runner.NewListenerPool(),
		reg:       observe.New(),
		draining:  map[int]bool{},
	}
	m.listeners.Adopt(cfg.Activated)
	m.reg.SetSource(m.snapshot)
	return m, nil
}

// snapshot is the observe.Source of the process.
func (m *Engine) snapshot() observe.Snapshot {
	m.mu.Lock()
	cur, core := m.cur, m.core
	s := observe.Snapshot{Reloads: m.reloads, Started: m.started, Stopping: m.stopping}
	for id := range m.draining {
		s.Draining = append(s.Draining, id)
	}
	m.mu.Unlock()
	sort.Ints(s.Draining)
	if cur != nil {
		s.Generation = cur.id
		s.Coroutines = cur.sched.Status()
	}
	s.ServerCoroutines = m.scheds.Status()
	if core != nil {
		s.Core, s.HasCore = core.Stats(), true
	}
	if m.pool != nil {
		s.Plugins = pluginInfos(m.pool)
	}
	return s
}

// Run loads the first generation, serves it, and then reloads on each value
// from reload (and on each settled change of a watched file with
// Config.ReloadInterval) and shuts down when ctx ends. With a watcher, a
// first load that fails is logged and tried again on each reload, as
// PasteScript's reloader waits for the file to be fixed. It returns the
// error that kept the first generation from serving, the error of a server
// that stopped by itself, or the errors of an unclean shutdown. An Engine
// runs once.
func (m *Engine) Run(ctx context.Context, reload <-chan struct{}) (err error) {
	var changed <-chan struct{}
	if m.cfg.ReloadInterval > 0 {
		w := newWatcher(m.cfg.ReloadInterval, m.logger)
		m.watchFiles = w.set
		// The watcher is Run's: it ends, and is waited for, before Run
		// returns (its send never blocks).
		wctx, cancel := context.WithCancel(ctx)
		watched := make(chan struct{})
		go func() {
			defer close(watched)
			w.run(wctx)
		}()
		defer func() {
			cancel()
			<-watched
		}()
		changed = w.reload
	}
	g, files, err := m.build(ctx)
	for err != nil {
		if m.watchFiles == nil {
			m.closeAll()
			return err
		}
		// --reload: as PasteScript's reloader does, report the error and
		// try again once a file read changes. The files are stamped before
		// the error is told: a fix made as soon as it is read is a change.
		m.watchFiles(files)
		m.logger.Error("loading failed; waiting for a change to the files read", "error", err, "files", strings.Join(files, ", "))
		select {
		case <-ctx.Done():
			m.closeAll()
			return nil
		case <-reload:
		case <-changed:
		}
		g, files, err = m.build(ctx)
	}
	defer func() { err = errors.Join(err, m.shutdown()) }()
	m.front.Swap(g.mount)
	m.setCurrent(g)
	m.mu.Lock()
	m.started = time.Now()
	m.mu.Unlock()
	if m.watchFiles != nil {
		m.watchFiles(g.files())
	}
	srv, err := m.startServer(g, true)
	if err != nil {
		return err
	}
	m.srv = srv
	if idle := m.listeners.IdleAdopted(); len(idle) > 0 {
		m.logger.Warn("systemd passed sockets no server section uses (host = systemd:NAME, or the socket's address)", "sockets", strings.Join(idle, ", "))
	}
	m.logger.Info("serving", "pid", os.Getpid(), "config", m.cfg.ConfigURI, "generation", g.id)
	if m.cfg.OnServing != nil {
		m.cfg.OnServing()
	}

	for {
		select {
		case <-ctx.Done():
			return nil
		case <-reload:
			m.reload(ctx)
		case <-changed:
			m.reload(ctx)
		case err := <-m.srv.done:
			m.srv.ended, m.srv.err = true, err
			if err == nil {
				err = errors.New("server runner returned without being asked to stop")
			}
			return fmt.Errorf("server stopped: %w", err)
		}
	}
}

// build loads a new generation and starts it: its coroutines are started
// and the required ones ready. On error everything it made is released and
// the files it read are returned for watching.
func (m *Engine) build(ctx context.Context) (*generation, []string, error) {
	g, err := m.load()
	if err != nil {
		return nil, g.files(), err
	}
	if err := g.sched.Start(runner.WithCore(context.Background(), g.core.core)); err != nil {
		return nil, m.discard(g), err
	}
	if err := g.sched.WaitReady(ctx, g.readyTimeout); err != nil {
		return nil, m.discard(g), fmt.Errorf("generation %d not started: %w", g.id, err)
	}
	app := observe.Instrument(m.reg, m.cfg.AppName, g.app)
	g.mount = runner.NewMount(app, g.core.core, nil)
	return g, nil, nil
}

// load loads a new generation without starting anything: the server
// section first, then the app, as PasteScript does, both with Config.Vars
// as global conf; every factory is called, every server setting and
// coroutine policy read. Nothing is bound. On error everything it made is
// released and the returned generation only tells the files read.
func (m *Engine) load() (*generation, error) {
	m.mu.Lock()
	m.nextID++
	id := m.nextID
	m.mu.Unlock()
	log := m.logger.With("generation", id)

	g := &generation{id: id, grace: defaultGrace, readyTimeout: defaultReadyTimeout}
	session := &entrypoints.Session{Logger: log.Named("loader")}
	g.session = session
	if m.pool == nil {
		m.pool = plugins.NewPool(plugins.HostOptions{Logger: m.logger, PluginDirs: m.cfg.PluginDirs, User: m.cfg.User})
	}
	g.serverScope, g.scope = m.pool.Scope(id), m.pool.Scope(id)
	session.Resolver = g.serverScope

	fail := func(err error) (*generation, error) {
		m.discard(g)
		return g, err
	}
	var err error
	if g.server, err = session.LoadServer(m.cfg.ServerURI, m.cfg.Base, m.cfg.Vars); err != nil {
		return fail(err)
	}
	session.Resolver = g.scope
	local, err := m.describeServer(g)
	if err != nil {
		return fail(err)
	}
	if err := m.dropPrivileges(g, log); err != nil {
		return fail(err)
	}
	if err := m.takeCore(g, local, log); err != nil {
		return fail(err)
	}
	if g.app, err = session.LoadApp(m.cfg.AppURI, m.cfg.Base, m.cfg.Vars); err != nil {
		return fail(err)
	}
	// The startup coroutines the session collected (INI-registered and
	// app-declared), each with its supervision policy; a bad policy key is
	// an error naming the coroutine and where it was written.
	g.sched = runner.NewSched(log.Named("sched"))
	for _, co := range session.Coroutines {
		policy, err := runner.PolicyFromLocal(co.Local)
		if err != nil {
			return fail(fmt.Errorf("startup coroutine %s (%s): %w", co.Name, co.Origin, err))
		}
		if err := g.sched.Add(co.Name, co.Run, policy); err != nil {
			return fail(err)
		}
	}
	return g, nil
}

// discard releases what generation g made, which never served: its
// coroutines are stopped, its plugin instances and processes released, and
// its Core, if g made one, closed. It returns the files g read, for
// watching.
func (m *Engine) discard(g *generation) []string {
	files := g.files()
	if g.sched != nil {
		g.sched.Stop(g.grace)
	}
	g.closeObjects(m.logger)
	if err := g.releasePlugins(false); err != nil {
		m.logger.Warn("stopping the plugins of a generation that did not serve", "generation", g.id, "error", err)
	}
	m.unused(g)
	return files
}

// takeCore gives generation g its Core: the current generation's when the
// core's configuration (coreKey of g's server section) is unchanged, else a
// new one (makeCore), which the plugin processes are served from now on (a
// generation that does not serve in the end gives them back the current
// one: unused).
func (m *Engine) takeCore(g *generation, local entrypoints.Local, log hclog.Logger) error {
	key := coreKey(g.session.Core, local)
	if m.cur != nil && m.cur.core.key == key {
		m.mu.Lock()
		m.cur.core.gens++
		m.mu.Unlock()
		g.core = m.cur.core
		return nil
	}
	if m.cur != nil {
		// The keys' values are not logged: a URL may carry a password.
		log.Info("the core's configuration changed; the new generation gets a new Core, and the old one is closed once the generations using it have drained")
	}
	core, err := makeCore(g.session.Core, local, m.logger, !m.checking)
	if err != nil {
		return err
	}
	g.core = &genCore{core: core, key: key, gens: 1}
	m.pool.SetCore(core)
	return nil
}

// releaseCore drops generation g's use of its Core and closes the Core if
// no generation uses it any more.
func (m *Engine) releaseCore(g *generation) {
	if g.core == nil {
		return
	}
	m.mu.Lock()
	g.core.gens--
	last := g.core.gens == 0
	m.mu.Unlock()
	if last {
		if err := g.core.core.Close(); err != nil {
			m.logger.Warn("closing the Core", "generation", g.id, "error", err)
		}
	}
}

// describeServer reads what the generation needs from its server section:
// the key a server restart is decided on, its address, shutdown_timeout,
// ready_timeout and the files its settings read. The content of those
// files is part of the key, so a reload re-reads a renewed certificate by
// starting a new server beside the old one (no connection is lost), even
// when the INI file is unchanged.
func (m *Engine) describeServer(g *generation) (entrypoints.Local, error) {
	roots := g.session.Root
	if len(roots) == 0 {
		return entrypoints.Local{}, errors.New("no server was loaded")
	}
	node, local := roots[0], serverLocal(g.session)
	var keyed []entrypoints.KV
	for _, kv := range node.Local {
		if kv.Key != "startup" && kv.Key != "ready_timeout" {
			keyed = append(keyed, kv)
		}
	}
	st, err := readServerSettings(local)
	if err != nil {
		return local, err
	}
	g.grace, g.readyTimeout, g.addr, g.serverFiles, g.binds = st.grace, st.readyTimeout, st.addr, st.files, st.binds

	// A server in a plugin: the binary's checksum is part of the key, so a
	// rebuilt binary restarts the server.
	var binaries []string
	for _, b := range g.serverScope.Binaries() {
		if node.Binary != "" && b.Path == node.Binary {
			binaries = append(binaries, fmt.Sprintf("%s=%x", b.Path, b.Sum))
		}
	}
	var files []string
	for _, f := range st.files {
		files = append(files, f+"="+fileSum(f))
	}
	// The server runs with the generation's Core in its context (its own
	// coroutines use it): a new Core takes a new server.
	key, _ := json.Marshal(struct {
		EntryPoint string
		Global     map[string]string
		Local      []entrypoints.KV
		Binaries   []string
		Core       string
		Files      []string
	}{node.EntryPoint, node.Global, keyed, binaries, coreKey(g.session.Core, local), files})
	g.serverKey = string(key)
	return local, nil
}

// startServer runs g's server on the Front and returns once it accepts: a
// server built on runner's HTTPServer reports that with runner.Ready (from
// a plugin process too) and takes its listener from the pool (which the
// host lends to a plugin process; see package plugins). A server that does neither is taken to accept once its address
// answers, which is only tried when no other server listens there (alone).
// An error means the server did not start: it returned, or it was stopped
// after bindTimeout.
func (m *Engine) startServer(g *generation, alone bool) (*serving, error) {
	ctx, cancel := context.WithCancel(context.Background())
	view := m.listeners.View()
	ready := make(chan struct{})
	var once sync.Once
	sctx := runner.WithScheds(runner.WithListeners(runner.WithCore(ctx, g.core.core), view), &m.scheds)
	sctx = runner.WithReadyFunc(sctx, func() { once.Do(func() { close(ready) }) })
	s := &serving{gen: g.id, key: g.serverKey, cancel: cancel, done: make(chan error, 1), view: view, scope: g.serverScope}
	go func() { s.done <- g.server(sctx, m.front) }()

	var answered <-chan struct{}
	if alone && g.addr != "" {
		answered = m.probe(ctx, g.addr)
	}
	timer := time.NewTimer(bindTimeout)
	defer timer.Stop()
	select {
	case <-view.Bound():
	case <-ready:
	case <-answered:
	case err := <-s.done:
		cancel()
		s.ended, s.err = true, err
		if err == nil {
			err = errors.New("server runner returned before serving")
		}
		return nil, fmt.Errorf("generation %d: server did not start: %w", g.id, err)
	case <-timer.C:
		cancel()
		s.wait(context.Background())
		return nil, fmt.Errorf("generation %d: server did not report listening within %s", g.id, bindTimeout)
	}
	return s, nil
}

// forget releases what server s made in plugin processes (its scope: its
// section's instances and a server runner's) once it has returned; a
// server that has not keeps them.
func (m *Engine) forget(s *serving) {
	if !s.ended {
		m.logger.Warn("a server that did not stop keeps its plugin instances", "generation", s.gen)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), PluginStopTimeout)
	defer cancel()
	if err := s.scope.Close(ctx); err != nil {
		m.logger.Warn("releasing a stopped server's plugin instances", "generation", s.gen, "error", err)
	}
}

// probe returns a channel closed once addr (host:port or unix:PATH) accepts
// connections, tried every 20ms until ctx ends. A systemd: address is not
// probed: the socket accepts whether a server serves it or not.
func (m *Engine) probe(ctx context.Context, addr string) <-chan struct{} {
	ch := make(chan struct{})
	network := "tcp"
	if path, ok := strings.CutPrefix(addr, runner.UnixPrefix); ok {
		network, addr = "unix", path
	} else if strings.HasPrefix(addr, runner.SystemdPrefix) {
		return ch
	}
	go func() {
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			if c, err := net.DialTimeout(network, addr, time.Second); err == nil {
				c.Close()
				close(ch)
				return
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return ch
}

func (m *Engine) setCurrent(g *generation) {
	m.mu.Lock()
	m.cur, m.core = g, g.core.core
	m.mu.Unlock()
}

// reload builds the next generation and swaps it in, or logs why not.
func (m *Engine) reload(ctx context.Context) {
	start := time.Now()
	m.logger.Info("reloading", "config", m.cfg.ConfigURI)
	if m.cfg.OnReloading != nil {
		m.cfg.OnReloading()
	}
	g, files, err := m.build(ctx)
	if err == nil {
		err = m.swap(g)
	}
	if m.cfg.OnReloaded != nil {
		defer m.cfg.OnReloaded(err)
	}
	m.mu.Lock()
	m.reloads.Total++
	m.reloads.Last = time.Now()
	m.reloads.LastOK = err == nil
	m.reloads.LastError = ""
	if err != nil {
		m.reloads.Failed++
		m.reloads.LastError = err.Error()
	}
	cur := m.cur
	m.mu.Unlock()
	if err != nil {
		m.logger.Error("reload failed; the previous generation keeps serving", "generation", cur.id, "error", err)
		if m.watchFiles != nil {
			m.watchFiles(append(files, cur.files()...))
		}
		return
	}
	m.logger.Info("reloaded", "generation", g.id, "took", time.Since(start).Round(time.Millisecond))
	if m.watchFiles != nil {
		m.watchFiles(g.files())
	}
}

// swap makes g current, restarting the server if its section changed, and
// starts draining the previous generation. On error g is stopped again and
// the previous generation is left serving.
func (m *Engine) swap(g *generation) error {
	old := m.cur
	oldSrv := m.srv
	if g.serverKey == oldSrv.key {
		m.front.Swap(g.mount)
		m.setCurrent(g)
		m.drain(old, nil, oldSrv.gen == old.id)
		return nil
	}
	// Wherever the old and the new server run, they share the socket
	// (the ListenerPool's, lent to plugin processes).
	m.logger.Info("server section changed; starting the new server beside the old one", "generation", g.id, "addr", g.addr)
	srv, err := m.startServer(g, false)
	if err != nil {
		m.abandon(g)
		return err
	}
	m.front.Swap(g.mount)
	m.setCurrent(g)
	m.srv = srv
	m.drain(old, oldSrv, false)
	return nil
}

// abandon stops a generation that never served.
func (m *Engine) abandon(g *generation) {
	g.mount.Cut()
	g.sched.Stop(g.grace)
	g.closeObjects(m.logger)
	if err := g.releasePlugins(false); err != nil {
		m.logger.Warn("stopping the plugins of a generation that did not serve", "generation", g.id, "error", err)
	}
	m.unused(g)
}

// unused releases the Core of generation g, which never served, and serves
// the plugin processes the current generation's Core again (takeCore may
// have given them g's).
func (m *Engine) unused(g *generation) {
	if m.cur != nil && m.pool != nil {
		m.pool.SetCore(m.cur.core.core)
	}
	m.releaseCore(g)
}

// drain drains generation g in the background (see the file comment); srv,
// if not nil, is the server that stopped serving g: it is shut down first
// unless it has returned already, and its plugin instances are destroyed
// once it has (forget). keepServer says that g's server serves on (its
// instances are not destroyed).
func (m *Engine) drain(g *generation, srv *serving, keepServer bool) {
	m.mu.Lock()
	m.draining[g.id] = true
	m.mu.Unlock()
	m.drains.Add(1)
	go func() {
		defer m.drains.Done()
		log := m.logger.With("generation", g.id)
		start := time.Now()
		if srv != nil && !srv.ended {
			// Hand the socket over to the new server before the old one
			// shuts down, so no connection reaches a closing server.
			if !srv.view.Detach(detachTimeout) {
				log.Warn("connections handed to the old server sent nothing yet; shutting it down anyway", "waited", detachTimeout)
			}
			srv.cancel()
		}
		left := g.mount.Drain(g.grace)
		if srv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), g.grace+time.Second)
			if err := srv.wait(ctx); err != nil {
				log.Warn("old server's shutdown", "error", err)
			}
			cancel()
		}
		if err := g.sched.Stop(g.grace); err != nil {
			log.Warn("old generation's coroutines", "error", err)
		}
		g.closeObjects(log)
		if srv != nil {
			m.forget(srv)
		}
		if err := g.releasePlugins(keepServer); err != nil {
			log.Warn("stopping old plugin processes", "error", err)
		}
		m.releaseCore(g)
		if srv != nil {
			if pruned := m.listeners.Prune(); len(pruned) > 0 {
				log.Info("closed listening sockets no server uses", "addrs", strings.Join(pruned, ", "))
			}
		}
		m.mu.Lock()
		delete(m.draining, g.id)
		m.mu.Unlock()
		log.Info("generation drained", "took", time.Since(start).Round(time.Millisecond), "requests_cut", left)
	}()
}

// shutdown stops serving: parked waits of the current generation are
// answered at once, the server drains within shutdown_timeout, the
// coroutines stop, older generations finish draining, and every plugin
// process is stopped.
func (m *Engine) shutdown() error {
	g := m.cur
	m.mu.Lock()
	m.stopping = true
	m.mu.Unlock()
	m.logger.Info("shutting down", "generation", g.id, "shutdown_timeout", g.grace)
	var errs []error
	// Parked waits end now; requests are cancelled only if they outlast
	// the drain (Drain cuts them).
	g.mount.AnswerParked()
	if m.srv != nil {
		m.srv.cancel()
		ctx, cancel := context.WithTimeout(context.Background(), g.grace+2*time.Second)
		if err := m.srv.wait(ctx); err != nil {
			errs = append(errs, err)
		}
		cancel()
	}
	if left := g.mount.Drain(g.grace); left > 0 {
		errs = append(errs, fmt.Errorf("%d requests still running after shutdown_timeout", left))
	}
	if err := g.sched.Stop(g.grace); err != nil {
		errs = append(errs, err)
	}
	if err := g.session.Close(); err != nil {
		errs = append(errs, err)
	}
	m.drains.Wait()
	if m.srv != nil {
		m.forget(m.srv)
	}
	if err := g.releasePlugins(false); err != nil {
		errs = append(errs, err)
	}
	m.closeAll()
	m.releaseCore(g)
	return errors.Join(errs...)
}

// closeAll closes what lives for the whole process.
func (m *Engine) closeAll() {
	if m.pool != nil {
		ctx, cancel := context.WithTimeout(context.Background(), PluginStopTimeout)
		defer cancel()
		m.pool.Close(ctx)
	}
	m.listeners.Close()
}

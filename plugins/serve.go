package plugins

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"reflect"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/plugins/internal/transport"
	"github.com/paster-dev/paster/plugins/internal/wire"
	"github.com/paster-dev/paster/runner"
	"google.golang.org/grpc"
)

// Serve serves d to a paster host and returns when the host stops the
// plugin. It is all a plugin's main needs:
//
//	func main() { plugins.Serve(hello.Dist) }
//
// Handlers, coroutines and servers reach the host runner's Core with
// runner.CoreFrom(ctx) as they would in-process; each operation is a call
// to the host (about 0.15 ms), so keep them off hot paths.
//
// Logging: Serve installs an hclog JSON logger on stderr as hclog.Default
// (level from the host), so hclog.L() output arrives in the host's logger
// named after the dist, with its values printed as they would be in-process
// (a duration as 10s) and the host's timestamp. Anything else written to
// stdout or stderr is captured by the host too. The host relays at most
// [plugins] log_rate lines per second of it and cuts lines at 16 KiB.
//
// Serve exits the process (status 1) when the parent process goes away,
// even if it was killed, and when it is run by hand rather than by a host
// (it then prints how it is meant to be used).
//
// Processes the plugin starts do not outlive it (on Linux): the plugin is a
// child subreaper, so processes it started, directly or not, stay below it
// even after setsid or a double fork, and Serve kills them all with SIGKILL
// before it returns or exits. Orphans reparented to the plugin are reaped
// when they exit; children started with os/exec are left to their Wait.
func Serve(d *entrypoints.Dist) {
	level := hclog.LevelFromString(os.Getenv(wire.EnvLogLevel))
	if level == hclog.NoLevel {
		level = hclog.Info
	}
	log := typedLogger{hclog.New(&hclog.LoggerOptions{
		Level:      level,
		Output:     os.Stderr, // the real stderr: go-plugin swaps os.Stderr later
		JSONFormat: true,
	})}
	hclog.SetDefault(log)
	closeExeFD()
	if os.Getenv(wire.MagicCookieKey) == wire.MagicCookieValue {
		becomeSubreaper(log)
		// When the host dies, the host's Pdeathsig sends SIGTERM (which
		// can be caught, unlike SIGKILL, so that the plugin's own children
		// are killed first); watchParent is the portable complement.
		term := make(chan os.Signal, 1)
		signal.Notify(term, syscall.SIGTERM)
		go func() {
			<-term
			exitWithChildren(log, "terminated; exiting")
		}()
		// The parent as it is now, not when the goroutine runs: by then
		// the host may be gone, and the plugin reparented.
		go watchParent(log, os.Getppid())
	}
	if path := os.Getenv(EnvCPUProfile); path != "" {
		if stop, err := startCPUProfile(path); err != nil {
			log.Error("cannot write CPU profile", "path", path, "error", err)
		} else {
			defer stop()
		}
	}
	procsSpare.Store(busySpare)
	holdProcs(log) // for the process's life
	s := newSDK(d, log)
	s.lend = lendFromEnv(log)
	s.data = s.dataFromEnv(log)
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: handshake,
		VersionedPlugins: map[int]plugin.PluginSet{
			wire.ProtocolVersion: {wire.PluginName: &goPlugin{sdk: s}},
		},
		GRPCServer: func(opts []grpc.ServerOption) *grpc.Server {
			// Stream workers reuse goroutines whose stacks have already
			// grown: a fresh goroutine per request spends ~10% of the
			// plugin's CPU in stack copying.
			return grpc.NewServer(append(opts, grpc.MaxRecvMsgSize(wire.MaxMessage),
				grpc.NumStreamWorkers(uint32(4*runtime.GOMAXPROCS(0))))...)
		},
		Logger: log,
	})
	// The host stopped the plugin: nothing it started outlives it.
	killDescendants(log, 2*time.Second)
}

// exitWithChildren kills the processes the plugin started, logs msg and
// exits with status 1. The killing comes first: with the host gone, a write
// to stderr may end the process with SIGPIPE.
func exitWithChildren(log hclog.Logger, msg string, args ...any) {
	killDescendants(log, 2*time.Second)
	log.Error(msg, args...)
	os.Exit(1)
}

// EnvCPUProfile names a file the plugin writes a CPU profile to, from start
// until the host stops it (for finding where a plugin's time goes).
const EnvCPUProfile = "PASTER_PLUGIN_CPUPROFILE"

func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// closeExeFD closes the descriptor of its own binary the host executed the
// plugin from (see binaryCommand), so that processes the plugin starts do
// not inherit it, and forgets the variable for them.
func closeExeFD() {
	v, ok := os.LookupEnv(wire.EnvExeFD)
	if !ok {
		return
	}
	_ = os.Unsetenv(wire.EnvExeFD)
	if fd, err := strconv.Atoi(v); err == nil && fd > 2 {
		_ = os.NewFile(uintptr(fd), "plugin binary").Close()
	}
}

var handshake = plugin.HandshakeConfig{
	ProtocolVersion:  wire.ProtocolVersion,
	MagicCookieKey:   wire.MagicCookieKey,
	MagicCookieValue: wire.MagicCookieValue,
}

// watchParent exits when the process that started us, ppid, is gone, the
// portable complement of the host's Pdeathsig. On Linux it waits on a pidfd
// of the host (exitOf) and costs nothing until then; elsewhere, or where
// pidfds are not to be had, it looks for being reparented every
// parentPoll (each look wakes the idle process: five times a second, 29
// context switches a second of the hello plugin's threads idle, against
// none from watching a pidfd).
func watchParent(log hclog.Logger, ppid int) {
	if gone := exitOf(ppid); gone != nil {
		// The host may have gone before the pidfd was opened, and its PID
		// been reused since: reparented already means gone.
		if os.Getppid() == ppid {
			<-gone
		}
	} else {
		t := time.NewTicker(parentPoll)
		defer t.Stop()
		for os.Getppid() == ppid {
			<-t.C
		}
	}
	exitWithChildren(log, "host process is gone; exiting", "host_pid", ppid)
}

// parentPoll is how often watchParent looks for being reparented where it
// cannot wait on a pidfd.
const parentPoll = 200 * time.Millisecond

// goPlugin is the go-plugin glue for both sides: the SDK registers the
// Plugin service; the host gets a *pluginConn.
type goPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	sdk *sdk
}

func (p *goPlugin) GRPCServer(b *plugin.GRPCBroker, s *grpc.Server) error {
	p.sdk.broker = b
	p.sdk.register(s)
	return nil
}

func (p *goPlugin) GRPCClient(ctx context.Context, b *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return &pluginConn{done: ctx, broker: b, conn: c}, nil
}

// pluginConn is the host's handle on one running plugin process.
type pluginConn struct {
	done   context.Context // ends when the process exits
	broker *plugin.GRPCBroker
	conn   *grpc.ClientConn
}

// sdk is the plugin side: the dist and its instances.
type sdk struct {
	dist   *entrypoints.Dist
	log    hclog.Logger
	broker *plugin.GRPCBroker

	hostMu sync.Mutex
	host   *grpc.ClientConn // to the host service, dialled once in Init

	mu         sync.RWMutex
	handlers   map[uint64]http.Handler
	filters    map[uint64]entrypoints.Filter
	servers    map[uint64]entrypoints.Server
	runners    map[uint64]runnerInstance
	coroutines map[uint64]entrypoints.Coroutine
	startups   map[uint64]map[string]entrypoints.Coroutine

	scheds sync.Map // running server and runner instance ID -> *runner.Scheds
	// lend gives servers the host's listening sockets (nil: the host lends
	// none, and servers bind their own).
	lend *lendClient
	// data is the data plane to the host (nil: a host without one, which
	// sends requests and takes Core calls on gRPC).
	data *transport.Mux
}

type runnerInstance struct {
	run    entrypoints.ServerRunner
	global map[string]string
	local  entrypoints.Local
}

func newSDK(d *entrypoints.Dist, log hclog.Logger) *sdk {
	return &sdk{
		dist:       d,
		log:        log,
		handlers:   map[uint64]http.Handler{},
		filters:    map[uint64]entrypoints.Filter{},
		servers:    map[uint64]entrypoints.Server{},
		runners:    map[uint64]runnerInstance{},
		coroutines: map[uint64]entrypoints.Coroutine{},
		startups:   map[uint64]map[string]entrypoints.Coroutine{},
	}
}

func (s *sdk) register(g *grpc.Server) {
	g.RegisterService(&grpc.ServiceDesc{
		ServiceName: wire.PluginService,
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{
			wire.UnaryMethod("Describe", s.describe),
			wire.UnaryMethod("Init", s.init),
			wire.UnaryMethod("Create", s.create),
			wire.UnaryMethod("Destroy", s.destroy),
			wire.UnaryMethod("Status", s.status),
		},
		Streams: []grpc.StreamDesc{
			{StreamName: "HTTP", ServerStreams: true, ClientStreams: true, Handler: s.serveHTTP},
			{StreamName: "Run", ServerStreams: true, ClientStreams: true, Handler: s.run},
		},
	}, s)
}

func (s *sdk) describe(ctx context.Context, _ []byte) (any, error) {
	m := wire.Manifest{Name: s.dist.Name, Version: s.dist.Version, Entries: map[entrypoints.Protocol][]string{}, PID: os.Getpid(), DataPlane: s.data != nil}
	for _, g := range entrypoints.Groups() {
		if names := s.dist.Names(g.Protocol); g.Plugin && len(names) > 0 {
			m.Entries[g.Protocol] = names
		}
	}
	return m, nil
}

func (s *sdk) init(ctx context.Context, in []byte) (any, error) {
	var req wire.InitRequest
	if err := json.Unmarshal(in, &req); err != nil {
		return nil, err
	}
	conn, err := s.broker.DialWithOptions(req.Broker, grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(wire.MaxMessage)))
	if err != nil {
		return nil, fmt.Errorf("dialling the host service: %w", err)
	}
	s.hostMu.Lock()
	old := s.host
	s.host = conn
	s.hostMu.Unlock()
	if old != nil {
		old.Close()
	}
	return struct{}{}, nil
}

func (s *sdk) hostConn() (*grpc.ClientConn, error) {
	s.hostMu.Lock()
	defer s.hostMu.Unlock()
	if s.host == nil {
		return nil, errors.New("plugin not initialised by the host")
	}
	return s.host, nil
}

// app resolves a reference to a handler: an instance here, or a proxy to an
// app the host serves.
func (s *sdk) app(ref wire.AppRef) (http.Handler, error) {
	switch {
	case ref.Local != 0:
		s.mu.RLock()
		h := s.handlers[ref.Local]
		s.mu.RUnlock()
		if h == nil {
			return nil, fmt.Errorf("no app instance %d in this plugin", ref.Local)
		}
		return h, nil
	case ref.Host != 0:
		if s.data != nil {
			return &hostApp{open: s.data, ref: ref.Host, log: s.log}, nil
		}
		conn, err := s.hostConn()
		if err != nil {
			return nil, err
		}
		return &hostApp{open: transport.GRPC{Conn: conn, Method: wire.HostMethodHTTP}, ref: ref.Host, log: s.log}, nil
	}
	return nil, errors.New("no app given")
}

// hostApp is an app of the host (or of another plugin) seen from a plugin.
type hostApp struct {
	open transport.Opener
	ref  uint64
	log  hclog.Logger
}

func (h *hostApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, ok := r.Header[rejectedHeader]; ok {
		// Only ObserveRejected below may send it.
		r = r.Clone(r.Context())
		r.Header.Del(rejectedHeader)
	}
	err := transport.Forward(w, r, h.open, h.ref)
	switch {
	case err == nil:
	case errors.Is(err, transport.ErrNoResponse):
		if errors.Is(err, transport.ErrClientGone) {
			return // nothing failed, nobody to answer
		}
		h.log.Warn("calling host app failed", "ref", h.ref, "error", err)
		http.Error(w, "Bad Gateway", http.StatusBadGateway)
	default:
		panic(http.ErrAbortHandler)
	}
}

// rejectedHeader carries to the host the status of a request that a
// server in the plugin answered itself (runner.RejectObserver: 413, 431,
// 400). hostApp.ServeHTTP removes it from the requests it forwards, so
// that a client cannot send one.
const rejectedHeader = "Paster-Rejected"

// ObserveRejected tells the host app of a request the plugin's server
// answered itself with code, so that the host's metrics and access log
// count it as they do for an in-process server. The host answers at once
// (see observeRejects); a failure is logged at debug level.
func (h *hostApp) ObserveRejected(r *http.Request, code int) {
	r2 := r.Clone(r.Context())
	r2.Header = r.Header.Clone()
	r2.Header.Set(rejectedHeader, strconv.Itoa(code))
	r2.Body, r2.ContentLength, r2.TransferEncoding = http.NoBody, 0, nil
	if err := transport.Forward(discardWriter{}, r2, h.open, h.ref); err != nil {
		h.log.Debug("reporting a rejected request to the host failed", "code", code, "error", err)
	}
}

// discardWriter is a ResponseWriter for an answer nobody reads.
type discardWriter struct{}

func (discardWriter) Header() http.Header         { return http.Header{} }
func (discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (discardWriter) WriteHeader(int)             {}

// destroy drops instances the host no longer uses; a running server or
// coroutine among them was stopped by the host before. An app among them
// that implements io.Closer (a translogger's log file, say) is closed, once,
// unless an instance that stays is the same object; the errors of Close
// are returned joined.
func (s *sdk) destroy(_ context.Context, in []byte) (any, error) {
	var req wire.DestroyRequest
	if err := json.Unmarshal(in, &req); err != nil {
		return nil, err
	}
	s.mu.Lock()
	var closers []io.Closer
	for _, id := range req.IDs {
		if c, ok := s.handlers[id].(io.Closer); ok {
			closers = append(closers, c)
		}
		delete(s.handlers, id)
		delete(s.filters, id)
		delete(s.servers, id)
		delete(s.runners, id)
		delete(s.coroutines, id)
		delete(s.startups, id)
	}
	var toClose []io.Closer
	seen := map[io.Closer]bool{}
	for _, c := range closers {
		if reflect.TypeOf(c).Comparable() {
			if seen[c] || s.holds(c) {
				continue
			}
			seen[c] = true
		}
		toClose = append(toClose, c)
	}
	s.mu.Unlock()
	var errs []error
	for _, c := range toClose {
		errs = append(errs, c.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// holds reports whether an app instance is c; s.mu is held and c's type is
// comparable.
func (s *sdk) holds(c io.Closer) bool {
	for _, h := range s.handlers {
		if hc, ok := h.(io.Closer); ok && reflect.TypeOf(hc).Comparable() && hc == c {
			return true
		}
	}
	return false
}

// create makes an instance. A factory that panics fails the call with the
// panic value and the section it was called for (the plugin serves on, and
// its log gets the stack), as a compiled-in factory's panic fails the load.
func (s *sdk) create(_ context.Context, in []byte) (resp any, err error) {
	var req wire.CreateRequest
	if err := json.Unmarshal(in, &req); err != nil {
		return nil, err
	}
	defer func() {
		if v := recover(); v != nil {
			// The host's error names the entry point already.
			what := "the factory"
			if req.Proto == wire.ProtoApply {
				what = "applying the filter"
			}
			where := sectionOf(req.Local)
			s.log.Error("panic in "+what, "group", req.Proto, "name", req.Name, "section", where, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			resp, err = nil, fmt.Errorf("panic in %s, section %s: %v", what, where, v)
		}
	}()
	return s.createInstance(&req)
}

// sectionOf names the section a factory was called for, from where its
// keys were written ("FILE:LINE [SECTION]", the line of its first key).
func sectionOf(local []wire.ConfEntry) string {
	var at entrypoints.Location
	for _, e := range local {
		if e.Section != "" && (at.Section == "" || e.Line < at.Line) {
			at = entrypoints.Location{File: e.File, Line: e.Line, Section: e.Section}
		}
	}
	if at.Section == "" {
		return "unknown: no keys"
	}
	return at.String()
}

func (s *sdk) createInstance(req *wire.CreateRequest) (any, error) {
	local := wire.ToLocal(req.Local, req.Shadows)
	d := s.dist
	missing := func() error {
		return fmt.Errorf("dist %s has no %s entry point %q", d.Name, req.Proto, req.Name)
	}
	var resp wire.CreateResponse
	addHandler := func(h http.Handler, err error) error {
		if err != nil {
			return err
		}
		s.mu.Lock()
		s.handlers[req.ID] = h
		if sp, ok := h.(entrypoints.StartupProvider); ok {
			co := sp.Startup()
			s.startups[req.ID] = co
			for name := range co {
				resp.Startup = append(resp.Startup, name)
			}
		}
		s.mu.Unlock()
		return nil
	}
	var err error
	switch req.Proto {
	case entrypoints.ProtoApp:
		f := d.Apps[req.Name]
		if f == nil {
			return nil, missing()
		}
		err = addHandler(f(req.Global, local))
	case entrypoints.ProtoComposite:
		f := d.Composites[req.Name]
		if f == nil {
			return nil, missing()
		}
		err = addHandler(f(&loader{s: s, id: req.Loader}, req.Global, local))
	case entrypoints.ProtoFilterApp:
		f := d.FilterApps[req.Name]
		if f == nil {
			return nil, missing()
		}
		next, nerr := s.app(req.Next)
		if nerr != nil {
			return nil, nerr
		}
		err = addHandler(f(next, req.Global, local))
	case wire.ProtoApply:
		s.mu.RLock()
		filter := s.filters[req.Filter]
		s.mu.RUnlock()
		if filter == nil {
			return nil, fmt.Errorf("no filter instance %d", req.Filter)
		}
		next, nerr := s.app(req.Next)
		if nerr != nil {
			return nil, nerr
		}
		err = addHandler(filter(next), nil)
	case entrypoints.ProtoFilter:
		f := d.Filters[req.Name]
		if f == nil {
			return nil, missing()
		}
		filter, ferr := f(req.Global, local)
		if ferr == nil {
			s.mu.Lock()
			s.filters[req.ID] = filter
			s.mu.Unlock()
		}
		err = ferr
	case entrypoints.ProtoServer:
		f := d.Servers[req.Name]
		if f == nil {
			return nil, missing()
		}
		srv, serr := f(req.Global, local)
		if serr == nil {
			s.mu.Lock()
			s.servers[req.ID] = srv
			s.mu.Unlock()
		}
		err = serr
	case entrypoints.ProtoRunner:
		f := d.Runners[req.Name]
		if f == nil {
			return nil, missing()
		}
		s.mu.Lock()
		s.runners[req.ID] = runnerInstance{run: f, global: req.Global, local: local}
		s.mu.Unlock()
	case entrypoints.ProtoCoroutine:
		f := d.Coroutines[req.Name]
		if f == nil {
			return nil, missing()
		}
		co, cerr := f(req.Global, local)
		if cerr == nil {
			s.mu.Lock()
			s.coroutines[req.ID] = co
			s.mu.Unlock()
		}
		err = cerr
	default:
		return nil, fmt.Errorf("unknown entry point group %q", req.Proto)
	}
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// loader is a composite's Loader inside a plugin: it asks the host, which
// loads by section name or URI as for any composite; apps of this plugin
// come back as local instances, so no extra hop is added.
type loader struct {
	s  *sdk
	id uint64
}

func (l *loader) App(nameOrURI string, global map[string]string) (http.Handler, error) {
	conn, err := l.s.hostConn()
	if err != nil {
		return nil, err
	}
	var ref wire.AppRef
	req := wire.LoadAppRequest{Loader: l.id, Name: nameOrURI, Global: global}
	if err := wire.Invoke(context.Background(), conn, wire.HostMethodLoadApp, req, &ref); err != nil {
		return nil, fmt.Errorf("loading app %q: %w", nameOrURI, rpcError(err))
	}
	return l.s.app(ref)
}

func (l *loader) Filter(nameOrURI string, _ map[string]string) (entrypoints.Filter, error) {
	return nil, fmt.Errorf("loading filter %q: a composite in a plugin can load apps only", nameOrURI)
}

func (l *loader) Server(nameOrURI string, _ map[string]string) (entrypoints.Server, error) {
	return nil, fmt.Errorf("loading server %q: a composite in a plugin can load apps only", nameOrURI)
}

func (s *sdk) lookup(id uint64) http.Handler {
	s.mu.RLock()
	h := s.handlers[id]
	s.mu.RUnlock()
	return h
}

func (s *sdk) serveHTTP(_ any, stream grpc.ServerStream) error {
	procsRequest()
	return transport.Serve(runner.WithCore(stream.Context(), &remoteCore{s: s, scope: scopeOf(stream.Context())}), stream, s.lookup, s.log)
}

// run serves the Run stream: it runs a server, runner or coroutine until it
// returns or the host closes its side of the stream (stop) or goes away.
func (s *sdk) run(_ any, stream grpc.ServerStream) error {
	var in wire.Blob
	if err := stream.RecvMsg(&in); err != nil {
		return err
	}
	var req wire.RunRequest
	if err := json.Unmarshal(in.Data, &req); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(runner.WithCore(stream.Context(), &remoteCore{s: s}))
	defer cancel()
	if req.Check {
		ctx = runner.WithCheck(ctx)
	}
	// SendMsg is not safe for concurrent use: Ready may be called from any
	// goroutine of the instance.
	var sendMu sync.Mutex
	var readyOnce sync.Once
	ctx = runner.WithReadyFunc(ctx, func() {
		readyOnce.Do(func() {
			data, _ := json.Marshal(wire.RunResult{Ready: true})
			sendMu.Lock()
			defer sendMu.Unlock()
			_ = stream.SendMsg(&wire.Blob{Data: data})
		})
	})
	go func() {
		// The host closes its side to ask for a stop.
		var b wire.Blob
		for stream.RecvMsg(&b) == nil {
		}
		cancel()
	}()
	err := s.runInstance(ctx, req)
	var res wire.RunResult
	if err != nil {
		res.Error = err.Error()
	}
	data, _ := json.Marshal(res)
	sendMu.Lock()
	defer sendMu.Unlock()
	return stream.SendMsg(&wire.Blob{Data: data})
}

func (s *sdk) runInstance(ctx context.Context, req wire.RunRequest) (err error) {
	defer func() {
		if v := recover(); v != nil {
			s.log.Error("panic in instance", "id", req.ID, "panic", fmt.Sprint(v))
			err = fmt.Errorf("panic: %v", v)
		}
	}()
	s.mu.RLock()
	srv, isServer := s.servers[req.ID]
	rn, isRunner := s.runners[req.ID]
	co, isCoroutine := s.coroutines[req.ID]
	if req.Startup != "" {
		co, isCoroutine = s.startups[req.ID][req.Startup]
	}
	s.mu.RUnlock()
	switch {
	case isServer, isRunner:
		app, err := s.app(req.App)
		if err != nil {
			return err
		}
		// The host owns the listening sockets and lends them (see
		// listeners.go): runner's HTTPServer asks the host for its socket,
		// so a server replaced by a reload, here or in another process,
		// hands over the socket without refusing a connection.
		if src := s.lend.source(req.Listeners); src != nil {
			ctx = runner.WithListeners(ctx, src)
		}
		ctx, forget := s.withScheds(ctx, req.ID)
		defer forget()
		if isServer {
			return srv(ctx, app)
		}
		return rn.run(ctx, app, rn.global, rn.local)
	case isCoroutine:
		return co(ctx)
	}
	return fmt.Errorf("no runnable instance %d", req.ID)
}

// observeRejects wraps lookup, the host's apps by number, so that a report
// of a rejected request from a plugin's server (hostApp.ObserveRejected) is
// passed to the app's runner.ObserveRejected instead of being served.
func observeRejects(lookup func(uint64) http.Handler) func(uint64) http.Handler {
	return func(id uint64) http.Handler {
		h := lookup(id)
		if h == nil {
			return nil
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			v, ok := r.Header[rejectedHeader]
			if !ok {
				h.ServeHTTP(w, r)
				return
			}
			code, err := strconv.Atoi(strings.Join(v, ""))
			if err != nil {
				http.Error(w, "bad "+rejectedHeader, http.StatusBadRequest)
				return
			}
			r.Header.Del(rejectedHeader)
			if r.Method == "" { // the server could not read the request line
				r.RequestURI, r.URL = "", &url.URL{}
			}
			runner.ObserveRejected(h, r, code)
			w.WriteHeader(http.StatusNoContent)
		})
	}
}

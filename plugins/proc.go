package plugins

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/plugins/internal/transport"
	"github.com/paster-dev/paster/plugins/internal/wire"
	"github.com/paster-dev/paster/runner"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// State is the state of a plugin binary's process (PluginInfo.State).
type State int

// The states of a plugin process.
const (
	StateNew        State = iota // not started yet
	StateRunning                 // serving
	StateRestarting              // crashed; a restart with backoff is due
	StateCrashLoop               // past the crash-loop limit: restarted after the cooldown
	StateFailed                  // not restarted any more
	StateClosed                  // stopped by Host.Close
)

// String returns the state's name as /health and /metrics show it:
// "new", "running", "restarting", "crash_loop", "failed" or "closed".
func (s State) String() string {
	return [...]string{"new", "running", "restarting", "crash_loop", "failed", "closed"}[s]
}

// waiting reports whether a process is to be started in state s: requests
// are told to retry and Run loops wait for it.
func (s State) waiting() bool {
	return s == StateNew || s == StateRestarting || s == StateCrashLoop
}

// proc is one plugin binary: the current process (incarnation), the instance
// specs to recreate after a crash, and the dist it serves.
type proc struct {
	h             *Host
	path          string
	allowWritable bool   // [plugins] allow_writable: skip the mode checks
	name          string // dist name (binary name until described)
	log           hclog.Logger
	relay         *logRelay // the processes' output to log

	once     sync.Once
	startErr error
	manifest wire.Manifest // what the first process described

	nextID atomic.Uint64

	mu       sync.Mutex
	sum      []byte // the pin every start checks; nil: unpinned
	ran      []byte // the sha256 of the binary the last start executed
	state    State
	cur      *incarnation
	specs    []*wire.CreateRequest
	inflight int
	drained  chan struct{} // closed when inflight reaches 0 after close
	changed  chan struct{} // closed and replaced on every state change
	crashes  []time.Time
	restarts int // processes started after a crash
	// nextStart is when the scheduled restart is due (zero: none
	// scheduled, or it is under way).
	nextStart time.Time
	// cooldown is the wait before each restart past the crash-loop limit
	// ([plugins] crash_loop_cooldown; 0: none, the plugin stays failed).
	cooldown time.Duration
	closing  chan struct{}

	runCtx    context.Context // ends when Close gives up waiting: tears Run streams down
	runCancel context.CancelFunc
	runs      sync.WaitGroup // Run calls
	bg        sync.WaitGroup // exit watchers and restart loops
}

// incarnation is one process of the binary (a restart makes the next).
type incarnation struct {
	client *plugin.Client
	pc     *pluginConn
	http   transport.Opener
	pid    int
	exited chan struct{} // closed when the process is gone
}

func newProc(h *Host, path string, sum []byte, allowWritable bool) *proc {
	name := strings.TrimPrefix(filepath.Base(path), BinaryPrefix)
	p := &proc{h: h, path: path, sum: sum, allowWritable: allowWritable, name: name, log: h.opts.Logger.Named(name),
		changed: make(chan struct{}), closing: make(chan struct{})}
	p.relay = &logRelay{log: p.log}
	p.configure(procSettings{cooldown: max(h.opts.CrashLoopCooldown, 0), logRate: h.opts.LogRate})
	p.runCtx, p.runCancel = context.WithCancel(context.Background())
	return p
}

func (p *proc) startOnce() error {
	p.once.Do(func() {
		g, err := p.launch(true)
		p.mu.Lock()
		defer p.mu.Unlock()
		if err != nil {
			p.startErr = err
			p.setState(StateFailed)
			return
		}
		if p.state == StateClosed {
			g.client.Kill()
			p.startErr = fmt.Errorf("plugin binary %s: %w: host closed while starting", p.path, ErrUnavailable)
			return
		}
		p.cur = g
		p.setState(StateRunning)
		p.watch(g)
	})
	return p.startErr
}

// setState changes the state and wakes waiters; p.mu is held.
func (p *proc) setState(s State) {
	p.state = s
	close(p.changed)
	p.changed = make(chan struct{})
}

func (p *proc) info() PluginInfo {
	p.mu.Lock()
	defer p.mu.Unlock()
	i := PluginInfo{Path: p.path, Dist: p.manifest.Name, Version: p.manifest.Version, State: p.state, Restarts: p.restarts, Instances: len(p.specs), NextRestart: p.nextStart, LogDropped: p.relay.dropped.Load()}
	if p.cur != nil {
		i.PID = p.cur.pid
	}
	return i
}

// launch starts a process, connects the host service, describes it and
// (after the first start) recreates every instance. On the first start it
// also builds the dist.
func (p *proc) launch(first bool) (*incarnation, error) {
	p.mu.Lock()
	pin := p.sum
	p.mu.Unlock()
	exe, sum, err := openBinary(p.path, pin, p.allowWritable)
	if err != nil {
		return nil, err
	}
	// The child has its own descriptor once the process started.
	defer exe.Close()
	p.mu.Lock()
	p.ran = sum
	p.mu.Unlock()
	cmd := binaryCommand(exe, p.path)
	cmd.Env = append(append(cmd.Env, os.Environ()...), wire.EnvLogLevel+"="+levelName(p.log))
	cmd.SysProcAttr = sysProcAttr()
	lend, err := p.h.newLender(cmd, p.log)
	if err != nil {
		return nil, fmt.Errorf("plugin binary %s: %w", p.path, err)
	}
	dp, err := newDataPlane(cmd)
	if err != nil {
		lend.close()
		return nil, fmt.Errorf("plugin binary %s: %w", p.path, err)
	}
	tail := &stderrTail{}
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  handshake,
		VersionedPlugins: map[int]plugin.PluginSet{wire.ProtocolVersion: {wire.PluginName: &goPlugin{}}},
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           execPathName{fixedName{p.log}, cmd.Path, p.path},
		StartTimeout:     p.h.opts.StartTimeout,
		Stderr:           io.MultiWriter(tail, p.relay.writer("stderr", hclog.Warn, true)),
		SyncStdout:       p.relay.writer("stdout", hclog.Info, false),
		SyncStderr:       p.relay.writer("stderr", hclog.Warn, false),
	})
	type result struct {
		pc  *pluginConn
		err error
	}
	res := make(chan result, 1)
	g := &incarnation{client: client, exited: make(chan struct{})}
	go func() {
		defer close(g.exited)
		defer lend.close()
		defer dp.close()
		// Pdeathsig fires when the thread that forked the child exits
		// (golang/go#27505), so fork from a locked thread that lives as long
		// as the process; the thread is discarded when this goroutine ends.
		runtime.LockOSThread()
		rpc, err := client.Client()
		var pc *pluginConn
		if err == nil {
			var raw any
			raw, err = rpc.Dispense(wire.PluginName)
			if err == nil {
				pc = raw.(*pluginConn)
			}
		}
		if err != nil {
			client.Kill()
			res <- result{err: err}
			return
		}
		res <- result{pc: pc}
		<-pc.done.Done()
	}()
	r := <-res
	lend.started()
	dp.started()
	if r.err != nil {
		<-g.exited
		// client.Kill has waited for go-plugin's cmd.Wait.
		return nil, p.startError(r.err, exitDesc(cmd.ProcessState), tail.String())
	}
	tail.stop()
	g.pc = r.pc
	g.http = transport.GRPC{Conn: r.pc.conn, Method: wire.MethodHTTP}

	fail := func(what string, err error) (*incarnation, error) {
		client.Kill()
		<-g.exited
		return nil, fmt.Errorf("plugin binary %s: %s: %w", p.path, what, rpcError(err))
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.h.opts.StartTimeout)
	defer cancel()
	var m wire.Manifest
	if err := wire.Invoke(ctx, r.pc.conn, wire.MethodDescribe, struct{}{}, &m); err != nil {
		return fail("describe", err)
	}
	g.pid = m.PID
	cs := newCoreService(p.h, r.pc.done)
	if m.DataPlane && dp != nil {
		g.http = transport.NewMux(dp.conns, true, p.dataHandler(cs), p.log)
	}
	id := r.pc.broker.NextId()
	go r.pc.broker.AcceptAndServe(id, func(opts []grpc.ServerOption) *grpc.Server {
		return p.hostServer(cs, opts)
	})
	if err := wire.Invoke(ctx, r.pc.conn, wire.MethodInit, wire.InitRequest{Broker: id}, nil); err != nil {
		return fail("init", err)
	}
	if first {
		p.mu.Lock() // info (Host.Plugins) reads the manifest meanwhile
		p.manifest = m
		p.name = m.Name
		p.mu.Unlock()
		p.log.Debug("plugin started", "path", p.path, "pid", m.PID, "version", m.Version)
		return g, nil
	}
	if m.Name != p.manifest.Name {
		return fail("restart", fmt.Errorf("now serves dist %s instead of %s", m.Name, p.manifest.Name))
	}
	// Recreate the instances. The incarnation is current (not yet serving)
	// so that composites recreating their apps reach it.
	p.mu.Lock()
	if p.state == StateClosed {
		p.mu.Unlock()
		client.Kill()
		<-g.exited
		return nil, ErrUnavailable
	}
	p.cur = g
	specs := append([]*wire.CreateRequest(nil), p.specs...)
	p.mu.Unlock()
	for _, s := range specs {
		if err := wire.Invoke(ctx, r.pc.conn, wire.MethodCreate, s, nil); err != nil {
			return fail(fmt.Sprintf("recreating %s %q", s.Proto, s.Name), err)
		}
	}
	p.log.Info("plugin restarted", "pid", m.PID, "instances", len(specs))
	return g, nil
}

// startError classifies a go-plugin start failure.
// exited says how the process ended by itself ("" if it did not), stderr
// the end of what it wrote to stderr (see stderrTail.String).
func (p *proc) startError(err error, exited, stderr string) error {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "timeout while waiting"):
		return fmt.Errorf("%w: plugin binary %s did not complete the plugin handshake within %s%s", ErrStartTimeout, p.path, p.h.opts.StartTimeout, stderr)
	case strings.Contains(strings.ToLower(msg), "incompatible api version"), strings.Contains(msg, "incompatible core API"):
		return fmt.Errorf("%w: plugin binary %s: want paster plugin protocol %d: %s", ErrProtocol, p.path, wire.ProtocolVersion, firstLine(msg))
	case strings.Contains(msg, "exited before we could connect"), strings.HasSuffix(firstLine(msg), "plugin message: "):
		// It ended without a word of the handshake: how it ended and what
		// it said on stderr tell why; go-plugin's message does not.
		if exited == "" {
			exited = "closed its standard output"
		}
		return fmt.Errorf("%w: plugin binary %s %s before the plugin handshake (want an executable that calls plugins.Serve, paster plugin protocol %d)%s",
			ErrNotPlugin, p.path, exited, wire.ProtocolVersion, stderr)
	case strings.Contains(msg, "Unrecognized remote plugin message"),
		strings.Contains(msg, "exec format error"), strings.Contains(msg, "permission denied"), strings.Contains(msg, "no such file"),
		strings.Contains(msg, "unsupported plugin protocol"), strings.Contains(msg, "Dispense"), strings.Contains(msg, "unknown plugin type"):
		if exited != "" {
			stderr = "; it " + exited + stderr
		}
		return fmt.Errorf("%w: plugin binary %s: want an executable that calls plugins.Serve (paster plugin protocol %d): %s%s", ErrNotPlugin, p.path, wire.ProtocolVersion, firstLine(msg), stderr)
	}
	return fmt.Errorf("plugin binary %s: %w%s", p.path, err, stderr)
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// watch waits for g's process to exit and restarts it unless that was
// expected. p.mu is held.
func (p *proc) watch(g *incarnation) {
	p.bg.Add(1)
	go func() {
		defer p.bg.Done()
		<-g.exited
		killGroup(g.pid)
		p.mu.Lock()
		if p.cur != g || p.state == StateClosed {
			p.mu.Unlock()
			return
		}
		p.log.Error("plugin process exited unexpectedly", "path", p.path, "pid", g.pid)
		p.cur = nil
		p.crashLocked()
		p.mu.Unlock()
	}()
}

// crashLocked counts a crash and schedules the restart: after a backoff
// that doubles per crash within a minute (up to 10 s), or, past the
// crash-loop limit, after the cooldown; without a cooldown (or with
// MaxRestarts negative) the plugin stays failed. p.mu is held.
func (p *proc) crashLocked() {
	now := time.Now()
	recent := p.crashes[:0]
	for _, t := range p.crashes {
		if now.Sub(t) < time.Minute {
			recent = append(recent, t)
		}
	}
	p.crashes = append(recent, now)
	if p.h.opts.MaxRestarts < 0 {
		p.log.Error("plugin crashed; restarts are off", "path", p.path)
		p.setState(StateFailed)
		return
	}
	state, delay := StateRestarting, min(p.h.opts.RestartBackoff<<(len(p.crashes)-1), 10*time.Second)
	if len(p.crashes) > p.h.opts.MaxRestarts {
		if p.cooldown <= 0 {
			p.log.Error("plugin crashes too often; not restarting it", "path", p.path, "crashes_last_minute", len(p.crashes))
			p.setState(StateFailed)
			return
		}
		state, delay = StateCrashLoop, p.cooldown
		p.log.Error("plugin crashes too often; starting it again after the cooldown", "path", p.path,
			"crashes_last_minute", len(p.crashes), "cooldown", p.cooldown)
	}
	p.nextStart = now.Add(delay)
	p.setState(state)
	p.bg.Add(1)
	go p.restart(delay)
}

// configure applies the [plugins] settings (the configuration loaded last
// wins).
func (p *proc) configure(s procSettings) {
	p.mu.Lock()
	p.cooldown = s.cooldown
	p.mu.Unlock()
	p.relay.setRate(s.logRate)
}

// retryAfter is the Retry-After value, in seconds, for a request turned
// away while a restart is due: the time until the restart is tried,
// rounded up, and at least 1 (a restart under way).
func (p *proc) retryAfter() int {
	p.mu.Lock()
	next := p.nextStart
	p.mu.Unlock()
	return max(1, int((time.Until(next)+time.Second-1)/time.Second))
}

func (p *proc) restart(delay time.Duration) {
	defer p.bg.Done()
	t := time.NewTimer(delay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-p.closing:
		return
	}
	if gate := p.h.restartGate; gate != nil {
		select {
		case <-gate:
		case <-p.closing:
			return
		}
	}
	p.mu.Lock()
	p.nextStart = time.Time{}
	p.mu.Unlock()
	g, err := p.launch(false)
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		if p.state == StateClosed {
			return
		}
		p.cur = nil
		p.log.Error("restarting plugin failed", "path", p.path, "error", err)
		p.crashLocked()
		return
	}
	if p.state == StateClosed {
		g.client.Kill()
		return
	}
	p.cur = g
	p.restarts++
	p.setState(StateRunning)
	p.watch(g)
}

// acquire returns the running incarnation for one request, or an error
// saying why there is none. release must follow a successful acquire.
func (p *proc) acquire() (*incarnation, State) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.state != StateRunning {
		return nil, p.state
	}
	p.inflight++
	return p.cur, StateRunning
}

func (p *proc) release() {
	p.mu.Lock()
	p.inflight--
	if p.inflight == 0 && p.drained != nil {
		close(p.drained)
		p.drained = nil
	}
	p.mu.Unlock()
}

// waitRunning waits until the plugin runs; it fails when it is closed or
// failed, and returns ctx's error when ctx ends first.
func (p *proc) waitRunning(ctx context.Context) (*incarnation, error) {
	for {
		p.mu.Lock()
		st, g, ch := p.state, p.cur, p.changed
		p.mu.Unlock()
		switch {
		case st == StateRunning:
			return g, nil
		case !st.waiting():
			return nil, fmt.Errorf("plugin binary %s: %w (%s)", p.path, ErrUnavailable, st)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-ch:
		}
	}
}

func (p *proc) close(ctx context.Context) error {
	p.mu.Lock()
	if p.state == StateClosed {
		p.mu.Unlock()
		return nil
	}
	p.setState(StateClosed)
	close(p.closing)
	var drained chan struct{}
	if p.inflight > 0 {
		drained = make(chan struct{})
		p.drained = drained
	}
	g := p.cur
	p.mu.Unlock()

	var err error
	if drained != nil {
		select {
		case <-drained:
		case <-ctx.Done():
			err = fmt.Errorf("plugin %s: draining requests: %w", p.name, ctx.Err())
		}
	}
	// Running servers and coroutines were asked to stop by closing; wait.
	runsDone := make(chan struct{})
	go func() { p.runs.Wait(); close(runsDone) }()
	select {
	case <-runsDone:
	case <-ctx.Done():
		if err == nil {
			err = fmt.Errorf("plugin %s: stopping servers and coroutines: %w", p.name, ctx.Err())
		}
	}
	p.runCancel()
	if g != nil {
		g.client.Kill()
		<-g.exited
		killGroup(g.pid)
	}
	<-runsDone
	p.bg.Wait()
	p.relay.stop()
	return err
}

// create makes an instance in the plugin and remembers it for restarts.
func (p *proc) create(req *wire.CreateRequest) (uint64, wire.CreateResponse, error) {
	var resp wire.CreateResponse
	req.ID = p.nextID.Add(1)
	p.mu.Lock()
	g := p.cur
	if g == nil || p.state == StateClosed || p.state == StateFailed {
		st := p.state
		p.mu.Unlock()
		return 0, resp, fmt.Errorf("plugin binary %s: %w (%s)", p.path, ErrUnavailable, st)
	}
	p.specs = append(p.specs, req)
	p.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), p.h.opts.StartTimeout)
	defer cancel()
	if err := wire.Invoke(ctx, g.pc.conn, wire.MethodCreate, req, &resp); err != nil {
		p.mu.Lock()
		for i, s := range p.specs {
			if s == req {
				p.specs = append(p.specs[:i], p.specs[i+1:]...)
				break
			}
		}
		p.mu.Unlock()
		return 0, resp, fmt.Errorf("plugin %s (%s): creating %s %q: %w", p.manifest.Name, p.path, req.Proto, req.Name, rpcError(err))
	}
	return req.ID, resp, nil
}

// destroy forgets the instances ids: the plugin drops them (closing those
// that implement io.Closer), a restart no longer recreates them, and the
// host references only they held are released. A plugin built before
// Destroy existed keeps its instances (logged at debug level).
func (p *proc) destroy(ctx context.Context, ids []uint64) error {
	gone := make(map[uint64]bool, len(ids))
	for _, id := range ids {
		gone[id] = true
	}
	p.mu.Lock()
	var keep, dropped []*wire.CreateRequest
	for _, s := range p.specs {
		if gone[s.ID] {
			dropped = append(dropped, s)
		} else {
			keep = append(keep, s)
		}
	}
	p.specs = keep
	g, st := p.cur, p.state
	p.mu.Unlock()
	if len(dropped) == 0 {
		return nil
	}
	ids = make([]uint64, len(dropped))
	for i, s := range dropped {
		ids[i] = s.ID
		if s.Next.Host != 0 {
			p.h.refs.apps.Delete(s.Next.Host)
		}
		if s.Loader != 0 {
			p.h.refs.loaders.Delete(s.Loader)
		}
	}
	if g == nil || st != StateRunning {
		return nil
	}
	var resp struct{}
	if err := wire.Invoke(ctx, g.pc.conn, wire.MethodDestroy, &wire.DestroyRequest{IDs: ids}, &resp); err != nil {
		if status.Code(err) == codes.Unimplemented {
			p.log.Debug("plugin cannot destroy instances (built before Destroy); they stay", "count", len(ids))
			return nil
		}
		return fmt.Errorf("plugin %s (%s): destroying %d instances: %w", p.manifest.Name, p.path, len(ids), rpcError(err))
	}
	p.log.Debug("instances destroyed", "count", len(ids))
	return nil
}

// ref names next for the plugin: an instance of this plugin stays local.
func (p *proc) ref(next http.Handler) wire.AppRef {
	if a, ok := next.(interface{ remote() (*proc, uint64) }); ok {
		if ap, id := a.remote(); ap == p {
			return wire.AppRef{Local: id}
		}
	}
	return wire.AppRef{Host: p.h.refs.addApp(next)}
}

// run runs instance req.ID in the plugin until it returns or ctx ends (then
// it asks the instance to stop and waits for it). A crash of the plugin
// waits for the restart and runs the instance again.
func (p *proc) run(ctx context.Context, req wire.RunRequest) error {
	p.runs.Add(1)
	defer p.runs.Done()
	for {
		g, err := p.waitRunning(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		err, crashed := p.runOnce(ctx, g, req)
		if !crashed {
			return err
		}
		p.waitPast(ctx, g)
		p.log.Warn("instance lost with its plugin process; running it again after the restart", "id", req.ID)
	}
}

// waitPast waits until g is no longer the running process (its exit was
// seen), at most 2 s, so that a Run loop does not spin on a dead process.
func (p *proc) waitPast(ctx context.Context, g *incarnation) {
	t := time.NewTimer(2 * time.Second)
	defer t.Stop()
	for {
		p.mu.Lock()
		current := p.cur == g && p.state == StateRunning
		ch := p.changed
		p.mu.Unlock()
		if !current {
			return
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return
		case <-p.closing:
			return
		case <-t.C:
			return
		}
	}
}

func (p *proc) runOnce(ctx context.Context, g *incarnation, req wire.RunRequest) (error, bool) {
	sctx, cancel := context.WithCancel(p.runCtx)
	defer cancel()
	s, err := g.pc.conn.NewStream(sctx, &wire.RunStream, wire.MethodRun, wire.CallCodec)
	if err != nil {
		return nil, true
	}
	data, _ := json.Marshal(req)
	if err := s.SendMsg(&wire.Blob{Data: data}); err != nil {
		return nil, true
	}
	type result struct {
		res wire.RunResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		for {
			var b wire.Blob
			var r result
			if r.err = s.RecvMsg(&b); r.err == nil {
				r.err = json.Unmarshal(b.Data, &r.res)
			}
			if r.err == nil && r.res.Ready {
				// The instance reported ready (runner.Ready in the
				// plugin): pass it on to the host's scheduler.
				runner.Ready(ctx)
				continue
			}
			done <- r
			return
		}
	}()
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		_ = s.CloseSend()
		if r = <-done; r.err != nil {
			return nil, false
		}
	case <-p.closing:
		_ = s.CloseSend()
		r = <-done
	}
	if r.err != nil {
		// A broken Run stream is most often the process dying, and the
		// stream may break before the exit is seen: give it a moment.
		t := time.NewTimer(2 * time.Second)
		defer t.Stop()
		select {
		case <-g.exited:
			return nil, true
		case <-p.closing:
			return nil, false
		case <-t.C:
		}
		return fmt.Errorf("plugin %s: running instance: %w", p.name, rpcError(r.err)), false
	}
	if r.res.Error != "" {
		return errors.New(r.res.Error), false
	}
	return nil, false
}

// hostServer builds the broker server the plugin calls back into.
func (p *proc) hostServer(cs *coreService, opts []grpc.ServerOption) *grpc.Server {
	s := grpc.NewServer(append(opts, grpc.MaxRecvMsgSize(wire.MaxMessage))...)
	hs := &hostService{p: p}
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: wire.HostService,
		HandlerType: (*any)(nil),
		Methods:     append([]grpc.MethodDesc{wire.UnaryMethod("LoadApp", hs.loadApp)}, cs.methods()...),
		Streams: []grpc.StreamDesc{
			{StreamName: "HTTP", ServerStreams: true, ClientStreams: true, Handler: hs.serveHTTP},
		},
	}, hs)
	return s
}

// hostService is what a plugin process calls back into (with coreService,
// the runner's Core), over one broker connection per process.
type hostService struct {
	p *proc
}

func (hs *hostService) serveHTTP(_ any, stream grpc.ServerStream) error {
	return transport.Serve(stream.Context(), stream, observeRejects(hs.p.h.refs.app), hs.p.log)
}

func (hs *hostService) loadApp(ctx context.Context, in []byte) (any, error) {
	var req wire.LoadAppRequest
	if err := json.Unmarshal(in, &req); err != nil {
		return nil, err
	}
	v, ok := hs.p.h.refs.loaders.Load(req.Loader)
	if !ok {
		return nil, fmt.Errorf("no loader %d", req.Loader)
	}
	app, err := v.(entrypoints.Loader).App(req.Name, req.Global)
	if err != nil {
		return nil, err
	}
	return hs.p.ref(app), nil
}

// fixedName keeps go-plugin's logger named after the dist (go-plugin names
// its stderr logger after the binary's file name), and turns off go-plugin's
// relay of the plugin's stderr: the Stderr writer (a logRelay's) relays it
// instead, keeping the types of values and the rate limit. go-plugin asks
// for that logger as Named(file name of the command) and for its stdio
// client's as Named("stdio").
type fixedName struct{ hclog.Logger }

func (f fixedName) Named(name string) hclog.Logger {
	if name == "stdio" {
		return f
	}
	return hclog.New(&hclog.LoggerOptions{Level: hclog.Off, Output: io.Discard})
}

// execPathName shows the binary's path where go-plugin logs the path it
// executed, /proc/self/fd/3 on Linux (see binaryCommand).
type execPathName struct {
	hclog.Logger
	exec, path string
}

func (l execPathName) fix(args []any) []any {
	out := args
	for i, a := range args {
		if a == l.exec {
			if &out[0] == &args[0] {
				out = append([]any(nil), args...)
			}
			out[i] = l.path
		}
	}
	return out
}

func (l execPathName) Log(level hclog.Level, msg string, args ...any) {
	l.Logger.Log(level, msg, l.fix(args)...)
}
func (l execPathName) Trace(msg string, args ...any) { l.Logger.Trace(msg, l.fix(args)...) }
func (l execPathName) Debug(msg string, args ...any) { l.Logger.Debug(msg, l.fix(args)...) }
func (l execPathName) Info(msg string, args ...any)  { l.Logger.Info(msg, l.fix(args)...) }
func (l execPathName) Warn(msg string, args ...any)  { l.Logger.Warn(msg, l.fix(args)...) }
func (l execPathName) Error(msg string, args ...any) { l.Logger.Error(msg, l.fix(args)...) }

func levelName(l hclog.Logger) string {
	switch {
	case l.IsTrace():
		return "trace"
	case l.IsDebug():
		return "debug"
	case l.IsInfo():
		return "info"
	case l.IsWarn():
		return "warn"
	}
	return "error"
}

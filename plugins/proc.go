package plugins

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/plugins/internal/transport"
	"github.com/paster-dev/paster/plugins/internal/wire"
	"github.com/paster-dev/paster/privilege"
	"google.golang.org/grpc"
)

// proc is one plugin binary: the current process (incarnation), the instance
// specs to recreate after a crash, and the dist it serves. Each of its jobs
// lives in a file of its own, and its fields below are grouped by job:
//
//	proc_exec.go       starting one process of the verified, pinned binary (launch)
//	proc_supervise.go  the first start, watching a process, restarting it, closing
//	proc_crashloop.go  the crash-loop policy: backoff, limit, cooldown, Retry-After
//	proc_instances.go  the instances: create, destroy, run
//	proc_state.go      State and what Host.Plugins reports (info)
//	proc_logs.go       go-plugin's logger wiring (the output itself: logrelay.go)
//
// This file keeps the request gate (acquire, release) and the service the
// plugin calls back into. mu guards the fields marked (mu).
type proc struct {
	h    *Host
	path string
	name string // dist name (binary name until described)
	log  hclog.Logger
	mu   sync.Mutex

	// exec
	allowWritable bool          // [plugins] allow_writable: skip the mode checks
	manifest      wire.Manifest // what the first process described
	sum           []byte        // (mu) the pin every start checks; nil: unpinned
	ran           []byte        // (mu) the sha256 of the binary the last start executed

	// logs
	relay *logRelay // the processes' output to log

	// supervision
	once      sync.Once
	startErr  error
	state     State         // (mu)
	cur       *incarnation  // (mu)
	changed   chan struct{} // (mu) closed and replaced on every state change
	restarts  int           // (mu) processes started after a crash
	closing   chan struct{}
	runCtx    context.Context // ends when Close gives up waiting: tears Run streams down
	runCancel context.CancelFunc
	runs      sync.WaitGroup // Run calls
	bg        sync.WaitGroup // exit watchers and restart loops

	// crash loop
	loop crashLoop // (mu)
	// nextStart is when the scheduled restart is due (zero: none
	// scheduled, or it is under way). (mu)
	nextStart time.Time
	// user is who the next process starts as ([plugins] user and group,
	// HostOptions.User); nil: the host's user. (mu)
	user *privilege.User

	// instances
	nextID atomic.Uint64
	specs  []*wire.CreateRequest // (mu) what a restart recreates

	// request gate
	inflight int           // (mu)
	drained  chan struct{} // (mu) closed when inflight reaches 0 after close
}

// incarnation is one process of the binary (a restart makes the next).
type incarnation struct {
	client *plugin.Client
	pc     *pluginConn
	http   transport.Opener
	pid    int
	exited chan struct{} // closed when the process is gone

	killOnce sync.Once
}

// kill stops the process (gracefully, else by force) and releases the
// client's side: go-plugin's Client.Kill, run once however many callers
// ask (two at once made the second's close of the connection fail, and
// Kill then log that the plugin did not exit gracefully and kill it). A
// caller returns once the Kill has finished.
func (g *incarnation) kill() { g.killOnce.Do(g.client.Kill) }

func newProc(h *Host, path string, sum []byte, allowWritable bool) *proc {
	name := strings.TrimPrefix(filepath.Base(path), BinaryPrefix)
	p := &proc{h: h, path: path, sum: sum, allowWritable: allowWritable, name: name, log: h.opts.Logger.Named(name),
		changed: make(chan struct{}), closing: make(chan struct{}),
		loop: crashLoop{backoff: h.opts.RestartBackoff, maxRestarts: h.opts.MaxRestarts}}
	p.relay = &logRelay{log: p.log}
	p.configure(procSettings{cooldown: max(h.opts.CrashLoopCooldown, 0), logRate: h.opts.LogRate})
	p.runCtx, p.runCancel = context.WithCancel(context.Background())
	return p
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

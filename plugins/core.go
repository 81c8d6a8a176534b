package plugins

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/paster-dev/paster/plugins/internal/transport"
	"github.com/paster-dev/paster/plugins/internal/wire"
	"github.com/paster-dev/paster/runner"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// The runner's Core crosses the boundary as unary JSON calls on the host
// service (one brokered connection per process). Inside a plugin,
// runner.CoreFrom(r.Context()) in a handler, and CoreFrom(ctx) in a
// coroutine or server, return remoteCore, so a request parked in one plugin
// is woken by a signal sent from the host or from another plugin. Context
// deadlines and cancellation travel with each call (gRPC deadline and
// RST_STREAM); errors keep their identity (ErrTimeout, ErrClosed, ErrGap
// with its *GapError, ErrNoCore, ErrBadPosition, context errors).

// SetCore makes c the Core served to plugin processes. Without one, the
// Core of the first request the host forwards (runner.CoreFrom of its
// context) is adopted; until then plugins get runner.ErrNoCore.
func (h *Host) SetCore(c runner.Core) { h.core.Store(&c) }

func (h *Host) coreFor() runner.Core {
	if c := h.core.Load(); c != nil {
		return *c
	}
	return runner.CoreFrom(context.Background())
}

// adoptCore remembers the Core of a forwarded request if none is set.
func (h *Host) adoptCore(ctx context.Context) {
	if h.core.Load() == nil && runner.HasCore(ctx) {
		c := runner.CoreFrom(ctx)
		h.core.CompareAndSwap(nil, &c)
	}
}

type coreCall struct {
	// Scope is the request Core the call belongs to (see scopes); 0 means
	// the host's Core.
	Scope   uint64        `json:"scope,omitempty"`
	Name    string        `json:"name,omitempty"`
	Value   []byte        `json:"value,omitempty"`
	Timeout time.Duration `json:"timeout,omitempty"`
	Min     int           `json:"min,omitempty"`
	From    string        `json:"from,omitempty"`
	Sub     uint64        `json:"sub,omitempty"`
}

type coreReply struct {
	Value    []byte           `json:"value,omitempty"`
	N        uint64           `json:"n,omitempty"`
	Messages []runner.Message `json:"messages,omitempty"`
	Err      *coreErr         `json:"err,omitempty"`
}

// coreErr is an error of the host's Core in wire form.
type coreErr struct {
	Msg   string   `json:"msg"`
	Kinds []string `json:"kinds"`
	Gap   *runner.GapError
}

// coreKinds are the errors a Core error keeps its identity with: by name
// in JSON, by position in a bit mask on the data plane.
var coreKinds = [...]struct {
	name string
	err  error
}{
	{"timeout", runner.ErrTimeout}, {"closed", runner.ErrClosed}, {"gap", runner.ErrGap},
	{"nocore", runner.ErrNoCore}, {"position", runner.ErrBadPosition},
	{"canceled", context.Canceled}, {"deadline", context.DeadlineExceeded},
	{"toolarge", runner.ErrTooLarge},
}

func toCoreErr(err error) *coreErr {
	if err == nil {
		return nil
	}
	e := &coreErr{Msg: err.Error()}
	for _, k := range coreKinds {
		if errors.Is(err, k.err) {
			e.Kinds = append(e.Kinds, k.name)
		}
	}
	var gap *runner.GapError
	if errors.As(err, &gap) {
		e.Gap = gap
	}
	return e
}

// remoteErr is a Core error that happened in the host.
type remoteErr struct {
	msg   string
	kinds []error
}

func (e *remoteErr) Error() string   { return e.msg }
func (e *remoteErr) Unwrap() []error { return e.kinds }

func (e *coreErr) err() error {
	if e == nil {
		return nil
	}
	if e.Gap != nil {
		return e.Gap
	}
	r := &remoteErr{msg: e.Msg}
	for _, name := range e.Kinds {
		for _, k := range coreKinds {
			if k.name == name {
				r.kinds = append(r.kinds, k.err)
			}
		}
	}
	return r
}

// Host side: the Core methods of the host service.

type coreService struct {
	h    *Host
	ctx  context.Context // ends when the plugin process is gone
	next atomic.Uint64
	subs sync.Map // uint64 -> runner.Subscription
}

// newCoreService serves h's Core to a plugin process; ctx ends when the
// process is gone, which closes the subscriptions it opened.
func newCoreService(h *Host, ctx context.Context) *coreService {
	cs := &coreService{h: h, ctx: ctx}
	context.AfterFunc(ctx, func() {
		cs.subs.Range(func(k, v any) bool {
			_ = v.(runner.Subscription).Close()
			return true
		})
	})
	return cs
}

// methods are the Core methods as gRPC methods (plugins without the data
// plane call them so).
func (cs *coreService) methods() []grpc.MethodDesc {
	var out []grpc.MethodDesc
	for name, f := range cs.unaries() {
		out = append(out, wire.UnaryMethod(name, f))
	}
	return out
}

// coreMethod is one Core method served to plugins.
type coreMethod func(ctx context.Context, c runner.Core, in coreCall) (coreReply, error)

// unaries are the Core methods by name, as JSON calls.
func (cs *coreService) unaries() map[string]wire.Unary {
	us := map[string]wire.Unary{}
	for name, f := range cs.calls() {
		us[name] = func(ctx context.Context, data []byte) (any, error) {
			var in coreCall
			if err := json.Unmarshal(data, &in); err != nil {
				return nil, err
			}
			return cs.call(ctx, f, in), nil
		}
	}
	return us
}

// call runs f on the Core in names (its request scope's, or the host's).
func (cs *coreService) call(ctx context.Context, f coreMethod, in coreCall) coreReply {
	out, err := f(ctx, cs.core(in), in)
	out.Err = toCoreErr(err)
	return out
}

// core returns the Core in names: its request scope's, or the host's.
func (cs *coreService) core(in coreCall) runner.Core {
	if in.Scope != 0 {
		return cs.h.scopes.get(in.Scope)
	}
	return cs.h.coreFor()
}

// waitForSignal runs the WaitForSignal in asks for and gives answer its
// reply: without a goroutine of its own when the Core is a
// runner.SignalFuncWaiter (answer then runs in the goroutine that
// signals), else in the calling one, which waits.
func (cs *coreService) waitForSignal(ctx context.Context, in coreCall, answer func(coreReply)) {
	done := func(v []byte, err error) { answer(coreReply{Value: v, Err: toCoreErr(err)}) }
	c := cs.core(in)
	if fw, ok := c.(runner.SignalFuncWaiter); ok {
		fw.WaitForSignalFunc(ctx, in.Name, in.Timeout, done)
		return
	}
	done(c.WaitForSignal(ctx, in.Name, in.Timeout))
}

// calls are the Core methods by name.
func (cs *coreService) calls() map[string]coreMethod {
	us := map[string]coreMethod{}
	m := func(name string, f coreMethod) { us[name] = f }
	m("Sleep", func(ctx context.Context, c runner.Core, in coreCall) (coreReply, error) {
		return coreReply{}, c.Sleep(ctx, in.Timeout)
	})
	m("WaitForSignal", func(ctx context.Context, c runner.Core, in coreCall) (coreReply, error) {
		v, err := c.WaitForSignal(ctx, in.Name, in.Timeout)
		return coreReply{Value: v}, err
	})
	m("Signal", func(ctx context.Context, c runner.Core, in coreCall) (coreReply, error) {
		var n int
		var err error
		if in.Min > 0 {
			n, err = c.SignalAtLeast(ctx, in.Name, in.Value, in.Min)
		} else {
			n, err = c.Signal(ctx, in.Name, in.Value)
		}
		return coreReply{N: uint64(n)}, err
	})
	m("Publish", func(ctx context.Context, c runner.Core, in coreCall) (coreReply, error) {
		seq, err := c.Publish(ctx, in.Name, in.Value)
		return coreReply{N: seq}, err
	})
	m("Subscribe", func(ctx context.Context, c runner.Core, in coreCall) (coreReply, error) {
		from, err := runner.ParsePosition(in.From)
		if err != nil {
			return coreReply{}, err
		}
		// The subscription lives until the plugin closes it or the
		// plugin process goes away, not just for this call.
		sub, err := c.Subscribe(cs.ctx, in.Name, from)
		if err != nil {
			return coreReply{}, err
		}
		id := cs.next.Add(1)
		cs.subs.Store(id, sub)
		return coreReply{N: id}, nil
	})
	m("Fetch", func(ctx context.Context, c runner.Core, in coreCall) (coreReply, error) {
		v, ok := cs.subs.Load(in.Sub)
		if !ok {
			return coreReply{}, fmt.Errorf("runner: fetch: subscription %d: %w", in.Sub, runner.ErrClosed)
		}
		msgs, err := v.(runner.Subscription).Fetch(ctx)
		return coreReply{Messages: msgs}, err
	})
	m("CloseSubscription", func(ctx context.Context, c runner.Core, in coreCall) (coreReply, error) {
		if v, ok := cs.subs.LoadAndDelete(in.Sub); ok {
			return coreReply{}, v.(runner.Subscription).Close()
		}
		return coreReply{}, nil
	})
	return us
}

// Plugin side: a runner.Core that calls the host. scope is the request
// Core of the host request a handler serves (0 outside requests).

type remoteCore struct {
	s     *sdk
	scope uint64
	// via is the data-plane exchange of the request the handler serves
	// (nil outside one): its calls are made for it (transport.CallFor).
	via *transport.Exchange
}

// call runs method on the host's Core with in, into out: on the data
// plane, or as a gRPC call (a host from before it). A handler parks in it
// (WaitForSignal), on a stack that should stay at its starting size, so
// its frame stays small: the gRPC path, decoding and error texts are in
// functions of their own.
func (c *remoteCore) call(ctx context.Context, method string, in *coreCall, out *coreReply) error {
	in.Scope = c.scope
	if c.s.data == nil {
		return c.callGRPC(ctx, method, in, out)
	}
	var reply []byte
	var err error
	if c.via != nil {
		reply, err = transport.CallFor(ctx, c.via, method, in.appendTo(nil))
	} else {
		reply, err = c.s.data.Call(ctx, method, in.appendTo(nil))
	}
	return replied(ctx, method, reply, err, out)
}

// replied decodes the reply of a data-plane call into out, or returns the
// call's error.
func replied(ctx context.Context, method string, reply []byte, err error, out *coreReply) error {
	if err != nil {
		return callFailed(ctx, method, err)
	}
	if err := out.decode(reply); err != nil {
		return fmt.Errorf("runner: %s: decoding the reply: %w", method, err)
	}
	return out.Err.err()
}

// callFailed is the error of a call that got no reply.
func callFailed(ctx context.Context, method string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("runner: %s: %w", method, ctx.Err())
	}
	return &remoteErr{msg: fmt.Sprintf("runner: %s: host unreachable: %v", method, err), kinds: []error{runner.ErrClosed}}
}

// callGRPC makes the call on the host service.
func (c *remoteCore) callGRPC(ctx context.Context, method string, in *coreCall, out *coreReply) error {
	conn, err := c.s.hostConn()
	if err != nil {
		return &remoteErr{msg: "runner: " + err.Error(), kinds: []error{runner.ErrNoCore}}
	}
	// Copies, so that in and out stay on their callers' stacks.
	var reply coreReply
	if err := wire.Invoke(ctx, conn, "/"+wire.HostService+"/"+method, *in, &reply); err != nil {
		return callFailed(ctx, method, rpcError(err))
	}
	*out = reply
	return out.Err.err()
}

func (c *remoteCore) Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	return c.call(ctx, "Sleep", &coreCall{Timeout: d}, new(coreReply))
}

func (c *remoteCore) WaitForSignal(ctx context.Context, name string, timeout time.Duration) ([]byte, error) {
	var out coreReply
	err := c.call(ctx, "WaitForSignal", &coreCall{Name: name, Timeout: timeout}, &out)
	return out.Value, err
}

func (c *remoteCore) Signal(ctx context.Context, name string, value []byte) (int, error) {
	var out coreReply
	err := c.call(ctx, "Signal", &coreCall{Name: name, Value: value}, &out)
	return int(out.N), err
}

func (c *remoteCore) SignalAtLeast(ctx context.Context, name string, value []byte, min int) (int, error) {
	if min < 1 {
		return c.Signal(ctx, name, value)
	}
	var out coreReply
	err := c.call(ctx, "Signal", &coreCall{Name: name, Value: value, Min: min}, &out)
	return int(out.N), err
}

func (c *remoteCore) Publish(ctx context.Context, topic string, msg []byte) (uint64, error) {
	var out coreReply
	err := c.call(ctx, "Publish", &coreCall{Name: topic, Value: msg}, &out)
	return out.N, err
}

func (c *remoteCore) Subscribe(ctx context.Context, topic string, from runner.Position) (runner.Subscription, error) {
	var out coreReply
	err := c.call(ctx, "Subscribe", &coreCall{Name: topic, From: from.String()}, &out)
	if err != nil {
		return nil, err
	}
	sub := &remoteSub{c: c, id: out.N}
	sub.stop = context.AfterFunc(ctx, func() { _ = sub.Close() })
	return sub, nil
}

type remoteSub struct {
	c    *remoteCore
	id   uint64
	once sync.Once
	stop func() bool
}

func (s *remoteSub) Fetch(ctx context.Context) ([]runner.Message, error) {
	var out coreReply
	err := s.c.call(ctx, "Fetch", &coreCall{Sub: s.id}, &out)
	return out.Messages, err
}

func (s *remoteSub) Close() error {
	s.once.Do(func() {
		if s.stop != nil {
			s.stop()
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.c.call(ctx, "CloseSubscription", &coreCall{Sub: s.id}, new(coreReply))
	})
	return nil
}

// Request scopes. A request's context may carry a Core other than the one
// served to plugins: runner.Runner gives requests a runner.CoreScope, which
// it closes when shutdown begins so that every parked wait of a request
// returns ErrClosed at once and its handler can answer. For a request
// forwarded into a plugin to behave the same, the host registers the
// request's Core under a number for the length of the request and sends the
// number with the exchange (gRPC metadata scopeKey); the plugin's Core for
// that request names it in every call, and the host runs the call on that
// Core. Calls naming a scope that has ended fail with ErrClosed.

// scopeKey is the metadata key of the request scope number.
const scopeKey = "paster-core-scope"

// numbered holds values the host names to plugins by number, each number
// unique within it. A mutex and a map rather than a sync.Map: every
// request into a plugin under a runner adds and removes its scope, and a
// sync.Map, made for keys written once and read often, allocated for
// each and cost the host ~4% of its CPU when one Signal woke 10,000
// parked plugin requests (perf, bench/run.sh parked).
type numbered[T any] struct {
	mu   sync.RWMutex
	next uint64
	m    map[uint64]T
}

func (n *numbered[T]) add(v T) uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.m == nil {
		n.m = map[uint64]T{}
	}
	n.next++
	n.m[n.next] = v
	return n.next
}

func (n *numbered[T]) remove(id uint64) {
	n.mu.Lock()
	delete(n.m, id)
	n.mu.Unlock()
}

func (n *numbered[T]) load(id uint64) (T, bool) {
	n.mu.RLock()
	v, ok := n.m[id]
	n.mu.RUnlock()
	return v, ok
}

// scopes holds the Cores of requests in flight into plugins, by number.
type scopes struct{ numbered[runner.Core] }

// get returns the Core of scope id, or one whose operations fail with
// ErrClosed when the request has ended.
func (s *scopes) get(id uint64) runner.Core {
	if c, ok := s.load(id); ok {
		return c
	}
	return endedScope
}

// endedScope is a closed CoreScope: the Core of calls whose request has
// ended.
var endedScope = func() runner.Core {
	sc := runner.NewCoreScope(runner.CoreFrom(context.Background()))
	sc.Close()
	return sc
}()

// requestScope returns the opener to forward r with: o itself when r's
// Core is the one served to plugins (or r has none), else o sending the
// number of r's Core, registered until done is called.
func (h *Host) requestScope(r *http.Request, o transport.Opener) (transport.Opener, func()) {
	if !runner.HasCore(r.Context()) {
		return o, func() {}
	}
	c := runner.CoreFrom(r.Context())
	if sameCore(c, h.coreFor()) {
		return o, func() {}
	}
	id := h.scopes.add(c)
	return scopedOpener{o, id}, func() { h.scopes.remove(id) }
}

// scopedOpener opens exchanges that carry a request scope number.
type scopedOpener struct {
	transport.Opener
	id uint64
}

func (o scopedOpener) Open(ctx context.Context) (transport.Stream, error) {
	if _, ok := o.Opener.(*transport.Mux); ok {
		return o.Opener.Open(transport.WithTag(ctx, o.id))
	}
	return o.Opener.Open(metadata.AppendToOutgoingContext(ctx, scopeKey, strconv.FormatUint(o.id, 10)))
}

// scopeOf returns the request scope number an exchange carries, or 0.
func scopeOf(ctx context.Context) uint64 {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(scopeKey); len(v) == 1 {
		id, _ := strconv.ParseUint(v[0], 10, 64)
		return id
	}
	return 0
}

// sameCore reports whether a and b are the same Core (false for Cores of a
// type that cannot be compared).
func sameCore(a, b runner.Core) (same bool) {
	defer func() {
		if recover() != nil {
			same = false
		}
	}()
	return a == b
}

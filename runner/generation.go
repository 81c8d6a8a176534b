package runner

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// # Generations
//
// A generation is one load of the configuration: its apps, startup
// coroutines and plugin instances. paster serve keeps one generation current
// and builds the next one completely on reload (loaded, instances created,
// coroutines ready) before it is swapped in; the previous one is drained.
//
// The pieces that belong to serving, and so live in this package, are:
//
//   - Front, the long-lived http.Handler a server runner is given. It hands
//     each request to the current Mount. Swapping the Mount is how a reload
//     that changes only apps takes effect: the server, its listener and its
//     connections are untouched, and no request is refused or cut.
//   - Mount, one generation's app as seen by the Front: it counts the
//     generation's requests, gives them a CoreScope of their own and, when
//     retired, lets the drain wait for them and then answer those still
//     parked (Cut).
//   - ListenerPool, sockets kept across server restarts: a server-section
//     change starts the new server on the same listening socket while the
//     old one still accepts, so no connection is refused (WithListeners;
//     HTTPServer.Serve takes its listener from the pool when ctx has one,
//     and a server in a plugin process from the host's pool, lent to it).

// Front is the http.Handler a server is given when its apps can be swapped
// underneath it. A request is served by the Mount current when it arrives,
// until it ends, even if another Mount is swapped in meanwhile. Before the
// first Swap the Front answers 503.
type Front struct {
	cur atomic.Pointer[Mount]
}

// NewFront returns a Front serving m (nil: 503 until the first Swap).
func NewFront(m *Mount) *Front {
	f := &Front{}
	f.cur.Store(m)
	return f
}

// Swap makes m current and returns the previous Mount (nil if none). Requests
// that already entered the previous Mount stay with it; Retire and Cut it to
// drain them.
func (f *Front) Swap(m *Mount) *Mount { return f.cur.Swap(m) }

// Current returns the current Mount.
func (f *Front) Current() *Mount { return f.cur.Load() }

func (f *Front) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	for {
		m := f.Current()
		if m == nil {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "no application loaded yet", http.StatusServiceUnavailable)
			return
		}
		if m.serve(w, r) {
			return
		}
		// m was retired between Current and serve: the next one is current.
	}
}

// Mount is one generation's app as the Front serves it. Each request it
// serves gets, in its context, the Mount's CoreScope as its Core (so that Cut
// can answer parked waits of this generation only) and a cancellation that
// Cut triggers.
type Mount struct {
	app   http.Handler
	scope *CoreScope
	wrap  func(*http.Request) *http.Request

	isCut atomic.Bool // Cut ran

	// state counts the requests in flight, plus retiredBit once retired:
	// one atomic add per request on entry and one on leaving.
	state    atomic.Int64
	idleOnce sync.Once
	idle     chan struct{} // closed when retired and no request is in flight

	// cancels holds the requests in flight whose context's cancellation
	// is built (mountContext), for Cut. A request registers in the shard
	// its entry count picks, so that requests served at once on different
	// CPUs rarely share a lock.
	cancels cancelSet
}

// retiredBit marks a retired Mount's state.
const retiredBit = 1 << 62

// NewMount returns a Mount serving app with a new CoreScope over core. wrap,
// if not nil, may add to each request's context before app sees it (paster
// serve adds its observability registry).
func NewMount(app http.Handler, core Core, wrap func(*http.Request) *http.Request) *Mount {
	return &Mount{app: app, scope: NewCoreScope(core), wrap: wrap, idle: make(chan struct{})}
}

// Scope returns the CoreScope the Mount's requests get as their Core.
func (m *Mount) Scope() *CoreScope { return m.scope }

// InFlight returns how many requests the Mount is serving.
func (m *Mount) InFlight() int { return int(m.state.Load() &^ retiredBit) }

// serve serves r unless m is retired; it reports whether it did.
func (m *Mount) serve(w http.ResponseWriter, r *http.Request) bool {
	n := m.state.Add(1)
	if n&retiredBit != 0 {
		m.leave()
		return false
	}
	defer m.leave()

	c := &mountContext{Context: r.Context(), m: m, n: uint64(n)}
	defer c.release()
	// The request with c as its context is kept in c's allocation: the
	// copy r.WithContext makes does not escape (it is inlined), so it
	// costs no allocation of its own.
	c.req = *r.WithContext(c)
	r = &c.req
	if m.wrap != nil {
		r = m.wrap(r)
	}
	m.app.ServeHTTP(w, r)
	return true
}

// mountContext is the context of a request a Mount serves: the request's
// own, with the Mount's CoreScope as its Core, cancelled also by Cut. Its
// cancellation is built only when asked for (Done, or Err or Value once
// the Mount is cut), and only then is the request registered for Cut: a
// request whose handler never waits on its context costs this one
// allocation (the request the app gets, with this context, is in it), no
// registration in the request's context, which context.WithCancelCause
// costs every request (a cancelCtx, its cancel func, an entry in
// net/http's context's children), and no registration in the Mount's.
// Cut marks the Mount cut before it cancels the registered ones, and a
// context building its cancellation registers before it looks at the
// mark, so none is missed.
type mountContext struct {
	context.Context // the request's own, until cancel is built
	m               *Mount
	n               uint64 // the request's entry count: its shard in m.cancels

	// attached is 0, 1 while Attach writes key and val, 2 once they are
	// set (Attach).
	attached atomic.Int32
	built    atomic.Bool // ctx and cancelFn are set, the request registered for Cut
	key, val any

	req http.Request // the request with this context, as the app gets it

	mu       sync.Mutex // builds ctx and cancelFn once
	ctx      context.Context
	cancelFn context.CancelCauseFunc
}

// Attach makes ctx answer val for key (ctx.Value(key)) when ctx is, or
// derives from, the context of a request a Mount serves and nothing is
// attached to that request yet; it reports whether it did. A layer that
// would add one value to each request's context (observe.Instrument) saves
// the context and the copy of the request (http.Request.WithContext) that
// costs, and falls back to them when Attach reports false. key must be
// comparable; what is attached stays for the request's life.
func Attach(ctx context.Context, key, val any) bool {
	c, ok := ctx.Value(mountKey{}).(*mountContext)
	if !ok || !c.attached.CompareAndSwap(0, 1) {
		return false
	}
	c.key, c.val = key, val
	c.attached.Store(2)
	return true
}

// mountKey finds a request's mountContext (Attach).
type mountKey struct{}

// cancellable returns the request's context with its own cancellation,
// built on first use.
func (c *mountContext) cancellable() context.Context {
	if c.built.Load() {
		return c.ctx
	}
	c.mu.Lock()
	if !c.built.Load() {
		c.ctx, c.cancelFn = context.WithCancelCause(c.Context)
		c.m.cancels.add(c.n, c, c)
		c.built.Store(true)
	}
	c.mu.Unlock()
	if c.m.isCut.Load() {
		// Cut ran before the request registered: it may have missed it.
		c.cancelFn(ErrClosed)
	}
	return c.ctx
}

// cancel cancels the request's context with cause (Cut).
func (c *mountContext) cancel(cause error) {
	c.cancellable()
	c.cancelFn(cause)
}

// release releases the cancellation, if built, when the request ends (its
// context is done then anyway: net/http cancels its own).
func (c *mountContext) release() {
	if c.built.Load() {
		c.m.cancels.shard(c.n).remove(c)
		c.cancelFn(nil)
	}
}

// Done is the request's context's, or Cut's if it comes first.
func (c *mountContext) Done() <-chan struct{} { return c.cancellable().Done() }

// Err is Done's.
func (c *mountContext) Err() error { return c.current().Err() }

// current is the context that answers Err and Value: the one with the
// request's own cancellation once built or once the Mount is cut (which
// builds it), else the request's own.
func (c *mountContext) current() context.Context {
	if c.built.Load() || c.m.isCut.Load() {
		return c.cancellable()
	}
	return c.Context
}

// Value answers the Core itself (CoreFrom) and what Attach attached, and
// asks current for anything else (so that context.Cause tells Cut's cause).
func (c *mountContext) Value(key any) any {
	switch key.(type) {
	case coreKey:
		return Core(c.m.scope)
	case mountKey:
		return c
	}
	if c.attached.Load() == 2 && c.key == key {
		return c.val
	}
	return c.current().Value(key)
}

func (m *Mount) leave() {
	if m.state.Add(-1) == retiredBit {
		m.idleOnce.Do(func() { close(m.idle) })
	}
}

// Retire stops m from taking new requests (a Front that still has m current
// answers them with the next Mount only after Swap, so Swap first) and
// returns a channel closed when its last request has ended. Retire is
// idempotent.
func (m *Mount) Retire() <-chan struct{} {
	if m.state.Or(retiredBit)&^retiredBit == 0 {
		m.idleOnce.Do(func() { close(m.idle) })
	}
	return m.idle
}

// Cut gives every request still in m a definite end: their parked waits on
// the Core (WaitForSignal, SignalAtLeast, Fetch, Sleep) return an error
// wrapping ErrClosed at once, so in-process handlers can answer, and their
// contexts are cancelled with cause ErrClosed, which ends requests forwarded
// to plugins. Cut is idempotent.
func (m *Mount) Cut() {
	m.isCut.Store(true)
	m.scope.Close()
	m.cancels.cancelAll(ErrClosed)
}

// AnswerParked answers the parked waits of m's requests (their CoreScope
// closes: WaitForSignal, SignalAtLeast, Fetch and Sleep return an error
// wrapping ErrClosed at once, in plugins too) without cancelling the
// requests, so that handlers can write their answer and requests that are
// not waiting on the Core (an upload still arriving) go on. Cut does both.
func (m *Mount) AnswerParked() { m.scope.Close() }

// Drain retires m and waits for its requests: until they end, or until
// grace minus a margin (a quarter of grace, at most a second) has passed,
// when it cuts the rest (Cut) and waits for them until grace has passed. It
// returns how many requests were still running at the end (0 when all
// ended). grace <= 0 cuts at once and waits for the requests without limit.
func (m *Mount) Drain(grace time.Duration) int {
	idle := m.Retire()
	if grace <= 0 {
		m.Cut()
		<-idle
		return 0
	}
	margin := min(grace/4, time.Second)
	t := time.NewTimer(grace - margin)
	defer t.Stop()
	select {
	case <-idle:
		m.Cut()
		return 0
	case <-t.C:
	}
	m.Cut()
	t.Reset(margin)
	select {
	case <-idle:
		return 0
	case <-t.C:
		return m.InFlight()
	}
}

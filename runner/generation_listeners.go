package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// ListenerPool keeps listening sockets open across server restarts. A server
// that takes its listener from the pool (HTTPServer.Serve does when its ctx
// carries one, see WithListeners) gets a handle on the socket bound to its
// address, binding it the first time. Closing a handle, as a server does when
// it shuts down, detaches that server only: the socket stays open and the
// kernel keeps queueing connections until another handle accepts them. So a
// new server started on the same address while the old one still runs shares
// the socket, and when the old one stops nothing is refused.
//
// Connections are accepted by one goroutine per socket and handed to
// whichever open handle asks first; a connection accepted while no handle is
// open waits for the next one. A failed accept (out of file descriptors, for
// one) never closes the socket: the goroutine logs it to hclog's default
// logger named "listener", backs off (5ms doubling to 1s) and accepts again.
// Prune closes the sockets no handle uses; Close closes them all.
//
// A unix socket (an address unix:PATH) is bound with its stale file
// removed first and its file's mode set, and its file is removed when the
// pool closes it. Sockets adopted from systemd (Adopt) are never pruned:
// they cannot be bound again.
type ListenerPool struct {
	mu     sync.Mutex
	socks  map[string]*sharedSock
	closed bool
	// several counts the sockets adopted under a name shared by more than
	// one (systemd:NAME cannot choose among them).
	several map[string]int
}

// NewListenerPool returns an empty pool.
func NewListenerPool() *ListenerPool { return &ListenerPool{socks: map[string]*sharedSock{}} }

// ListenerSource gives servers their listeners: a ListenerPool, or a view of
// one that reports binding (ListenerPool.View).
type ListenerSource interface {
	// Listen returns a listener for addr: host:port, unix:PATH or
	// systemd:NAME (see the address forms in listen.go); opt sets what
	// a new unix socket's file is made with.
	Listen(addr string, opt ListenOptions) (net.Listener, error)
}

type listenersKey struct{}

// WithListeners returns a copy of ctx carrying src: HTTPServer.Serve then
// takes its listener from src instead of binding one itself.
func WithListeners(ctx context.Context, src ListenerSource) context.Context {
	return context.WithValue(ctx, listenersKey{}, src)
}

// ListenersFrom returns the ListenerSource ctx carries, or nil.
func ListenersFrom(ctx context.Context) ListenerSource {
	src, _ := ctx.Value(listenersKey{}).(ListenerSource)
	return src
}

// Listen returns a new handle on the socket bound to addr, binding it if the
// pool has none. An address with port 0 always binds a new socket (it cannot
// be matched). A unix socket the pool holds already gets opt's mode if it
// had another. A bind failure names the address.
func (p *ListenerPool) Listen(addr string, opt ListenOptions) (net.Listener, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, fmt.Errorf("listen on %s: listener pool %w", addr, net.ErrClosed)
	}
	if n := p.several[addr]; n > 0 {
		return nil, fmt.Errorf("http: listen on %s: systemd passed %d sockets of that name; give each its own FileDescriptorName= in the .socket unit, or name one by its address", addr, n)
	}
	s := p.socks[addr]
	if s == nil {
		ln, err := listen(addr, opt)
		if err != nil {
			return nil, err
		}
		s = newSharedSock(ln)
		s.path, s.mode = SocketPath(addr), opt.mode()
		key := addr
		if _, port, _ := net.SplitHostPort(addr); port == "0" {
			key = ln.Addr().String()
		}
		p.socks[key] = s
	} else if s.path != "" && s.mode != opt.mode() {
		if err := chmodSocket(s.path, opt.mode()); err != nil {
			return nil, fmt.Errorf("http: listen on %s: %w", addr, err)
		}
		s.mode = opt.mode()
	}
	return s.handle(), nil
}

// Adopt puts sockets bound by someone else, systemd's socket activation
// (LISTEN_FDS; go-systemd's activation.ListenersWithNames), in the pool by
// name: each under systemd:NAME, and under its own address, so that a server
// section asking for that address takes it instead of binding (a TCP
// socket on a wildcard address under 0.0.0.0:PORT, [::]:PORT and :PORT
// alike; a unix one under unix:PATH). When a single socket is passed it is
// also systemd: (no name). A name given to several sockets names none of
// them (Listen explains). Adopted sockets stay open until Close, whether a
// server uses them or not, and their files are left to systemd.
func (p *ListenerPool) Adopt(named map[string][]net.Listener) {
	p.mu.Lock()
	defer p.mu.Unlock()
	total := 0
	for name, lns := range named {
		for _, ln := range lns {
			total++
			s := newSharedSock(ln)
			s.adopted = true
			for _, k := range addrKeys(ln.Addr()) {
				p.socks[k] = s
			}
			if len(lns) == 1 {
				p.socks[SystemdPrefix+name] = s
			}
		}
		if len(lns) > 1 {
			if p.several == nil {
				p.several = map[string]int{}
			}
			p.several[SystemdPrefix+name] = len(lns)
		}
	}
	if total == 1 {
		for name := range named {
			p.socks[SystemdPrefix] = p.socks[SystemdPrefix+name]
		}
	}
}

// addrKeys returns the addresses a server section may name a socket bound
// to a by.
func addrKeys(a net.Addr) []string {
	switch a := a.(type) {
	case *net.UnixAddr:
		return []string{UnixPrefix + a.Name}
	case *net.TCPAddr:
		if a.IP == nil || a.IP.IsUnspecified() {
			port := strconv.Itoa(a.Port)
			return []string{"0.0.0.0:" + port, "[::]:" + port, ":" + port}
		}
		return []string{a.String()}
	}
	return []string{a.String()}
}

// IdleAdopted returns the addresses (network:address) of the adopted
// sockets no server has a handle on: sockets systemd passed that no server
// section names.
func (p *ListenerPool) IdleAdopted() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	seen := map[*sharedSock]bool{}
	var out []string
	for _, s := range p.socks {
		if s.adopted && !seen[s] && s.unused() {
			seen[s] = true
			out = append(out, s.ln.Addr().Network()+":"+s.ln.Addr().String())
		}
	}
	sort.Strings(out)
	return out
}

// SocketFiles returns the files of the unix sockets the pool bound (not
// those adopted): paster serve gives them to the user it drops privileges
// to, so that it can still remove them.
func (p *ListenerPool) SocketFiles() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, s := range p.socks {
		if s.path != "" && !s.adopted {
			out = append(out, s.path)
		}
	}
	return out
}

// Addrs returns the addresses the pool holds sockets under (an adopted
// socket has several).
func (p *ListenerPool) Addrs() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]string, 0, len(p.socks))
	for k := range p.socks {
		out = append(out, k)
	}
	return out
}

// Prune closes the sockets that no open handle uses and returns their
// addresses. Connections they had accepted but not handed out are closed.
func (p *ListenerPool) Prune() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for k, s := range p.socks {
		if !s.adopted && s.unused() {
			s.close()
			delete(p.socks, k)
			out = append(out, k)
		}
	}
	return out
}

// Close closes every socket; open handles' Accept then fails with
// net.ErrClosed. Later Listen calls fail.
func (p *ListenerPool) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for k, s := range p.socks {
		s.close()
		delete(p.socks, k)
	}
	return nil
}

// View returns a ListenerSource over the pool for one server: it reports,
// on Bound, when the server took its first listener, and Detach hands the
// server's share of the sockets over to the other servers before it is shut
// down.
func (p *ListenerPool) View() *ListenerView {
	return &ListenerView{pool: p, bound: make(chan struct{})}
}

// ListenerView is a ListenerSource over a ListenerPool; see View.
type ListenerView struct {
	pool  *ListenerPool
	once  sync.Once
	bound chan struct{}

	mu      sync.Mutex
	handles []*sockHandle
}

// Listen is ListenerPool.Listen; the first success closes Bound.
func (v *ListenerView) Listen(addr string, opt ListenOptions) (net.Listener, error) {
	ln, err := v.pool.Listen(addr, opt)
	if err != nil {
		return nil, err
	}
	h := ln.(*sockHandle)
	v.mu.Lock()
	v.handles = append(v.handles, h)
	v.mu.Unlock()
	v.once.Do(func() { close(v.bound) })
	return h, nil
}

// Bound is closed once a listener has been taken through v.
func (v *ListenerView) Bound() <-chan struct{} { return v.bound }

// Detach makes the listeners taken through v stop taking connections, so
// that other handles on the same sockets get them all, and waits until every
// connection they did take has had its first request reach a handler (or
// failed, or was closed), at most for d. It reports whether they all had.
//
// Shut a server down only after Detach: net/http closes, without an answer,
// a connection whose first request it reads after Shutdown began, so a
// connection handed to a server just before its shutdown would be lost.
func (v *ListenerView) Detach(d time.Duration) bool {
	v.mu.Lock()
	hs := append([]*sockHandle(nil), v.handles...)
	v.mu.Unlock()
	for _, h := range hs {
		h.detach()
	}
	deadline := time.Now().Add(d)
	for _, h := range hs {
		if !h.settled(deadline) {
			return false
		}
	}
	return true
}

// sharedSock is one listening socket and its accept loop.
type sharedSock struct {
	ln    net.Listener
	conns chan net.Conn
	done  chan struct{} // closed when the socket is closed
	once  sync.Once
	log   hclog.Logger
	// path and mode are a unix socket's file and its mode ("" for
	// others); adopted says that systemd bound it.
	path    string
	mode    fs.FileMode
	adopted bool

	mu      sync.Mutex
	handles int
}

func newSharedSock(ln net.Listener) *sharedSock {
	s := &sharedSock{ln: ln, conns: make(chan net.Conn), done: make(chan struct{}),
		log: hclog.Default().Named("listener")}
	go s.acceptLoop()
	return s
}

// Backoff of the accept loop after a failed accept, as net/http's
// Server.Serve does it: from acceptBackoffMin doubling to acceptBackoffMax.
const (
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
	// acceptErrorLogEvery is how often a run of failing accepts is logged
	// again while it lasts.
	acceptErrorLogEvery = time.Minute
)

// acceptLoop accepts connections until the socket is closed. A failed
// accept never closes the socket: out of file descriptors (EMFILE, ENFILE),
// out of memory, a connection aborted before it was taken — the loop waits,
// 5ms doubling up to 1s, and accepts again on the same socket, so that the
// server serves again as soon as descriptors are free. The first failure of
// a run is logged, then once a minute while it lasts, and the recovery.
func (s *sharedSock) acceptLoop() {
	var (
		delay    time.Duration
		failures int
		loggedAt time.Time
	)
	for {
		c, err := s.ln.Accept()
		if err != nil {
			select {
			case <-s.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				s.close()
				return
			}
			failures++
			delay = min(max(2*delay, acceptBackoffMin), acceptBackoffMax)
			if failures == 1 || time.Since(loggedAt) >= acceptErrorLogEvery {
				loggedAt = time.Now()
				s.log.Warn("accept failed; the socket stays open, retrying", "addr", s.ln.Addr().String(),
					"error", err, "failures", failures, "retry_in", delay)
			}
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-s.done:
				t.Stop()
				return
			}
			continue
		}
		if failures > 0 {
			s.log.Info("accepting again", "addr", s.ln.Addr().String(), "failed_accepts", failures)
			failures, delay = 0, 0
		}
		select {
		case s.conns <- c:
		case <-s.done:
			c.Close()
			return
		}
	}
}

func (s *sharedSock) requeue(c net.Conn) {
	select {
	case s.conns <- c:
	case <-s.done:
		c.Close()
	}
}

func (s *sharedSock) handle() *sockHandle {
	s.mu.Lock()
	s.handles++
	s.mu.Unlock()
	return &sockHandle{s: s, closed: make(chan struct{}), detached: make(chan struct{})}
}

func (s *sharedSock) unused() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.handles == 0
}

func (s *sharedSock) close() {
	s.once.Do(func() {
		close(s.done)
		s.ln.Close()
	})
}

// sockHandle is one server's net.Listener on a sharedSock.
type sockHandle struct {
	s          *sharedSock
	once       sync.Once
	closed     chan struct{}
	detachOnce sync.Once
	detached   chan struct{}
	// fresh counts the connections handed out whose first request has not
	// reached a handler yet.
	fresh atomic.Int64
}

func (h *sockHandle) detach() { h.detachOnce.Do(func() { close(h.detached) }) }

// Detach stops the handle from taking connections and waits, at most d,
// until those it took have had their first request reach a handler; it
// reports whether they all had. HTTPServer calls it before shutting down on a pooled socket.
func (h *sockHandle) Detach(d time.Duration) bool {
	h.detach()
	return h.settled(time.Now().Add(d))
}

func (h *sockHandle) settled(deadline time.Time) bool {
	for h.fresh.Load() > 0 {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

func (h *sockHandle) Accept() (net.Conn, error) {
	// A closed or detached handle never takes a connection, even if one is
	// ready; a detached one waits for its Close.
	conns, detached := h.s.conns, h.detached
	for {
		select {
		case <-h.closed:
			return nil, net.ErrClosed
		case <-detached:
			conns, detached = nil, nil
			continue
		default:
		}
		select {
		case c := <-conns:
			// Counted before the check, so that a Detach that closes
			// detached after the check finds it fresh and waits for it.
			h.fresh.Add(1)
			select {
			case <-h.closed:
			case <-h.detached:
			default:
				return &trackedConn{Conn: c, h: h}, nil
			}
			h.fresh.Add(-1)
			// Closed or detached meanwhile: the server might drop c;
			// give it back for another handle.
			go h.s.requeue(c)
		case <-detached:
			conns, detached = nil, nil
		case <-h.closed:
			return nil, net.ErrClosed
		case <-h.s.done:
			return nil, net.ErrClosed
		}
	}
}

// Close detaches the handle; the socket stays open for other handles.
func (h *sockHandle) Close() error {
	h.once.Do(func() {
		close(h.closed)
		h.s.mu.Lock()
		h.s.handles--
		h.s.mu.Unlock()
	})
	return nil
}

func (h *sockHandle) Addr() net.Addr { return h.s.ln.Addr() }

// trackedConn counts, for Detach, a connection until its first request
// reaches a handler (FirstRequest), it fails to read, or it is closed.
type trackedConn struct {
	net.Conn
	h    *sockHandle
	done atomic.Bool
}

func (c *trackedConn) settle() {
	if c.done.CompareAndSwap(false, true) {
		c.h.fresh.Add(-1)
	}
}

// FirstRequest implements FreshConn.
func (c *trackedConn) FirstRequest() { c.settle() }

func (c *trackedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if err != nil {
		c.settle()
	}
	return n, err
}

func (c *trackedConn) Close() error {
	c.settle()
	return c.Conn.Close()
}

// ReadFrom keeps sendfile for responses (net/http's response body copy).
func (c *trackedConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

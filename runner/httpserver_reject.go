package runner

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// net/http answers a request it cannot read (a header over MaxHeaderBytes,
// a malformed request line) itself, before any handler runs, by writing a
// fixed reply straight to the connection: "HTTP/1.1 431 Request Header
// Fields Too Large" + ownReplyHeaders + a text. It offers no hook for it,
// so the server watches the connection's writes for that reply
// (rejectConn) and tells the handler (RejectObserver), so that metrics and
// access logs count these requests too. A handler's response is not
// mistaken for such a reply: only a write made while no handler runs on the
// connection, that is exactly one whole reply (status line, these headers
// in this order, which net/http never writes for a handler since it sorts
// headers, and the matching text), counts.
const ownReplyHeaders = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"

// maxHeadCapture bounds how much of a request's beginning a rejectConn
// keeps to name the request line of a request net/http rejects.
const maxHeadCapture = 4 << 10

// rejectListener wraps each accepted connection in a rejectConn, and
// keeps the open ones: so that the requests in flight on them can be
// counted (inFlight) without a counter shared by every request, and so
// that one timer ends those idle past idle_timeout (expireIdle).
type rejectListener struct {
	net.Listener
	observe      func(r *http.Request, code int)
	writeTimeout time.Duration // write_timeout, armed by each rejectConn (see rejectConn.armWrite)
	idleTimeout  time.Duration // idle_timeout, kept by each rejectConn (see rejectConn.idle)

	mu        sync.Mutex
	conns     map[*rejectConn]struct{} // open: accepted and not closed
	idleTimer *time.Timer              // runs expireIdle; pending while conns is not empty
	idleArmed bool
	closed    bool // Close was called: once conns is empty, nothing is left to watch
}

// inFlight returns the number of handlers running on the listener's
// connections.
func (l *rejectListener) inFlight() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	var n int64
	for c := range l.conns {
		v := c.reqs.Load()
		n += int64(uint32(v>>32) - uint32(v))
	}
	return n
}

// armIdle has expireIdle run in d, unless it is pending or idle_timeout
// is off. l.mu is held.
func (l *rejectListener) armIdle(d time.Duration) {
	if l.idleArmed || l.idleTimeout <= 0 {
		return
	}
	if l.idleTimer == nil {
		l.idleTimer = time.AfterFunc(d, l.expireIdle)
	} else {
		l.idleTimer.Reset(d)
	}
	l.idleArmed = true
}

// expireIdle ends the connections idle until their idle deadline (see
// rejectConn.idle) by setting a read deadline in the past: net/http's wait
// for the next request fails as at its own idle deadline, and it closes
// the connection. It runs again at the next idle deadline, or an
// idle_timeout from now (one that starts later ends later), while the
// listener has connections. A request arriving just as the idle time
// ends may be cut, as at net/http's own deadline.
func (l *rejectListener) expireIdle() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.idleArmed = false
	now, next := clock(), l.idleTimeout
	for c := range l.conns {
		until := c.idle.Load()
		if until <= 0 {
			continue
		}
		if wait := time.Duration(until - now); wait > 0 {
			next = min(next, wait)
		} else if c.idle.CompareAndSwap(until, 0) {
			c.Conn.SetReadDeadline(aLongTimeAgo)
		}
	}
	if len(l.conns) > 0 {
		l.armIdle(next)
	}
}

// aLongTimeAgo is a deadline that has passed: set, it makes a waiting
// read fail at once.
var aLongTimeAgo = time.Unix(1, 0)

// Close closes the listener; its connections stay open, and idle_timeout
// still ends them.
func (l *rejectListener) Close() error {
	l.mu.Lock()
	l.closed = true
	l.stopIdle()
	l.mu.Unlock()
	return l.Listener.Close()
}

// stopIdle stops the timer of expireIdle once the listener is closed and
// has no connections left. l.mu is held.
func (l *rejectListener) stopIdle() {
	if l.closed && len(l.conns) == 0 && l.idleTimer != nil {
		l.idleTimer.Stop()
		l.idleArmed = false
	}
}

func (l *rejectListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	rc := &rejectConn{keptConn: keptConn{c}, l: l, observe: l.observe, writeTimeout: l.writeTimeout, idleTimeout: l.idleTimeout}
	if cc, ok := c.(*capConn); ok {
		// One wrapper on every read and write instead of two: the
		// rejectConn gives the max_connections slot back itself.
		rc.keptConn, rc.capped = cc.keptConn, cc
	}
	l.mu.Lock()
	if l.conns == nil {
		l.conns = map[*rejectConn]struct{}{}
	}
	l.conns[rc] = struct{}{}
	l.armIdle(l.idleTimeout)
	l.mu.Unlock()
	return rc, nil
}

// rejectConn is a connection as net/http uses it. It keeps the bytes read
// since the last request reached a handler (up to maxHeadCapture), and when
// net/http writes one of its own error replies on it, reports the rejected
// request with what those bytes tell about it. Once it has served an HTTP/1
// request it also bounds each write with write_timeout (armWrite) and
// keeps idle_timeout between requests (idle).
type rejectConn struct {
	keptConn
	l        *rejectListener
	observe  func(r *http.Request, code int)
	capped   *capConn        // the capListener's connection, closed by Close; nil without max_connections
	ctx      context.Context // the connection's context (ConnContext)
	hijacked atomic.Bool     // a handler owns the connection; stop watching

	// reqs counts the handlers started on the connection (high 32 bits)
	// and those returned (low 32 bits): one atomic add for each.
	reqs atomic.Uint64

	// head holds the bytes read since the request numbered headGen (reqs'
	// high half) reached its handler. Only Read and net/http's own replies
	// (Write) touch it, and net/http never has them run at once on an
	// HTTP/1 connection (its background read ends before it writes; on an
	// HTTP/2 one Write never sees an HTTP/1 reply), so it needs no lock: a
	// Read that finds a newer request started drops what it holds first.
	head    []byte
	headGen uint32

	// write_timeout over HTTP/1 is the connection's: every write to the
	// socket (a handler's response as net/http flushes it, the final
	// flush after the handler returned, sendfile, 100 Continue, net/http's
	// own replies) gets a write deadline at least 15/16 of write_timeout
	// away (armWrite), so handlers get net/http's own writer with nothing
	// to add per write. The deadline is kept across requests: net/http
	// clears it after each response, and the next write would set it
	// again, two runtime timer updates per request for a deadline that
	// has barely moved; the clearing is skipped instead and the next write
	// takes the deadline over while it is fresh. HTTP/1 only (http1: an
	// h2c connection's HTTP/2 server sets its own deadlines); a hijack,
	// and a deadline a handler sets for its response (appWrite), end it.
	writeTimeout time.Duration
	http1        atomic.Bool  // an HTTP/1 request was served on the connection
	appWrite     atomic.Bool  // the running response's handler set its own write deadline
	armedAt      atomic.Int64 // clock reading armWrite set the deadline at; 0: the deadline is not armWrite's

	// idle_timeout over HTTP/1 is kept by the connection too. net/http
	// sets a read deadline of now+idle_timeout after each response, and
	// the next request's header deadline replaces it: two runtime timer
	// updates per request, and a timer pending between requests on every
	// connection. Instead the connection takes that idle deadline (the
	// first one in the future after an HTTP/1 handler returned, while no
	// deadline a handler set is in force) into idle without arming it,
	// and the listener's one timer ends the connection if it is still idle
	// then (rejectListener.expireIdle). Any other read deadline ends the
	// idle time.
	idleTimeout     time.Duration
	idle            atomic.Int64 // afterResponse, or the clock reading the idle connection ends at (> 0), or 0
	handlerDeadline atomic.Bool  // a handler set a read deadline and it was not cleared since
}

// connState is what the server keeps about one connection, in the
// connection's context (connContext), so that each request finds all of it
// with a single context lookup (connStateOf).
type connState struct {
	reject *rejectConn // nil over TLS
	fresh  FreshConn   // nil unless a pooled or lent listener counts the connection
}

type connStateKey struct{}

// connContext is the http.Server's ConnContext: it gives the connection's
// requests its connState: its rejectConn (requestStarted, hijacked) and
// the FreshConn beneath the server's wrappers, if any.
func connContext(ctx context.Context, c net.Conn) context.Context {
	cs := &connState{fresh: freshConnOf(c)}
	ctx = context.WithValue(ctx, connStateKey{}, cs)
	if rc, ok := c.(*rejectConn); ok {
		cs.reject = rc
		rc.ctx = ctx
	}
	return ctx
}

// connStateOf returns the connState of the connection r arrived on, or nil
// when r was not served by an HTTPServer.
func connStateOf(r *http.Request) *connState {
	cs, _ := r.Context().Value(connStateKey{}).(*connState)
	return cs
}

func (c *rejectConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && !c.hijacked.Load() {
		if gen := c.started(); gen != c.headGen {
			c.head, c.headGen = c.head[:0], gen
		}
		if room := maxHeadCapture - len(c.head); room > 0 {
			c.head = append(c.head, p[:min(n, room)]...)
		}
	}
	return n, err
}

// started is the number of handlers started on the connection (mod 2^32).
func (c *rejectConn) started() uint32 { return uint32(c.reqs.Load() >> 32) }

// running reports whether a handler runs on the connection.
func (c *rejectConn) running() bool {
	v := c.reqs.Load()
	return uint32(v>>32) != uint32(v)
}

// requestStarted notes a handler running until requestDone, which makes
// the bytes read before it no longer the head of a request net/http may
// reject (see head); http1 tells that it is an HTTP/1 request, whose
// writes the connection bounds (armWrite).
func (c *rejectConn) requestStarted(http1 bool) {
	c.reqs.Add(1 << 32)
	if http1 && !c.http1.Load() {
		c.http1.Store(true)
	}
}

// requestDone notes that the handler requestStarted noted has returned;
// after an HTTP/1 one the connection waits for net/http's idle deadline,
// unless the handler hijacked it.
func (c *rejectConn) requestDone(http1 bool) {
	c.reqs.Add(1)
	if http1 && c.idleTimeout > 0 && !c.hijacked.Load() {
		c.idle.Store(afterResponse)
	}
}

// afterResponse is rejectConn.idle after an HTTP/1 handler returned,
// until net/http sets its idle deadline.
const afterResponse = -1

// SetReadDeadline sets the connection's read deadline, but for the idle
// deadline net/http sets after an HTTP/1 response, which the connection
// keeps itself (see idle).
func (c *rejectConn) SetReadDeadline(t time.Time) error {
	if t.IsZero() {
		if c.handlerDeadline.Load() {
			c.handlerDeadline.Store(false)
		}
	} else if t.After(clockBase) { // in the future: not net/http's aLongTimeAgo
		if c.idle.Load() == afterResponse {
			// net/http's idle deadline: the only read deadline it sets
			// between a response and the next request's header.
			if !c.handlerDeadline.Load() {
				c.idle.Store(max(int64(t.Sub(clockBase)), 1))
				return nil
			}
			c.idle.Store(0)
		} else if c.running() {
			c.handlerDeadline.Store(true)
		}
	}
	if c.idle.Load() > 0 {
		c.idle.Store(0) // the next request's header deadline
	}
	return c.Conn.SetReadDeadline(t)
}

// armWrite sets the write deadline to now+write_timeout before a write, or
// keeps the one it set at most write_timeout/16 ago, so that every write
// has at least 15/16 of write_timeout; it does nothing before the
// connection served an HTTP/1 request, after a hijack, and while the
// running response's handler manages the deadline itself.
func (c *rejectConn) armWrite() {
	if !c.arming() {
		return
	}
	wt, now := c.writeTimeout, clock()
	if last := c.armedAt.Load(); last != 0 && time.Duration(now-last) < wt/16 {
		return
	}
	c.armedAt.Store(now)
	c.Conn.SetWriteDeadline(deadlineAt(now, wt))
}

// arming reports whether armWrite bounds the connection's writes.
func (c *rejectConn) arming() bool {
	return c.writeTimeout > 0 && c.http1.Load() && !c.hijacked.Load() && !c.appWrite.Load()
}

// SetWriteDeadline sets the connection's write deadline. One set while a
// handler runs is the handler's (http.ResponseController): armWrite leaves
// the deadline to it until the response ends. net/http's clearing after a
// response ends that and is skipped when the deadline is armWrite's (see
// armedAt).
func (c *rejectConn) SetWriteDeadline(t time.Time) error {
	if c.http1.Load() && !c.hijacked.Load() {
		if c.running() {
			c.appWrite.Store(true)
		} else if t.IsZero() {
			c.appWrite.Store(false)
			if c.armedAt.Load() != 0 {
				return nil
			}
		}
	}
	c.armedAt.Store(0)
	return c.Conn.SetWriteDeadline(t)
}

// SetDeadline sets both deadlines. net/http sets them so on a hijack,
// while the handler runs: from then on the handler owns the connection.
func (c *rejectConn) SetDeadline(t time.Time) error {
	if c.running() {
		c.hijacked.Store(true)
	}
	c.armedAt.Store(0)
	c.idle.Store(0)
	return c.Conn.SetDeadline(t)
}

// Close closes the connection and gives its max_connections slot back.
func (c *rejectConn) Close() error {
	c.l.mu.Lock()
	delete(c.l.conns, c)
	c.l.stopIdle()
	c.l.mu.Unlock()
	if c.capped != nil {
		return c.capped.Close()
	}
	return c.Conn.Close()
}

// ReadFrom is keptConn's (sendfile where the connection has it), with
// the write deadline armed every mebibyte (copyArmed).
func (c *rejectConn) ReadFrom(r io.Reader) (int64, error) {
	if !c.arming() {
		return c.keptConn.ReadFrom(r)
	}
	return copyArmed(c.keptConn, r, c)
}

func (c *rejectConn) Write(p []byte) (int, error) {
	c.armWrite()
	n, err := c.Conn.Write(p)
	if c.running() || c.hijacked.Load() {
		return n, err
	}
	if code, ok := ownReply(p); ok {
		head := c.head
		if c.headGen != c.started() {
			head = nil // read before the last request reached its handler
		}
		r := requestFromHead(head, c.RemoteAddr())
		c.head = c.head[:0]
		ctx := c.ctx
		if ctx == nil {
			ctx = context.Background()
		}
		c.observe(r.WithContext(ctx), code)
	}
	return n, err
}

// ownReply reports whether p is exactly one of net/http's own error
// replies, "HTTP/1.1 STATUS" + ownReplyHeaders + STATUS (or, for 501,
// "Unsupported transfer encoding"), and returns its status code.
func ownReply(p []byte) (int, bool) {
	rest, ok := bytes.CutPrefix(p, []byte("HTTP/1.1 "))
	if !ok || len(rest) == 0 || (rest[0] != '4' && rest[0] != '5') {
		// Most writes are a handler's 2xx or 3xx: not worth a search.
		return 0, false
	}
	status, text, ok := bytes.Cut(rest, []byte(ownReplyHeaders))
	if !ok || len(status) < 3 {
		return 0, false
	}
	code, err := strconv.Atoi(string(status[:3]))
	if err != nil || code < 400 || code > 599 {
		return 0, false
	}
	if !bytes.Equal(text, status) && !(code == http.StatusNotImplemented && string(text) == "Unsupported transfer encoding") {
		return 0, false
	}
	return code, true
}

// requestFromHead makes the request a rejected reply was about from the
// bytes read for it: the request line and Host when they are there and
// well-formed, else a request with an empty Method.
func requestFromHead(head []byte, remote net.Addr) *http.Request {
	r := &http.Request{Header: http.Header{}, Body: http.NoBody, URL: &url.URL{}}
	if remote != nil {
		r.RemoteAddr = remote.String()
	}
	lines := bytes.Split(head, []byte("\r\n"))
	if len(lines) < 2 { // the request line must be complete
		return r
	}
	parts := bytes.Split(lines[0], []byte(" "))
	if len(parts) != 3 {
		return r
	}
	method, target, proto := string(parts[0]), string(parts[1]), string(parts[2])
	major, minor, ok := http.ParseHTTPVersion(proto)
	u, err := url.ParseRequestURI(target)
	if !ok || err != nil || method == "" || !validMethod(method) {
		return r
	}
	r.Method, r.RequestURI, r.URL, r.Proto, r.ProtoMajor, r.ProtoMinor = method, target, u, proto, major, minor
	for _, l := range lines[1:] {
		if k, v, ok := bytes.Cut(l, []byte(":")); ok && http.CanonicalHeaderKey(string(k)) == "Host" {
			r.Host = string(bytes.TrimSpace(v))
			break
		}
	}
	return r
}

// validMethod reports whether m is an HTTP token of letters (GET, POST,
// PROPFIND): enough to tell a request line from the middle of a request.
func validMethod(m string) bool {
	for i := 0; i < len(m); i++ {
		if c := m[i]; c < 'A' || c > 'Z' {
			return false
		}
	}
	return true
}

// watchRejects wraps ln so that net/http's own error replies on its
// connections are reported to app (RejectObserver).
// Its connections bound their writes by writeTimeout (rejectConn.armWrite)
// and keep the idle timeout, idleTimeout, between HTTP/1 requests
// (rejectConn.idle).
func watchRejects(ln net.Listener, app http.Handler, writeTimeout, idleTimeout time.Duration) *rejectListener {
	return &rejectListener{Listener: ln, writeTimeout: writeTimeout, idleTimeout: idleTimeout,
		observe: func(r *http.Request, code int) { ObserveRejected(app, r, code) }}
}

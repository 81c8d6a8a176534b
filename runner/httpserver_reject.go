package runner

import (
	"bytes"
	"container/heap"
	"context"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/paster-dev/paster/internal/rawio"
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
// that one timer ends those whose read deadline the connection kept
// without arming it (see rejectConn.lazy) once it passes (expire).
//
// The timer looks only at the connections that are due: queue is a
// min-heap of the connections that may keep a deadline, by the clock
// reading each is due at (rejectConn.due), never later than the deadline
// it keeps. Looking at every open connection whenever the timer fires, as
// it once did, cost O(N²) per idle_timeout for N idle connections whose
// kept deadlines are staggered (each one's request came at another moment,
// as they do, and as a hostile client makes them), since the timer fires
// at each of those deadlines: 100k idle connections cost tens of seconds
// of CPU every idle_timeout. With the heap each connection is looked at
// about once per deadline period, O(log N) each: O(N log N) per period.
type rejectListener struct {
	net.Listener
	observe      func(r *http.Request, code int)
	writeTimeout time.Duration // write_timeout, armed by each rejectConn (see rejectConn.armWrite)

	mu       sync.Mutex
	conns    map[*rejectConn]struct{} // open: accepted and not closed
	queue    dueQueue                 // the open connections expire is to look at, earliest due first
	timer    *time.Timer              // runs expire
	fireAt   int64                    // the clock reading timer fires at; math.MaxInt64: not pending
	examined int64                    // connections expire looked at, for the tests
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

// keep queues c, which keeps a read deadline at the clock reading at, to
// be looked at then (expire), unless it is due before (see rejectConn.due)
// or closed.
func (l *rejectListener) keep(c *rejectConn, at int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if due := c.due.Load(); !c.closed && (due == 0 || at < due) {
		l.setDue(c, at)
		if at < l.fireAt {
			l.arm(at)
		}
	}
}

// setDue queues c to be looked at at the clock reading at, or moves it
// there. l.mu is held.
func (l *rejectListener) setDue(c *rejectConn, at int64) {
	c.due.Store(at)
	if c.index < 0 {
		heap.Push(&l.queue, c)
	} else {
		heap.Fix(&l.queue, c.index)
	}
}

// unqueue takes c out of the queue, if it is there. l.mu is held.
func (l *rejectListener) unqueue(c *rejectConn) {
	if c.index >= 0 {
		heap.Remove(&l.queue, c.index)
	}
	c.due.Store(0)
}

// arm has expire run at the clock reading at. l.mu is held.
func (l *rejectListener) arm(at int64) {
	d := time.Duration(at - clock())
	if l.timer == nil {
		l.timer = time.AfterFunc(d, l.expire)
	} else {
		l.timer.Reset(d)
	}
	l.fireAt = at
}

// expire sets a read deadline in the past on the connections whose kept
// read deadline has passed: the read net/http waits in fails as at the
// deadline itself, and net/http does what it does then (ends the
// connection, with 400 for a header cut short). It looks only at the
// connections due by now (queue), each once (look), and runs again when
// the next one is due, if any; a connection that keeps an earlier
// deadline moves it (keep).
func (l *rejectListener) expire() {
	l.mu.Lock()
	defer l.mu.Unlock()
	// Not pending from here; armed again below for the first connection
	// due then.
	l.fireAt = math.MaxInt64
	now := clock()
	for len(l.queue) > 0 && l.queue[0].due.Load() <= now {
		l.examined++
		l.look(l.queue[0], now)
	}
	if len(l.queue) > 0 {
		l.arm(l.queue[0].due.Load())
	}
}

// look ends c's wait for a request if the read deadline it keeps passed
// by now, and takes c out of the queue then, as when c keeps none; when c
// keeps a later deadline, c is due at it. l.mu is held.
//
// A SetReadDeadline running meanwhile stores its deadline (lazy), then
// reads c.due, and queues c itself (keep, which waits for l.mu) when c is
// not due by then; look stores c.due, then reads lazy again, and starts
// over when c keeps a deadline its new due time does not cover. Go's
// atomics being sequentially consistent, one of the two sees the other's
// store: a deadline is never left with c due after it.
func (l *rejectListener) look(c *rejectConn, now int64) {
	for {
		switch at := c.lazy.Load(); {
		case at > now:
			l.setDue(c, at)
		case at <= 0: // none kept, or expiring
			l.unqueue(c)
		case c.lazy.CompareAndSwap(at, expiring):
			// A SetReadDeadline meanwhile waits for l.mu (see
			// rejectConn.takeLazy), so that this one goes first; the one
			// it sets then goes to the socket (realRead).
			c.realRead.Store(true)
			c.Conn.SetReadDeadline(aLongTimeAgo)
			l.unqueue(c)
			return
		default:
			continue // another deadline kept meanwhile
		}
		if at, due := c.lazy.Load(), c.due.Load(); at <= 0 || (due != 0 && at >= due) {
			return
		}
	}
}

// dueQueue is a min-heap (container/heap) of connections by their due
// time; each knows its index in it.
type dueQueue []*rejectConn

func (q dueQueue) Len() int           { return len(q) }
func (q dueQueue) Less(i, j int) bool { return q[i].due.Load() < q[j].due.Load() }
func (q dueQueue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].index, q[j].index = i, j
}

func (q *dueQueue) Push(x any) {
	c := x.(*rejectConn)
	c.index = len(*q)
	*q = append(*q, c)
}

func (q *dueQueue) Pop() any {
	old := *q
	c := old[len(old)-1]
	old[len(old)-1] = nil // not retained past its close
	*q = old[:len(old)-1]
	c.index = -1
	return c
}

// expiring is rejectConn.lazy once expire set the passed deadline on the
// socket (or while it does), until the next read deadline set.
const expiring = -1

// aLongTimeAgo is a deadline that has passed: set, it makes a waiting
// read fail at once.
var aLongTimeAgo = time.Unix(1, 0)

func (l *rejectListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	rc := &rejectConn{keptConn: keptConn{c}, l: l, observe: l.observe, writeTimeout: l.writeTimeout, index: -1}
	if cc, ok := c.(*capConn); ok {
		// One wrapper on every read and write instead of two: the
		// rejectConn gives the max_connections slot back itself.
		rc.keptConn, rc.capped = cc.keptConn, cc
	}
	if rawio.Direct() { // else nothing to make per connection
		rc.rw = rawio.New(rc.Conn)
	}
	l.mu.Lock()
	if l.conns == nil {
		l.conns = map[*rejectConn]struct{}{}
	}
	l.conns[rc] = struct{}{}
	l.mu.Unlock()
	return rc, nil
}

// rejectConn is a connection as net/http uses it. It keeps the bytes read
// since the last request reached a handler (up to maxHeadCapture), and when
// net/http writes one of its own error replies on it, reports the rejected
// request with what those bytes tell about it. Once it has served an HTTP/1
// request it also bounds each write with write_timeout (armWrite), and it
// keeps the read deadlines net/http sets between requests (lazy).
type rejectConn struct {
	keptConn
	// rw reads and writes the socket with raw system calls (Linux), used
	// in a host of plugin processes (rawio.Direct): a read or write
	// through net.Conn wakes the runtime's sysmon in a process that was
	// idle a moment before, a futex wake-up and a thread polling for a
	// while, per request. A process serving its requests itself reads
	// and writes through the conn (package rawio says why). Deadlines,
	// Close and errors are as net.Conn's either way; sendfile (ReadFrom),
	// CloseWrite and the deadlines' setters stay the conn's. Made only
	// for a connection accepted while rawio.Direct holds (nil otherwise:
	// a server without plugins makes nothing more per connection).
	rw       *rawio.Conn
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

	// The read deadlines net/http sets while no handler runs, in the
	// future (read_header_timeout for a request's header, idle_timeout
	// between requests), are kept by the connection in lazy, not armed
	// on the socket: net/http sets one or two per request and clears
	// them, a runtime timer update each, and a timer pending between
	// requests. The listener's one timer closes a connection still
	// waiting when its kept deadline passes (rejectListener.expire, which
	// finds the connection by its due time, below, not by looking at
	// every open connection), and the next read deadline set replaces
	// it. Deadlines set while a handler runs (read_timeout, the
	// handler's own) and after a hijack go to the socket, as do those in
	// the past (net/http's way to wake its background read); realRead
	// tells whether the socket has one, so that clearing it is skipped
	// when it has none.
	lazy     atomic.Int64 // the kept deadline, a clock reading; 0: none; expiring
	realRead atomic.Bool  // the socket may have a read deadline

	// due is the clock reading the listener's timer looks at the
	// connection at (its place in rejectListener.queue), 0 while it is
	// not queued; a deadline kept in lazy is never before it (once the
	// SetReadDeadline that kept it returned).
	// SetReadDeadline queues the connection, which takes the listener's
	// lock, only when it keeps a deadline before due or due is 0; a later
	// one, as net/http sets them request after request (the idle deadline,
	// then the next header's), is found when due comes and the timer moves
	// due to it (rejectListener.look). So in steady keep-alive traffic the
	// per-request path takes no lock, and an idle connection is looked at
	// about once per deadline it keeps. Written under the listener's lock,
	// read without it.
	due    atomic.Int64
	index  int  // in the listener's queue; -1: not queued. Under the listener's lock.
	closed bool // Close ran: not to be queued again. Under the listener's lock.
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

func (c *rejectConn) Read(p []byte) (n int, err error) {
	if c.rw != nil && rawio.Direct() {
		n, err = c.rw.Read(p)
	} else {
		n, err = c.Conn.Read(p)
	}
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

// requestDone notes that the handler requestStarted noted has returned.
func (c *rejectConn) requestDone() { c.reqs.Add(1) }

// SetReadDeadline sets the connection's read deadline: one in the future
// set while no handler runs is kept by the connection (lazy).
func (c *rejectConn) SetReadDeadline(t time.Time) error {
	c.takeLazy()
	if !t.IsZero() && t.After(clockBase) && // in the future: not net/http's aLongTimeAgo
		!c.realRead.Load() && !c.running() && !c.hijacked.Load() {
		at := max(int64(t.Sub(clockBase)), 1)
		c.lazy.Store(at)
		// Then due (see there): queued by a deadline at or before this
		// one, the connection needs nothing more.
		if due := c.due.Load(); due == 0 || at < due {
			c.l.keep(c, at)
		}
		return nil
	}
	if t.IsZero() {
		if !c.realRead.Load() && !c.running() {
			return nil // the socket has no read deadline to clear
		}
		c.realRead.Store(false)
	} else {
		c.realRead.Store(true)
	}
	return c.Conn.SetReadDeadline(t)
}

// takeLazy drops the kept read deadline; if the listener's timer set it
// on the socket as it passed (expire), it waits for that to be done, so
// that the deadline set next replaces it.
func (c *rejectConn) takeLazy() {
	if at := c.lazy.Load(); at != 0 {
		if at == expiring || !c.lazy.CompareAndSwap(at, 0) {
			c.l.mu.Lock() // held by expire until the socket has the deadline
			c.lazy.Store(0)
			c.l.mu.Unlock()
		}
	}
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
	c.takeLazy()
	c.realRead.Store(!t.IsZero())
	return c.Conn.SetDeadline(t)
}

// Close closes the connection and gives its max_connections slot back.
func (c *rejectConn) Close() error {
	c.l.mu.Lock()
	delete(c.l.conns, c)
	c.l.unqueue(c)
	c.closed = true
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

func (c *rejectConn) Write(p []byte) (n int, err error) {
	c.armWrite()
	if c.rw != nil && rawio.Direct() {
		n, err = c.rw.Write(p)
	} else {
		n, err = c.Conn.Write(p)
	}
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
// and keep the read deadlines net/http sets between requests
// (rejectConn.lazy).
func watchRejects(ln net.Listener, app http.Handler, writeTimeout time.Duration) *rejectListener {
	l := &rejectListener{Listener: ln, writeTimeout: writeTimeout,
		observe: func(r *http.Request, code int) { ObserveRejected(app, r, code) }}
	l.fireAt = math.MaxInt64
	return l
}

package transport

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime/debug"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/paster-dev/paster/plugins/internal/wire"
)

// ErrHandlerPanic is returned by Serve when the handler panicked after it had
// sent the response head; the peer aborts the response.
var ErrHandlerPanic = errors.New("handler panicked")

// Serve answers one exchange on s: it reads the head, finds the handler with
// lookup (nil means 404), and runs it with a request whose context is ctx and
// whose body streams from s. A handler panic is logged and answered with 500
// when the head is not yet sent; the process keeps serving. Serve returns
// when the handler has returned (or its hijacked connection is closed).
func Serve(ctx context.Context, s Stream, lookup func(uint64) http.Handler, log hclog.Logger) error {
	// Serve's own frame stays small: a handler may park for long (a
	// request in WaitForSignal) on a goroutine whose stack should stay at
	// its starting size, so what only setting up needs is in begin.
	rw, req, h, err := begin(ctx, s, lookup)
	if h == nil {
		return err
	}
	if err := run(h, rw, req, log); err != nil {
		rw.release()
		return err
	}
	if rw.conn != nil {
		select {
		case <-rw.conn.closed:
		case <-ctx.Done():
		}
		return nil
	}
	err = rw.finish()
	rw.release()
	return err
}

// begin reads the head and makes the request and its response writer. It
// returns no handler when it has answered (404 or 400) or failed.
func begin(ctx context.Context, s Stream, lookup func(uint64) http.Handler) (*responseWriter, *http.Request, http.Handler, error) {
	// The head is decoded into the body's frame, which reads the next
	// frames once the request holds what it needs of it (one allocation
	// fewer per exchange).
	b := &body{s: s}
	head := &b.f
	if err := s.RecvMsg(head); err != nil {
		return nil, nil, nil, err
	}
	if head.Flags&wire.FlagHead == 0 {
		return nil, nil, nil, errors.New("transport: first frame is not a head")
	}
	rw := writers.Get().(*responseWriter)
	x, _ := s.(*Exchange)
	*rw = responseWriter{s: s, x: x, header: make(http.Header, 4), buf: rw.buf[:0]}
	h := lookup(head.Target)
	if h == nil {
		rw.status = http.StatusNotFound
		rw.buf = append(rw.buf, fmt.Sprintf("no instance %d in this plugin\n", head.Target)...)
		err := rw.finish()
		rw.release()
		return nil, nil, nil, err
	}
	req, err := newRequest(ctx, b)
	if err != nil {
		rw.status = http.StatusBadRequest
		err := rw.finish()
		rw.release()
		return nil, nil, nil, err
	}
	rw.upgradable = head.Flags&wire.FlagUpgradable != 0
	rw.body = b
	return rw, req, h, nil
}

// release recycles w once its exchange is over, unless a hijacked
// connection still uses it.
func (w *responseWriter) release() {
	w.dropSlot()
	if w.conn == nil {
		// One by one: a tuple assignment would build the zero Frame
		// in a temporary of the caller's frame (Serve's).
		w.s = nil
		w.x = nil
		w.body = nil
		w.header = nil
		w.frame = wire.Frame{}
		writers.Put(w)
	}
}

// writers recycles response writers and their buffers. A new one has no
// buffer: its first Write takes one from bodyBufs or grows one to fit, so
// that a handler that writes a line, flushes and parks (WaitForSignal)
// holds a few bytes, not a chunk.
var writers = sync.Pool{New: func() any { return new(responseWriter) }}

func run(h http.Handler, rw *responseWriter, req *http.Request, log hclog.Logger) (err error) {
	defer func() {
		v := recover()
		if v == nil {
			return
		}
		if v != http.ErrAbortHandler {
			log.Error("handler panic", "method", req.Method, "uri", req.RequestURI, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		}
		rw.mu.Lock()
		sent := rw.sentHead
		rw.mu.Unlock()
		if sent || v == http.ErrAbortHandler {
			err = ErrHandlerPanic
			return
		}
		rw.header = http.Header{"Content-Type": {"text/plain; charset=utf-8"}}
		rw.status = http.StatusInternalServerError
		rw.buf = append(rw.buf[:0], "Internal Server Error\n"...)
	}()
	h.ServeHTTP(rw, req)
	return nil
}

// newRequest makes the request of b's head frame (b.f).
func newRequest(ctx context.Context, b *body) (*http.Request, error) {
	f := &b.f
	u, err := url.ParseRequestURI(f.URI)
	if err != nil {
		return nil, err
	}
	major, minor, ok := http.ParseHTTPVersion(f.Proto)
	if !ok {
		major, minor = 1, 1
	}
	if f.Flags&wire.FlagEnd != 0 {
		b.done = true
		b.pending = f.Body
	}
	if f.Header == nil {
		f.Header = make(http.Header)
	}
	// The request is a copy of blank with ctx (WithContext copies), filled
	// in: one Request per exchange, not one and its copy.
	req := blank.WithContext(ctx)
	req.Method = f.Method
	req.URL = u
	req.Proto = f.Proto
	req.ProtoMajor = major
	req.ProtoMinor = minor
	req.Header = f.Header
	req.Body = b
	req.ContentLength = f.ContentLength
	req.Host = f.Host
	req.RemoteAddr = f.RemoteAddr
	req.RequestURI = f.URI
	if te := f.Header["Transfer-Encoding"]; len(te) > 0 {
		req.TransferEncoding = te
	}
	if f.Flags&wire.FlagTLS != 0 {
		req.TLS = &tls.ConnectionState{HandshakeComplete: true, ServerName: f.Host}
	}
	if names := f.Header["Trailer"]; len(names) > 0 {
		req.Trailer = make(http.Header)
		b.trailer = req.Trailer
	}
	return req, nil
}

// blank is the Request newRequest copies; it is never changed.
var blank http.Request

// body reads request body frames from the stream, and after a hijack the
// raw bytes of the client's connection.
type body struct {
	s       Stream
	f       wire.Frame
	pending []byte
	done    bool
	err     error // what Read returns once done and drained; nil means io.EOF
	trailer http.Header
}

// complete reports whether the whole body is here, unread.
func (b *body) complete() bool { return b.done && b.err == nil && len(b.pending) <= wire.ChunkSize }

// WholeBody reports whether rb is a request body that came through a
// transport whole and unread, which Forward passes on in one frame without
// reading it, and its length.
func WholeBody(rb io.ReadCloser) (int, bool) {
	if b, ok := rb.(*body); ok && b.complete() {
		return len(b.pending), true
	}
	return 0, false
}

// Read returns the body's bytes as the frames bring them. It fails with
// what the sender's read failed with (FlagError), and with
// io.ErrUnexpectedEOF when the exchange ends before the body does: the
// client is gone, or the request was cancelled.
func (b *body) Read(p []byte) (int, error) {
	if err := b.fill(); err != nil {
		return 0, err
	}
	n := copy(p, b.pending)
	b.pending = b.pending[n:]
	return n, nil
}

// WriteTo writes the body's bytes to w as the frames bring them, from
// where they arrived (the shared memory of the data plane, for large
// ones) rather than through a buffer: io.Copy(dst, r.Body) copies each
// byte once. It fails as Read does, or with w's error.
func (b *body) WriteTo(w io.Writer) (int64, error) {
	var n int64
	for {
		if err := b.fill(); err != nil {
			if err == io.EOF {
				err = nil
			}
			return n, err
		}
		k, err := w.Write(b.pending)
		n += int64(k)
		b.pending = b.pending[k:]
		if err != nil {
			return n, err
		}
	}
}

// fill receives the next frame with bytes when none are pending. Once the
// body is done and drained it returns what Read returns then (io.EOF at
// its end).
func (b *body) fill() error {
	for len(b.pending) == 0 {
		if b.done {
			if b.err != nil {
				return b.err
			}
			return io.EOF
		}
		if err := b.s.RecvMsg(&b.f); err != nil {
			b.done, b.err = true, io.ErrUnexpectedEOF
			return b.err
		}
		b.pending = b.f.Body
		switch {
		case b.f.Flags&wire.FlagError != 0:
			b.done, b.err = true, bodyError(&b.f)
		case b.f.Flags&wire.FlagEnd != 0:
			b.done = true
			for k, vs := range b.f.Trailer {
				if b.trailer != nil {
					b.trailer[k] = vs
				}
			}
		}
	}
	return nil
}

// bodyError rebuilds the error of a FlagError frame: an *http.MaxBytesError
// for a body over its limit (so that handlers answer 413 as they would in
// process), else an error with the sender's text.
func bodyError(f *wire.Frame) error {
	if f.Limit > 0 {
		return &http.MaxBytesError{Limit: f.Limit}
	}
	return errors.New(f.Error)
}

func (b *body) Close() error { return nil }

// responseWriter buffers up to one chunk and sends it on Flush, when full,
// and when the handler returns.
type responseWriter struct {
	s          Stream
	x          *Exchange // s, when it is a Mux's: buf may be a slot of it
	body       *body
	upgradable bool
	slot       bool // buf is a slot (Exchange.TakeSlot)

	mu       sync.Mutex // serialises SendMsg (handler goroutine, hijacked conn writers)
	header   http.Header
	status   int
	sentHead bool
	buf      []byte
	frame    wire.Frame
	conn     *hijacked
	err      error
}

func (w *responseWriter) Header() http.Header { return w.header }

func (w *responseWriter) WriteHeader(code int) {
	if w.status != 0 || code < 200 && code != http.StatusSwitchingProtocols {
		return // already set, or an informational status we do not relay
	}
	w.status = code
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return 0, w.err
	}
	n := 0
	for len(p) > 0 {
		// More than a small buffer's worth goes into a slot of shared
		// memory when there is one (SendMsg sends it without copying).
		if w.buf == nil && (len(p) <= bodyBufSize || !w.toSlot()) {
			if b, ok := bodyBufs.Get().(*[]byte); ok {
				w.buf = (*b)[:0]
			}
		}
		room := wire.ChunkSize - len(w.buf)
		if w.slot {
			room = cap(w.buf) - len(w.buf)
		}
		if room == 0 {
			if err := w.sendLocked(0); err != nil {
				return n, err
			}
			continue
		}
		k := min(room, len(p))
		if !w.slot && len(w.buf)+k > max(cap(w.buf), bodyBufSize) {
			w.toSlot()
		}
		w.buf = append(w.buf, p[:k]...)
		p = p[k:]
		n += k
	}
	return n, nil
}

// sendLocked sends the head (first time) and the buffered body with flags.
func (w *responseWriter) sendLocked(flags uint16) error {
	f := &w.frame
	*f = wire.Frame{Flags: flags, Body: w.buf}
	if !w.sentHead {
		if w.status == 0 {
			w.status = http.StatusOK
		}
		f.Flags |= wire.FlagHead
		f.Status = w.status
		f.Header = w.header
		w.sentHead = true
	}
	if flags&wire.FlagEnd != 0 {
		f.Trailer = w.trailers()
	}
	err := w.s.SendMsg(f)
	w.buf = w.buf[:0]
	if w.slot {
		// SendMsg took it.
		w.buf, w.slot = nil, false
	}
	if err != nil {
		w.err = err
	}
	return err
}

// toSlot moves what is buffered into a slot of shared memory, which
// SendMsg sends without copying; it reports false when there is none.
func (w *responseWriter) toSlot() bool {
	if w.x == nil {
		return false
	}
	sl := w.x.TakeSlot()
	if sl == nil {
		return false
	}
	sl = append(sl, w.buf...)
	if c := cap(w.buf); c > smallBuf && c <= bodyBufSize {
		b := w.buf
		bodyBufs.Put(&b)
	}
	w.buf, w.slot = sl, true
	return true
}

// dropSlot gives back a slot buffered and never sent.
func (w *responseWriter) dropSlot() {
	if w.slot {
		w.x.GiveSlot(w.buf)
		w.buf, w.slot = nil, false
	}
}

// trailers collects declared trailers and those set with http.TrailerPrefix.
func (w *responseWriter) trailers() http.Header {
	var t http.Header
	for _, decl := range w.header["Trailer"] {
		for _, k := range splitComma(decl) {
			k = http.CanonicalHeaderKey(k)
			if vs, ok := w.header[k]; ok {
				if t == nil {
					t = http.Header{}
				}
				t[k] = vs
			}
		}
	}
	for k, vs := range w.header {
		if len(k) > len(http.TrailerPrefix) && k[:len(http.TrailerPrefix)] == http.TrailerPrefix {
			if t == nil {
				t = http.Header{}
			}
			t[k[len(http.TrailerPrefix):]] = vs
		}
	}
	return t
}

func splitComma(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ',' {
			part := s[start:i]
			for len(part) > 0 && (part[0] == ' ' || part[0] == '\t') {
				part = part[1:]
			}
			for len(part) > 0 && (part[len(part)-1] == ' ' || part[len(part)-1] == '\t') {
				part = part[:len(part)-1]
			}
			if part != "" {
				out = append(out, part)
			}
			start = i + 1
		}
	}
	return out
}

// Flush sends the head and everything written so far; the host flushes its
// client connection when it receives it.
func (w *responseWriter) Flush() {
	_ = w.FlushError()
}

// FlushError is Flush returning the stream's error (http.ResponseController).
func (w *responseWriter) FlushError() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	if w.conn != nil {
		return nil
	}
	if err := w.sendLocked(wire.FlagFlush); err != nil {
		return err
	}
	// A handler that flushed may wait long for what it writes next (a
	// request parked in WaitForSignal): it holds no buffer meanwhile,
	// beyond a small one.
	if c := cap(w.buf); c > smallBuf && c <= bodyBufSize {
		b := w.buf
		bodyBufs.Put(&b)
		w.buf = nil
	}
	return nil
}

// bodyBufs are the responseWriters' buffers above smallBuf up to
// bodyBufSize, given back while a handler waits after a flush. Get on an
// empty pool returns nil: Write then grows a buffer from nothing.
const (
	smallBuf    = 512
	bodyBufSize = 4096
)

var bodyBufs sync.Pool

func (w *responseWriter) finish() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil || w.conn != nil {
		return w.err
	}
	return w.sendLocked(wire.FlagEnd)
}

// Hijack turns the exchange into a raw tunnel of the client's connection. It
// fails when the head was sent or when the request body was not complete in
// the head (the host only keeps the tunnel open for upgrade requests).
func (w *responseWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	switch {
	case w.conn != nil:
		return nil, nil, http.ErrHijacked
	case w.sentHead || !w.upgradable:
		return nil, nil, http.ErrNotSupported
	}
	w.dropSlot()
	w.frame = wire.Frame{Flags: wire.FlagHead | wire.FlagHijack, Status: http.StatusSwitchingProtocols}
	if err := w.s.SendMsg(&w.frame); err != nil {
		return nil, nil, err
	}
	w.sentHead = true
	// The body ended in the head; the host now sends the connection's bytes.
	w.body.done, w.body.pending, w.body.err = false, nil, nil
	c := &hijacked{w: w, closed: make(chan struct{})}
	w.conn = c
	return c, bufio.NewReadWriter(bufio.NewReader(c), bufio.NewWriter(c)), nil
}

// hijacked is the plugin side of a tunnelled connection: reads come from the
// stream, writes go to it.
type hijacked struct {
	w         *responseWriter
	readMu    sync.Mutex
	closeOnce sync.Once
	closed    chan struct{}
}

func (c *hijacked) Read(p []byte) (int, error) {
	c.readMu.Lock()
	defer c.readMu.Unlock()
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	n, err := c.w.body.Read(p)
	if err == io.ErrUnexpectedEOF {
		err = io.EOF
	}
	return n, err
}

func (c *hijacked) Write(p []byte) (int, error) {
	c.w.mu.Lock()
	defer c.w.mu.Unlock()
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	if c.w.err != nil {
		return 0, c.w.err
	}
	n := 0
	for len(p) > 0 {
		k := min(len(p), wire.ChunkSize)
		c.w.frame = wire.Frame{Body: p[:k]}
		if err := c.w.s.SendMsg(&c.w.frame); err != nil {
			c.w.err = err
			return n, err
		}
		p = p[k:]
		n += k
	}
	return n, nil
}

func (c *hijacked) Close() error {
	c.closeOnce.Do(func() {
		c.w.mu.Lock()
		c.w.frame = wire.Frame{Flags: wire.FlagEnd}
		if c.w.err == nil {
			_ = c.w.s.SendMsg(&c.w.frame)
		}
		c.w.mu.Unlock()
		close(c.closed)
	})
	return nil
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "paster" }
func (pipeAddr) String() string  { return "paster-host" }

func (c *hijacked) LocalAddr() net.Addr                { return pipeAddr{} }
func (c *hijacked) RemoteAddr() net.Addr               { return pipeAddr{} }
func (c *hijacked) SetDeadline(t time.Time) error      { return nil }
func (c *hijacked) SetReadDeadline(t time.Time) error  { return nil }
func (c *hijacked) SetWriteDeadline(t time.Time) error { return nil }

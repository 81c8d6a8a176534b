package runner

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"time"
)

// errResponseReplaced is what a handler's writes return after its response
// was replaced by 413 because the request body was over max_body_bytes.
var errResponseReplaced = errors.New("http: request body over max_body_bytes; response replaced by 413")

// limitHandler applies the per-request limits of an HTTPServer around the
// application: the body size limit, the per-request read deadline on the body
// and the per-write deadline on the response (over plain HTTP/1 the
// connection's, see rejectConn.armWrite).
type limitHandler struct {
	s    *HTTPServer
	next http.Handler
}

func (h *limitHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s := h.s
	cs := connStateOf(r)
	var rc *rejectConn
	if cs != nil {
		if cs.fresh != nil {
			cs.fresh.FirstRequest()
		}
		rc = cs.reject
	}
	if rc != nil {
		// Counted by the connection (rejectListener.inFlight): no
		// counter every request on every CPU would write.
		rc.requestStarted(r.ProtoMajor == 1)
		defer rc.requestDone()
	} else {
		s.inflight.Add(1)
		defer s.inflight.Add(-1)
	}

	if s.unseenReplies() && headerSize(r) > s.cfg.MaxHeaderBytes {
		// net/http's own 431 would be sent where paster cannot see it
		// (see netHTTPHeaderLimit); this one is observed like any other
		// response. HTTP/1 closes the connection after it, as net/http
		// does; HTTP/2 refuses the one stream and goes on.
		if r.ProtoMajor < 2 {
			w.Header().Set("Connection", "close")
		}
		http.Error(w, "431 Request Header Fields Too Large", http.StatusRequestHeaderFieldsTooLarge)
		ObserveRejected(h.next, r, http.StatusRequestHeaderFieldsTooLarge)
		return
	}
	if s.cfg.MaxBodyBytes > 0 && r.ContentLength > s.cfg.MaxBodyBytes {
		// Known too large before reading a byte: answer at once, without
		// sending 100 Continue.
		w.Header().Set("Connection", "close")
		http.Error(w, tooLargeMessage(s.cfg.MaxBodyBytes), http.StatusRequestEntityTooLarge)
		ObserveRejected(h.next, r, http.StatusRequestEntityTooLarge)
		return
	}
	connArms := rc != nil && r.ProtoMajor == 1
	if connArms && (r.Body == nil || r.Body == http.NoBody) {
		// HTTP/1 on a connection of the server's own without a body:
		// rc bounds every write by write_timeout, and with no body
		// there is no read_timeout to keep nor 413 to send, so the
		// handler gets net/http's own writer (no wrapper to allocate
		// and go through on every call). rc learns of a hijack and of
		// the handler's own write deadlines from net/http's calls.
		h.next.ServeHTTP(w, r)
		return
	}
	lw := &limitWriter{cfg: &s.cfg, conn: rc, connArms: connArms}
	lw.ResponseWrapper = WrapResponse(w, lw)
	if d, ok := w.(deadliner); ok {
		lw.dl = d // the server's own writer: no ResponseController to allocate
	} else {
		lw.dl = http.NewResponseController(w)
	}
	if r.Body != nil && r.Body != http.NoBody {
		body := r.Body
		if s.cfg.MaxBodyBytes > 0 {
			// Given the server's own writer, MaxBytesReader also marks the
			// connection to be closed after the reply.
			body = http.MaxBytesReader(w, body, s.cfg.MaxBodyBytes)
		}
		lw.body = &limitBody{rc: body, w: lw}
		r.Body = lw.body
	}
	h.next.ServeHTTP(lw, r)
	lw.finish()
}

// deadliner sets connection deadlines: net/http's response writer and
// http.ResponseController both do.
type deadliner interface {
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

func tooLargeMessage(limit int64) string {
	return fmt.Sprintf("request body larger than max_body_bytes (%d bytes)", limit)
}

// limitWriter is the http.ResponseWriter handlers get from an HTTPServer,
// but for HTTP/1 requests without a body on plain connections, whose
// handlers get net/http's own. It moves the write deadline forward on every
// write and flush (over plain HTTP/1 the connection does), replaces the
// response with 413 when the request body went over the limit before the
// handler sent its header, and passes Flush, Hijack, ReadFrom and the
// http.ResponseController methods through (Unwrap).
type limitWriter struct {
	ResponseWrapper
	dl   deadliner
	cfg  *HTTPConfig
	body *limitBody  // nil when the request has no body
	conn *rejectConn // nil when not served by ServeListener

	// connArms: the connection bounds every write by write_timeout
	// (HTTP/1 on a rejectConn, see rejectConn.armWrite), so armWrite has
	// nothing to do. Otherwise armedAt is the clock reading the deadline
	// was last moved forward at.
	connArms bool
	armedAt  int64

	// Written by the handler's writing goroutine only.
	wroteHeader bool
	rejected    bool
	hijacked    bool

	appWriteDeadline atomic.Bool // the handler set its own write deadline
	appReadDeadline  atomic.Bool // the handler set its own read deadline
}

// bodyTooLarge reports whether reading the request body hit max_body_bytes.
func (w *limitWriter) bodyTooLarge() bool { return w.body != nil && w.body.tooLarge.Load() }

// commit is called before anything that sends the response header. It
// reports false when the response was replaced by 413.
func (w *limitWriter) commit() bool {
	if w.rejected {
		return false
	}
	if !w.wroteHeader {
		if w.bodyTooLarge() {
			w.reject()
			return false
		}
		w.wroteHeader = true
	}
	return true
}

func (w *limitWriter) reject() {
	w.rejected, w.wroteHeader = true, true
	h := w.ResponseWriter.Header()
	for k := range h {
		delete(h, k)
	}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Connection", "close")
	w.ResponseWriter.WriteHeader(http.StatusRequestEntityTooLarge)
	w.armWrite()
	io.WriteString(w.ResponseWriter, tooLargeMessage(w.cfg.MaxBodyBytes)+"\n")
}

// armWrite moves the write deadline to now+write_timeout, unless the handler
// manages the deadline itself or the connection arms it at each write
// (connArms). To keep the cost off the hot path it re-arms only when a
// sixteenth of the timeout has passed since the last time, so a write
// always has at least 15/16 of write_timeout.
func (w *limitWriter) armWrite() {
	wt := w.cfg.WriteTimeout
	if wt <= 0 || w.connArms || w.hijacked || w.appWriteDeadline.Load() {
		return
	}
	now := clock()
	if w.armedAt != 0 && time.Duration(now-w.armedAt) < wt/16 {
		return
	}
	w.armedAt = now
	w.dl.SetWriteDeadline(deadlineAt(now, wt))
}

// clockBase anchors clock.
var clockBase = time.Now()

// clock reads the monotonic clock, in nanoseconds since clockBase (at
// least 1, so that 0 can mean never). The deadlines of every request are
// computed from it: one clock read where time.Now makes two, on a path
// taken for every request.
func clock() int64 { return max(int64(time.Since(clockBase)), 1) }

// deadlineAt is the deadline d after the clock reading now. It carries a
// monotonic reading, which is what net's deadlines go by.
func deadlineAt(now int64, d time.Duration) time.Time {
	return clockBase.Add(time.Duration(now) + d)
}

// WriteHeader sends the status, or the 413 replacement (see limitWriter).
// Informational (1xx) statuses other than 101 pass through.
func (w *limitWriter) WriteHeader(code int) {
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		if !w.wroteHeader {
			w.ResponseWriter.WriteHeader(code)
		}
		return
	}
	if w.rejected {
		return
	}
	if !w.wroteHeader {
		if !w.commit() {
			return
		}
		w.ResponseWriter.WriteHeader(code)
		return
	}
	w.ResponseWriter.WriteHeader(code) // superfluous; let net/http log it
}

// Write writes to the response with a fresh write deadline.
func (w *limitWriter) Write(p []byte) (int, error) {
	if !w.commit() {
		return 0, errResponseReplaced
	}
	w.armWrite()
	return w.ResponseWriter.Write(p)
}

// BeforeFlush sends the header (or fails when the response was replaced
// by 413) and gives the flush a fresh write deadline (ResponseHooks).
func (w *limitWriter) BeforeFlush() (bool, error) {
	if !w.commit() {
		return false, errResponseReplaced
	}
	w.armWrite()
	return true, nil
}

// ReadFrom copies src to the response, moving the write deadline forward
// every mebibyte (copyArmed, or the connection's ReadFrom over plain
// HTTP/1); it keeps sendfile where the server's writer has it.
func (w *limitWriter) ReadFrom(src io.Reader) (int64, error) {
	if !w.commit() {
		return 0, errResponseReplaced
	}
	rf, ok := w.ResponseWriter.(io.ReaderFrom)
	if !ok {
		return io.Copy(struct{ io.Writer }{w}, src)
	}
	if w.connArms {
		return rf.ReadFrom(src) // the connection's ReadFrom arms
	}
	return copyArmed(rf, src, w)
}

// copyArmed copies src to dst a mebibyte at a time, calling a.armWrite
// before each, so that a long copy (a large file) keeps a fresh write
// deadline. An *io.LimitedReader around an *os.File, as
// http.ServeContent passes, is unwrapped so that the chunks stay one
// LimitedReader deep and the copy keeps sendfile.
func copyArmed(dst io.ReaderFrom, src io.Reader, a interface{ armWrite() }) (int64, error) {
	const chunk = 1 << 20
	inner, lr := src, (*io.LimitedReader)(nil)
	if l, ok := src.(*io.LimitedReader); ok {
		inner, lr = l.R, l
	}
	var total int64
	for {
		n := int64(chunk)
		if lr != nil && lr.N < n {
			n = lr.N
		}
		if n <= 0 {
			return total, nil
		}
		a.armWrite()
		m, err := dst.ReadFrom(&io.LimitedReader{R: inner, N: n})
		total += m
		if lr != nil {
			lr.N -= m
		}
		if err != nil || m < n {
			return total, err
		}
	}
}

// Hijacked notes that the handler took over the connection. The server
// clears the connection's deadlines; the limits no longer apply
// (ResponseHooks).
func (w *limitWriter) Hijacked() {
	w.hijacked = true
	if w.conn != nil {
		w.conn.hijacked.Store(true)
	}
}

// SetWriteDeadline sets the connection's write deadline; from then on the
// handler manages it and writes no longer move it.
func (w *limitWriter) SetWriteDeadline(t time.Time) error {
	w.appWriteDeadline.Store(true)
	return w.dl.SetWriteDeadline(t)
}

// SetReadDeadline sets the connection's read deadline; from then on the
// handler manages it and read_timeout no longer applies.
func (w *limitWriter) SetReadDeadline(t time.Time) error {
	w.appReadDeadline.Store(true)
	return w.dl.SetReadDeadline(t)
}

// finish runs after the handler returned: it sends the 413 replacement if the
// body was too large and nothing was sent, and bounds the final flush and the
// server's discarding of an unread body.
func (w *limitWriter) finish() {
	if w.hijacked {
		return
	}
	if !w.wroteHeader && w.bodyTooLarge() {
		w.reject()
	}
	w.armWrite()
	if b := w.body; b != nil && !b.done.Load() && w.cfg.ReadTimeout > 0 && !w.appReadDeadline.Load() {
		w.dl.SetReadDeadline(deadlineAt(clock(), w.cfg.ReadTimeout))
	}
}

// limitBody is the request body handlers read: it starts the read_timeout
// deadline at the first read, clears it at the end of the body (so that a
// long-poll that has read its body is not cut), and notes when the body went
// over max_body_bytes (the read then fails with *http.MaxBytesError).
type limitBody struct {
	rc io.ReadCloser
	w  *limitWriter

	armed    bool // written by the reading goroutine only
	done     atomic.Bool
	tooLarge atomic.Bool
}

func (b *limitBody) Read(p []byte) (int, error) {
	rt := b.w.cfg.ReadTimeout
	if !b.armed && !b.done.Load() {
		b.armed = true
		if rt > 0 && !b.w.appReadDeadline.Load() {
			b.w.dl.SetReadDeadline(deadlineAt(clock(), rt))
		}
	}
	n, err := b.rc.Read(p)
	if err != nil && !b.done.Load() {
		b.done.Store(true)
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			b.tooLarge.Store(true)
		}
		if rt > 0 && !b.w.appReadDeadline.Load() {
			b.w.dl.SetReadDeadline(time.Time{})
		}
	}
	return n, err
}

func (b *limitBody) Close() error { return b.rc.Close() }

// unseenReplies reports whether net/http's own replies may be sent where
// watchRejects cannot read them: beneath TLS, or in HTTP/2 frames (h2c).
func (s *HTTPServer) unseenReplies() bool { return s.tls != nil || s.cfg.H2C }

// netHTTPHeaderLimit is the http.Server.MaxHeaderBytes for max_header_bytes.
// Over plain HTTP/1 it is max_header_bytes, and net/http's own 431 is
// observed on the connection (watchRejects). Over TLS or HTTP/2 that reply
// cannot be seen (unseen), so net/http is given headroom (max_header_bytes again, at most
// 64 KiB more) and limitHandler answers 431 itself for headers between the
// two: a client slightly over the limit, the usual case (a grown cookie),
// is counted in /metrics and the access log; one far over it is still
// refused by net/http, uncounted. The headroom is the memory a connection
// may hold for a header beyond max_header_bytes.
func netHTTPHeaderLimit(maxHeaderBytes int, unseen bool) int {
	if !unseen {
		return maxHeaderBytes
	}
	return maxHeaderBytes + min(maxHeaderBytes, 64<<10)
}

// headerSize is the size of r's header as a client sent it over HTTP/1.1:
// the request line, Host and every header line with their line ends.
func headerSize(r *http.Request) int {
	n := len(r.Method) + 1 + len(r.RequestURI) + 1 + len("HTTP/1.1") + 2
	n += len("Host: ") + len(r.Host) + 2
	for k, vs := range r.Header {
		for _, v := range vs {
			n += len(k) + 2 + len(v) + 2
		}
	}
	return n + 2
}

package runner

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime/debug"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// TimeoutHandler returns a handler that runs next with a bound of d on how
// long it may run; key names the setting in messages (handler_timeout,
// request_timeout). When d passes before next returns:
//
//   - next's request context is cancelled, with cause http.ErrHandlerTimeout
//     (context.Cause), so that a handler that watches it, a plugin app
//     across the process boundary included, stops;
//   - if next had not sent its header yet, the client gets 503 with a
//     short text; if it had, the response is cut by ending the connection
//     (panic(http.ErrAbortHandler), which net/http turns into a closed
//     connection without logging a stack, as httputil.ReverseProxy does);
//   - later writes of next fail with http.ErrHandlerTimeout, and the
//     request's goroutine is freed even if next never returns. A panic of
//     next after that is logged.
//
// A handler that hijacked its connection (a WebSocket) is not bound: the
// connection is its own. d <= 0 returns next unchanged.
//
// It is written here rather than taken from http.TimeoutHandler, which
// buffers the whole response until the handler returns: that breaks
// streaming and Flush (long-polls, server-sent events, the plugins' streamed
// responses) and it offers no Hijack. This one writes through at once; it
// runs next on a goroutine of its own and serialises next's writes with the
// timeout under a mutex, so a write blocked on a slow client delays the
// timeout until write_timeout ends that write.
func TimeoutHandler(next http.Handler, d time.Duration, key string, logger hclog.Logger) http.Handler {
	if d <= 0 {
		return next
	}
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return &timeoutHandler{next: next, d: d, key: key, log: logger}
}

type timeoutHandler struct {
	next http.Handler
	d    time.Duration
	key  string
	log  hclog.Logger
}

func (h *timeoutHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithCancelCause(r.Context())
	defer cancel(nil)
	tw := &timeoutWriter{w: w, h: make(http.Header)}
	done := make(chan struct{})
	var panicked any
	go func() {
		defer func() {
			if p := recover(); p != nil {
				if p != http.ErrAbortHandler {
					p = fmt.Sprintf("%v\n%s", p, debug.Stack())
				}
				tw.mu.Lock()
				late := tw.timedOut
				tw.mu.Unlock()
				if late {
					h.log.Error("handler panicked after its timeout", "key", h.key, "path", r.URL.Path, "panic", p)
				}
				panicked = p
			}
			close(done)
		}()
		h.next.ServeHTTP(tw, r.WithContext(ctx))
	}()

	timer := time.NewTimer(h.d)
	defer timer.Stop()
	select {
	case <-done:
		tw.finish()
		if panicked != nil {
			panic(panicked)
		}
		return
	case <-timer.C:
	}

	tw.mu.Lock()
	if tw.hijacked {
		// The connection is the handler's now: leave it be.
		tw.mu.Unlock()
		h.log.Debug("timeout passed on a hijacked connection; left to its handler", "key", h.key, "timeout", h.d,
			"method", r.Method, "path", r.URL.Path)
		<-done
		if panicked != nil {
			panic(panicked)
		}
		return
	}
	tw.timedOut = true
	started := tw.wroteHeader
	if !started {
		msg := fmt.Sprintf("the app did not answer within %s (%s)", h.key, h.d)
		hd := w.Header()
		hd.Set("Content-Type", "text/plain; charset=utf-8")
		hd.Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, msg+"\n")
	}
	tw.mu.Unlock()
	cancel(http.ErrHandlerTimeout)

	if started {
		h.log.Warn("handler still running after its timeout; connection ended", "key", h.key, "timeout", h.d,
			"method", r.Method, "path", r.URL.Path)
		panic(http.ErrAbortHandler)
	}
	h.log.Warn("handler still running after its timeout; answered 503", "key", h.key, "timeout", h.d,
		"method", r.Method, "path", r.URL.Path)
}

// timeoutWriter is the ResponseWriter of a handler under TimeoutHandler.
// The handler fills a header map of its own, copied to the real one when
// the header is sent (and, for trailers, when the handler returns), so that
// the timeout can answer without racing the handler's header changes.
// Unlike paster's other wrappers it does not embed ResponseWrapper: each of
// its methods, Flush and Hijack included, holds its mutex for the whole
// call, since the timeout writes to the same connection from another
// goroutine.
type timeoutWriter struct {
	w http.ResponseWriter
	h http.Header

	mu          sync.Mutex
	wroteHeader bool
	timedOut    bool
	hijacked    bool
}

func (tw *timeoutWriter) Header() http.Header { return tw.h }

func (tw *timeoutWriter) copyHeader() {
	dst := tw.w.Header()
	for k, v := range tw.h {
		dst[k] = v
	}
}

// writeHeaderLocked sends the header with code, once.
func (tw *timeoutWriter) writeHeaderLocked(code int) {
	if tw.wroteHeader {
		return
	}
	tw.copyHeader()
	if code < 200 && code != http.StatusSwitchingProtocols {
		tw.w.WriteHeader(code) // informational; the real header follows
		return
	}
	tw.wroteHeader = true
	tw.w.WriteHeader(code)
}

func (tw *timeoutWriter) WriteHeader(code int) {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	if !tw.timedOut && !tw.hijacked {
		tw.writeHeaderLocked(code)
	}
}

func (tw *timeoutWriter) Write(p []byte) (int, error) {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	if tw.timedOut {
		return 0, http.ErrHandlerTimeout
	}
	tw.writeHeaderLocked(http.StatusOK)
	return tw.w.Write(p)
}

// ReadFrom copies src to the response, keeping the server's sendfile.
func (tw *timeoutWriter) ReadFrom(src io.Reader) (int64, error) {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	if tw.timedOut {
		return 0, http.ErrHandlerTimeout
	}
	tw.writeHeaderLocked(http.StatusOK)
	if rf, ok := tw.w.(io.ReaderFrom); ok {
		return rf.ReadFrom(src)
	}
	return io.Copy(tw.w, src)
}

// FlushError sends the header and buffered data to the client.
func (tw *timeoutWriter) FlushError() error {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	if tw.timedOut {
		return http.ErrHandlerTimeout
	}
	tw.writeHeaderLocked(http.StatusOK)
	return http.NewResponseController(tw.w).Flush()
}

// Flush is FlushError without the error, for http.Flusher.
func (tw *timeoutWriter) Flush() { _ = tw.FlushError() }

// Hijack hands the connection to the handler; the timeout no longer
// applies to it.
func (tw *timeoutWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	if tw.timedOut {
		return nil, nil, http.ErrHandlerTimeout
	}
	tw.copyHeader()
	c, brw, err := http.NewResponseController(tw.w).Hijack()
	if err == nil {
		tw.hijacked = true
	}
	return c, brw, err
}

// SetReadDeadline is http.ResponseController's, until the timeout.
func (tw *timeoutWriter) SetReadDeadline(t time.Time) error {
	return tw.control(func(rc *http.ResponseController) error { return rc.SetReadDeadline(t) })
}

// SetWriteDeadline is http.ResponseController's, until the timeout.
func (tw *timeoutWriter) SetWriteDeadline(t time.Time) error {
	return tw.control(func(rc *http.ResponseController) error { return rc.SetWriteDeadline(t) })
}

// EnableFullDuplex is http.ResponseController's, until the timeout.
func (tw *timeoutWriter) EnableFullDuplex() error {
	return tw.control((*http.ResponseController).EnableFullDuplex)
}

func (tw *timeoutWriter) control(f func(*http.ResponseController) error) error {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	if tw.timedOut {
		return http.ErrHandlerTimeout
	}
	return f(http.NewResponseController(tw.w))
}

// finish runs after the handler returned in time: trailers it set go to
// the real header.
func (tw *timeoutWriter) finish() {
	tw.mu.Lock()
	defer tw.mu.Unlock()
	if !tw.hijacked {
		tw.copyHeader()
	}
}

package runner

import (
	"bufio"
	"net"
	"net/http"
)

// ResponseWrapper is what paster's http.ResponseWriter wrappers (the
// server's own writer, the built-in filters, the metrics) embed instead of
// http.ResponseWriter. It supplies what every wrapper needs and none should
// write again:
//
//   - Unwrap, so that http.ResponseController reaches the writers beneath
//     (deadlines, full duplex, and whatever a wrapper does not override);
//   - Flush (http.Flusher) and FlushError (http.ResponseController), which
//     call the wrapper's BeforeFlush and then flush the wrapped writer;
//   - Hijack (http.Hijacker), which hijacks the wrapped writer and then
//     calls the wrapper's Hijacked.
//
// Flush and Hijack reach the wrapped writer through http.ResponseController,
// so they work when that writer offers them only through its own Unwrap.
// The wrapper overrides Header, Write, WriteHeader (and ReadFrom) as it
// needs; the embedded ResponseWriter field is the wrapped writer.
type ResponseWrapper struct {
	http.ResponseWriter
	hooks ResponseHooks
}

// ResponseHooks is how a wrapper that embeds a ResponseWrapper takes part
// in flushing and hijacking.
type ResponseHooks interface {
	// BeforeFlush runs before a flush reaches the wrapped writer; it may
	// send the response header first. With pass false the flush ends there
	// and returns err (a response that was replaced or discarded has
	// nothing to flush).
	BeforeFlush() (pass bool, err error)
	// Hijacked runs after the wrapped writer handed over the connection.
	Hijacked()
}

// WrapResponse returns a ResponseWrapper around w that calls hooks (nil: a
// wrapper that only counts or watches, whose flushes and hijacks pass
// straight through). A wrapper passes itself:
//
//	gw := &gzipWriter{...}
//	gw.ResponseWrapper = runner.WrapResponse(w, gw)
func WrapResponse(w http.ResponseWriter, hooks ResponseHooks) ResponseWrapper {
	return ResponseWrapper{ResponseWriter: w, hooks: hooks}
}

// Unwrap returns the wrapped writer, for http.ResponseController.
func (w *ResponseWrapper) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// FlushError runs the wrapper's BeforeFlush and then flushes the wrapped
// writer, returning its error (http.ErrNotSupported when nothing beneath
// can flush).
func (w *ResponseWrapper) FlushError() error {
	if w.hooks != nil {
		if pass, err := w.hooks.BeforeFlush(); !pass {
			return err
		}
	}
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Flush is FlushError without the error, for http.Flusher.
func (w *ResponseWrapper) Flush() { _ = w.FlushError() }

// Hijack takes over the wrapped writer's connection and, when that
// succeeds, tells the wrapper (Hijacked); the wrapper writes nothing more.
func (w *ResponseWrapper) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil && w.hooks != nil {
		w.hooks.Hijacked()
	}
	return c, brw, err
}

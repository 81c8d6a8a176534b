package runner

import "net/http"

// RejectObserver is an optional interface of http.Handlers, for those that
// record requests (a metrics counter, an access log): an HTTPServer calls
// ObserveRejected on the handler it serves for each request it answers
// itself without running the handler — 413 for a declared body over
// max_body_bytes, and net/http's own replies to requests it cannot read:
// 431 for a header over max_header_bytes, 400 for a malformed request, 501
// for an unknown transfer encoding.
//
// r is the request as far as it is known: for a 431, 400 or 501 it has the
// request line and Host when the server could read them (Method is ""
// otherwise), RemoteAddr, no other headers and no body. ObserveRejected
// must not write a response (the answer has been sent) and must not keep r.
// A handler that wraps another passes the call on with ObserveRejected
// (the function), after any change of r it would make for ServeHTTP, so
// that observers further in see what they would see for a served request.
type RejectObserver interface {
	ObserveRejected(r *http.Request, code int)
}

// ObserveRejected calls h.ObserveRejected when h is a RejectObserver, and
// does nothing otherwise.
func ObserveRejected(h http.Handler, r *http.Request, code int) {
	if o, ok := h.(RejectObserver); ok {
		o.ObserveRejected(r, code)
	}
}

// ObserveRejected passes a rejected request to the current Mount's app.
func (f *Front) ObserveRejected(r *http.Request, code int) {
	if m := f.Current(); m != nil {
		ObserveRejected(m.app, r, code)
	}
}

// ObserveRejected passes a rejected request to the Mount's app, with the
// additions of the Mount's wrap.
func (m *Mount) ObserveRejected(r *http.Request, code int) {
	if m.wrap != nil {
		r = m.wrap(r)
	}
	ObserveRejected(m.app, r, code)
}

// ObserveRejected passes a rejected request on to the handler under the
// timeout.
func (h *timeoutHandler) ObserveRejected(r *http.Request, code int) {
	ObserveRejected(h.next, r, code)
}

// ReplacedStatus returns the status an HTTPServer or a TimeoutHandler sends
// instead of the one the handler given w wrote, or sends although the
// handler wrote nothing: 503 when the handler's timeout passed before it
// sent its header (handler_timeout, request_timeout), 413 when the request
// body went over max_body_bytes before the response header went out (see
// NewHTTPServer). It returns 0 when the handler's status stands, and when
// w is not, or does not wrap (Unwrap), such a writer. Handlers that record
// statuses (metrics, access logs) call it after the handler they wrap
// returned.
func ReplacedStatus(w http.ResponseWriter) int {
	for {
		switch x := w.(type) {
		case *timeoutWriter:
			x.mu.Lock()
			answered := x.timedOut && !x.wroteHeader
			x.mu.Unlock()
			if answered {
				return http.StatusServiceUnavailable
			}
			w = x.w
		case *limitWriter:
			if x.rejected || (!x.wroteHeader && !x.hijacked && x.bodyTooLarge()) {
				return http.StatusRequestEntityTooLarge
			}
			return 0
		case interface{ Unwrap() http.ResponseWriter }:
			w = x.Unwrap()
		default:
			return 0
		}
	}
}

package builtin

import (
	"crypto/rand"
	"net/http"
	"strings"

	"golang.org/x/net/http/httpguts"

	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/runner"
)

// maxRequestIDLen is the longest request ID taken from a request.
const maxRequestIDLen = 128

// requestIDKeys are the local keys egg:paster#request_id reads (Keys).
var requestIDKeys = []string{"header"}

// requestIDFactory is egg:paster#request_id, a filter that gives every
// request an ID to find it by in the access log and in the apps' logs.
// Key:
//
//	header  the header that carries the ID (default X-Request-ID)
//
// The ID a request brings in the header is kept when it is valid: one
// header line of 1 to 128 characters, each a letter, a digit or one of
// - _ . : + / = @. Any other value (several lines, too long, spaces,
// quotes, control characters) is replaced, and a request without one gets
// one: 26 characters of crypto/rand.Text (base32, 130 random bits).
//
// The ID is then set on the request's header (replacing what came), which
// is what the next handler and a plugin app behind it read (plugin apps
// get the request's headers as they stand, so a plugin logs the ID with
// r.Header.Get("X-Request-ID")); set on the response's header before the
// app runs (the app may change it); and returned by RequestID(r), which
// the access log shows (translogger's %L, %(REQUEST_ID)s and the JSON
// field request_id), whether the translogger stands outside this filter or
// inside it. A request the server answers itself (413, 431) gets an ID for
// the access log too, though its response, already sent, does not carry
// it.
//
// Errors: a header that is not a valid header name, naming the file, line,
// section and key.
//
//	[filter:request-id]
//	use = egg:paster#request_id
//	header = X-Request-ID
func requestIDFactory(next http.Handler, _ map[string]string, local entrypoints.Local) (http.Handler, error) {
	warnUnknown("request_id", local, requestIDKeys)
	f := &requestID{next: next, header: "X-Request-ID"}
	if v, ok := local.Lookup("header"); ok {
		v = strings.TrimSpace(v)
		if !httpguts.ValidHeaderFieldName(v) {
			return nil, local.Errorf("header", "%q is not a header name", v)
		}
		f.header = http.CanonicalHeaderKey(v)
	}
	return f, nil
}

type requestID struct {
	next   http.Handler
	header string
}

func (f *requestID) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	r2 := f.assign(r)
	w.Header().Set(f.header, RequestID(r2))
	f.next.ServeHTTP(w, r2)
}

// ObserveRejected gives a request the server answered with code itself an
// ID and passes it on (runner.RejectObserver).
func (f *requestID) ObserveRejected(r *http.Request, code int) {
	runner.ObserveRejected(f.next, f.assign(r), code)
}

// assign returns a copy of r whose header carries its ID (the one it
// brought when valid, else a new one), with the ID in r's requestSlot.
func (f *requestID) assign(r *http.Request) *http.Request {
	r, slot := withSlot(r)
	vs := r.Header.Values(f.header)
	id := ""
	if len(vs) == 1 && validRequestID(vs[0]) {
		id = vs[0]
	} else {
		id = rand.Text()
	}
	slot.putID(id)
	r2 := r.WithContext(r.Context())
	r2.Header = r.Header.Clone()
	if r2.Header == nil {
		r2.Header = http.Header{}
	}
	r2.Header.Set(f.header, id)
	return r2
}

// RequestID returns the ID egg:paster#request_id gave r, wherever the
// caller stands in the chain (a translogger outside the filter sees it
// too), or "" when no request_id filter saw the request.
func RequestID(r *http.Request) string {
	if s, ok := r.Context().Value(slotKey{}).(*requestSlot); ok {
		return s.getID()
	}
	return ""
}

// validRequestID reports whether id may be taken from a request: 1 to
// maxRequestIDLen characters, letters, digits and - _ . : + / = @, so that
// it is safe in log lines and headers and cannot be used to forge either.
func validRequestID(id string) bool {
	if id == "" || len(id) > maxRequestIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("-_.:+/=@", c) >= 0:
		default:
			return false
		}
	}
	return true
}

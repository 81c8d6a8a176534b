package builtin

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"

	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/runner"
)

// limitsKeys are the local keys egg:paster#limits reads (Keys).
var limitsKeys = []string{"max_body_bytes", "request_timeout"}

// limitsFactory is egg:paster#limits, a filter-app that gives the app it
// wraps limits of its own: a request body limit below (or, with the
// server's limit off, instead of) the server's max_body_bytes, and a bound
// on how long the app may take to answer. Keys (at least one is required):
//
//	max_body_bytes   bytes, with an optional k, m or g suffix (powers of
//	                 1024); > 0
//	request_timeout  a duration (seconds or a Go duration); > 0
//
// A request whose Content-Length is over the limit gets 413 before the app
// runs. A body without a length that grows over the limit makes the app's
// read fail with *http.MaxBytesError, and the response becomes 413 if the
// app had not sent its header yet; the connection is closed afterwards.
//
// request_timeout is the server's handler_timeout for this app alone, with
// the same implementation (runner.TimeoutHandler): when it passes, the
// app's request context is cancelled (a plugin app's too, across the
// process boundary) and the client gets 503, or, if the response had
// started, its connection is ended. Parked waits of the app keep their own
// timeouts; give request_timeout only to apps that do not long-poll longer.
//
//	[filter-app:upload-limit]
//	use = egg:paster#limits
//	max_body_bytes = 64k
//	request_timeout = 30s
//	next = upload
func limitsFactory(next http.Handler, _ map[string]string, local entrypoints.Local) (http.Handler, error) {
	warnUnknown("limits", local, limitsKeys)
	_, hasMax := local.Lookup("max_body_bytes")
	_, hasTimeout := local.Lookup("request_timeout")
	if !hasMax && !hasTimeout {
		return nil, local.Errorf("max_body_bytes", "required (or request_timeout): the largest request body the app accepts")
	}
	if hasTimeout {
		d, err := local.Duration("request_timeout", 0)
		if err != nil {
			return nil, err
		}
		if d <= 0 {
			return nil, local.Errorf("request_timeout", "must be more than 0, not %s (leave the key out for no bound)", d)
		}
		next = runner.TimeoutHandler(next, d, "request_timeout", logger())
	}
	if !hasMax {
		return next, nil
	}
	n, err := local.Size("max_body_bytes", 0)
	if err != nil {
		return nil, err
	}
	if n <= 0 {
		return nil, local.Errorf("max_body_bytes", "must be more than 0 bytes, not %d", n)
	}
	return &limits{next: next, max: n}, nil
}

type limits struct {
	next http.Handler
	max  int64
}

// ObserveRejected passes a request the server answered itself on
// (runner.RejectObserver).
func (l *limits) ObserveRejected(r *http.Request, code int) { runner.ObserveRejected(l.next, r, code) }

func (l *limits) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	msg := fmt.Sprintf("request body larger than this app's max_body_bytes (%d bytes)", l.max)
	if r.ContentLength > l.max {
		w.Header().Set("Connection", "close")
		http.Error(w, msg, http.StatusRequestEntityTooLarge)
		return
	}
	if r.Body == nil || r.Body == http.NoBody {
		l.next.ServeHTTP(w, r)
		return
	}
	lw := &limitedWriter{msg: msg}
	lw.ResponseWrapper = runner.WrapResponse(w, lw)
	r.Body = &limitedBody{ReadCloser: http.MaxBytesReader(w, r.Body, l.max), w: lw}
	l.next.ServeHTTP(lw, r)
}

// limitedBody notes when the body went over the limit.
type limitedBody struct {
	io.ReadCloser
	w *limitedWriter
}

func (b *limitedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		b.w.over.Store(true)
	}
	return n, err
}

// limitedWriter turns the app's first final status into 413 when the body
// was over the limit before the header went out. Informational responses
// (1xx but 101) pass through and leave the final status to come.
type limitedWriter struct {
	runner.ResponseWrapper
	msg         string
	over        atomic.Bool
	wroteHeader bool
	replaced    bool
}

// interim reports whether code is an informational status (1xx) other
// than 101: one the app may send before its final status, which is still
// to come.
func interim(code int) bool {
	return code >= 100 && code < 200 && code != http.StatusSwitchingProtocols
}

func (w *limitedWriter) WriteHeader(code int) {
	if w.wroteHeader {
		return
	}
	if interim(code) {
		w.ResponseWriter.WriteHeader(code)
		return
	}
	w.wroteHeader = true
	if w.over.Load() {
		w.replaced = true
		w.Header().Set("Connection", "close")
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Del("Content-Length")
		w.ResponseWriter.WriteHeader(http.StatusRequestEntityTooLarge)
		io.WriteString(w.ResponseWriter, w.msg+"\n")
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *limitedWriter) Write(b []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.replaced {
		return 0, errors.New("limits: request body over max_body_bytes; response replaced by 413")
	}
	return w.ResponseWriter.Write(b)
}

// BeforeFlush sends the header (or the 413 that replaces the response,
// which then has nothing to flush; runner.ResponseHooks).
func (w *limitedWriter) BeforeFlush() (bool, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	return !w.replaced, nil
}

// Hijacked does nothing: the app owns the connection (runner.ResponseHooks).
func (w *limitedWriter) Hijacked() {}

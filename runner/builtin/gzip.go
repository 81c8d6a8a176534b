package builtin

import (
	"compress/gzip"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/runner"
)

// gzipKeys are the local keys egg:paster#gzip reads (Keys).
var gzipKeys = []string{"compress_level"}

// gzipMaxConcurrent is the most responses one gzip filter compresses at
// once: at about 1 MB a compressor, a quarter of a gigabyte at most.
const gzipMaxConcurrent = 256

// gzipFactory is egg:paster#gzip, Paste's GzipMiddleware. compress_level
// (1-9, default 6) is the gzip level; any other value is an error naming
// the key.
//
// A response being compressed holds a compressor (about 0.8 MB at levels
// 2-9, 1.2 MB at level 1) until the app has written all of it, so as long
// as a slow client takes to read it, or a stream runs. To bound that
// memory whatever clients do, at most gzipMaxConcurrent (256) responses
// are compressed at once; one that would be compressed while that many
// others are is sent as it is (uncompressed is always a valid answer; it
// still carries Vary: Accept-Encoding).
//
// A response is compressed when the client accepts gzip (Accept-Encoding,
// honouring q=0), its Content-Type is text/* or application/* without "zip"
// in it (as Paste; images and archives are not), it has no Content-Encoding
// or Content-Range, its status allows a body and is not 206, and the app
// wrote something. A Content-Type the app did not set is sniffed from the
// first write. Compressed responses lose Content-Length, gain
// "Content-Encoding: gzip" and have a strong ETag made weak. Every response
// of a compressible type gets "Vary: Accept-Encoding", compressed or not.
//
// Streaming works: Flush on the writer flushes the gzip stream and then the
// connection, so server-sent events and long-polls reach the client at
// once. Hijack and, through Unwrap, the http.ResponseController methods are
// kept.
func gzipFactory(next http.Handler, global map[string]string, local entrypoints.Local) (http.Handler, error) {
	warnUnknown("gzip", local, gzipKeys)
	level, err := local.Int("compress_level", 6)
	if err != nil {
		return nil, err
	}
	if level < 1 || level > 9 {
		return nil, local.Errorf("compress_level", "level %d out of range 1-9", level)
	}
	g := &gzipFilter{next: next, max: gzipMaxConcurrent}
	g.pool.New = func() any {
		w, _ := gzip.NewWriterLevel(io.Discard, level)
		return w
	}
	return g, nil
}

type gzipFilter struct {
	next   http.Handler
	pool   sync.Pool    // *gzip.Writer
	max    int64        // gzipMaxConcurrent (tests lower it)
	active atomic.Int64 // responses being compressed
}

// acquire reports whether a response may be compressed now, taking one of
// the max_concurrent slots; release gives it back.
func (g *gzipFilter) acquire() bool {
	if g.active.Add(1) > g.max {
		g.active.Add(-1)
		return false
	}
	return true
}

func (g *gzipFilter) release() { g.active.Add(-1) }

// ObserveRejected passes a request the server answered itself on
// (runner.RejectObserver).
func (g *gzipFilter) ObserveRejected(r *http.Request, code int) {
	runner.ObserveRejected(g.next, r, code)
}

func (g *gzipFilter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	gw := &gzipWriter{g: g, accepts: acceptsGzip(r.Header.Values("Accept-Encoding"))}
	gw.ResponseWrapper = runner.WrapResponse(w, gw)
	defer gw.finish()
	g.next.ServeHTTP(gw, r)
}

// acceptsGzip reports whether Accept-Encoding allows gzip (see
// encodingQ).
func acceptsGzip(values []string) bool { return encodingQ(values, "gzip") > 0 }

// encodingQ returns the quality Accept-Encoding (the header's values) gives
// coding: its own entry's q (x-gzip counts as gzip), else that of "*", else
// 0. An entry without q has 1; an unreadable q counts as 1, as before.
//
// The header is read in place, one entry and parameter at a time, and a
// q is parsed only for the entries that matter: any client may send a
// header as long as max_header_bytes, and splitting it cost some 15 times
// its length.
func encodingQ(values []string, coding string) float64 {
	star := 0.0
	for _, v := range values {
		for v != "" {
			var entry string
			entry, v, _ = strings.Cut(v, ",")
			name, params, _ := strings.Cut(entry, ";")
			name = strings.TrimSpace(name)
			match := strings.EqualFold(name, coding) || (coding == "gzip" && strings.EqualFold(name, "x-gzip"))
			if !match && name != "*" {
				continue
			}
			q := 1.0
			for params != "" {
				var p string
				p, params, _ = strings.Cut(params, ";")
				if k, val, ok := strings.Cut(p, "="); ok && strings.EqualFold(strings.TrimSpace(k), "q") {
					q = qValue(val)
				}
			}
			if match {
				return q
			}
			star = q
		}
	}
	return star
}

// qValue reads a q parameter's value: 1 when it is not a number. Only
// digits with at most one dot, 8 characters at most, reach ParseFloat,
// which then cannot fail (its errors allocate).
func qValue(s string) float64 {
	s = strings.TrimSpace(s)
	if s == "" || s == "." || len(s) > 8 || strings.Count(s, ".") > 1 || strings.Trim(s, "0123456789.") != "" {
		return 1
	}
	f, _ := strconv.ParseFloat(s, 64) // digits with at most one dot: no error
	return f
}

// compressible reports whether a Content-Type is worth compressing.
func compressible(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		mt = strings.ToLower(strings.TrimSpace(ct))
	}
	return (strings.HasPrefix(mt, "text/") || strings.HasPrefix(mt, "application/")) && !strings.Contains(mt, "zip")
}

// gzipWriter decides at the first write (or flush, or the end) whether to
// compress, holding back the status the app wrote until then.
type gzipWriter struct {
	runner.ResponseWrapper
	g        *gzipFilter
	accepts  bool
	status   int // written by the app, not yet sent
	decided  bool
	hijacked bool
	gz       *gzip.Writer // nil unless compressing
}

func (w *gzipWriter) WriteHeader(code int) {
	if w.decided {
		w.ResponseWriter.WriteHeader(code) // superfluous: net/http logs it
		return
	}
	if interim(code) {
		w.ResponseWriter.WriteHeader(code) // informational: passes now
		return
	}
	if w.status == 0 {
		w.status = code
	}
}

// decide sends the held status with the headers of the chosen encoding.
// first is the first data written (nil when there is none yet).
func (w *gzipWriter) decide(first []byte) {
	w.decided = true
	status := w.status
	if status == 0 {
		status = http.StatusOK
	}
	h := w.ResponseWriter.Header()
	ct := h.Get("Content-Type")
	if ct == "" && len(first) > 0 && h.Get("Content-Encoding") == "" {
		ct = http.DetectContentType(first)
	}
	eligible := ct != "" && compressible(ct) && h.Get("Content-Encoding") == "" &&
		h.Get("Content-Range") == "" && status >= 200 && status != http.StatusNoContent &&
		status != http.StatusNotModified && status != http.StatusPartialContent
	if eligible {
		if !varyHas(h, "Accept-Encoding") {
			h.Add("Vary", "Accept-Encoding")
		}
		if w.accepts && len(first) > 0 && w.g.acquire() {
			if h.Get("Content-Type") == "" {
				h.Set("Content-Type", ct) // sniffing compressed bytes would fail
			}
			h.Del("Content-Length")
			h.Set("Content-Encoding", "gzip")
			if et := h.Get("ETag"); et != "" && !strings.HasPrefix(et, "W/") {
				h.Set("ETag", "W/"+et)
			}
			w.gz = w.g.pool.Get().(*gzip.Writer)
			w.gz.Reset(w.ResponseWriter)
		}
	}
	w.ResponseWriter.WriteHeader(status)
}

func varyHas(h http.Header, name string) bool {
	for _, v := range h.Values("Vary") {
		for _, f := range strings.Split(v, ",") {
			if f = strings.TrimSpace(f); f == "*" || strings.EqualFold(f, name) {
				return true
			}
		}
	}
	return false
}

func (w *gzipWriter) Write(p []byte) (int, error) {
	if !w.decided {
		if len(p) == 0 {
			return 0, nil
		}
		w.decide(p)
	}
	if w.gz != nil {
		return w.gz.Write(p)
	}
	return w.ResponseWriter.Write(p)
}

// BeforeFlush decides, and flushes the gzip stream (if any) before the
// connection is flushed (runner.ResponseHooks).
func (w *gzipWriter) BeforeFlush() (bool, error) {
	if !w.decided {
		w.decide(nil)
	}
	if w.gz != nil {
		if err := w.gz.Flush(); err != nil {
			return false, err
		}
	}
	return true, nil
}

// Hijacked notes that the connection was taken over: nothing is
// compressed afterwards (runner.ResponseHooks).
func (w *gzipWriter) Hijacked() { w.hijacked, w.decided = true, true }

// finish ends the gzip stream (unless the connection was hijacked: then
// it is the app's) and returns the writer to the pool and its slot.
func (w *gzipWriter) finish() {
	if !w.decided && !w.hijacked {
		w.decide(nil)
	}
	if w.gz != nil {
		if !w.hijacked {
			w.gz.Close()
		}
		w.gz.Reset(io.Discard)
		w.g.pool.Put(w.gz)
		w.gz = nil
		w.g.release()
	}
}

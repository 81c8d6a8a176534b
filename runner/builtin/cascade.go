package builtin

import (
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/runner"
)

// CascadeMaxReplay is how many bytes of a request body cascade keeps so
// that it can replay the body to the next app. A non-final app that reads
// further gets a *http.MaxBytesError from its read, and unless it has sent
// its response header already, its response is replaced by 413 since the
// body can no longer be replayed.
// The final app reads the whole body, replayed part first, unbounded (the
// server's max_body_bytes still applies).
const CascadeMaxReplay = 10 << 20

// cascadeFactory is egg:paster#cascade, Paste's Cascade composite. Keys
// starting with "app" name the apps (section names or URIs, loaded with the
// composite's global conf), tried in the order of their key names sorted as
// strings, as Paste does (so app10 comes before app2); catch lists the
// status codes that move on to the next app (space-separated, default 404).
// Any other key is an error "bad configuration key". The request body is
// recorded as apps read it (up to CascadeMaxReplay) so every app reads it
// from the start; the response of an app whose status is caught is
// discarded; the last app's response is passed through as it is, whatever
// its status, and streams.
func cascadeFactory(l entrypoints.Loader, global map[string]string, local entrypoints.Local) (http.Handler, error) {
	c := &cascade{catch: map[int]bool{}, maxReplay: CascadeMaxReplay}
	if _, ok := local.Lookup("catch"); !ok {
		c.catch[http.StatusNotFound] = true
	}
	for _, f := range local.List("catch") {
		code, err := strconv.Atoi(f)
		if err != nil || code < 100 || code > 999 {
			return nil, local.Errorf("catch", "bad status code %q", f)
		}
		c.catch[code] = true
	}
	var names []string
	for _, key := range local.Keys() {
		switch {
		case key == "catch":
		case strings.HasPrefix(key, "app"):
			names = append(names, key)
		default:
			return nil, local.Errorf(key, "bad configuration key %q (= %q); all configuration keys must start with 'app' (or be 'catch')", key, local.Get(key))
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("cascade: no apps (give keys app1, app2, ...)")
	}
	sort.Strings(names)
	for _, key := range names {
		app, err := l.App(strings.TrimSpace(local.Get(key)), global)
		if err != nil {
			return nil, local.Errorf(key, "%w", err)
		}
		c.apps = append(c.apps, app)
	}
	return c, nil
}

type cascade struct {
	apps      []http.Handler
	catch     map[int]bool
	maxReplay int
}

// ObserveRejected passes a request the server answered itself to the
// first app, the one every request reaches (runner.RejectObserver).
func (c *cascade) ObserveRejected(r *http.Request, code int) {
	runner.ObserveRejected(c.apps[0], r, code)
}

func (c *cascade) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	last := len(c.apps) - 1
	var body *replayBody
	if r.Body != nil && r.Body != http.NoBody {
		body = &replayBody{src: r.Body, limit: c.maxReplay}
	}
	for i, app := range c.apps {
		r2 := r
		if body != nil {
			r2 = new(http.Request)
			*r2 = *r
			r2.Body = &replayReader{b: body, record: i < last}
		}
		if i == last {
			app.ServeHTTP(w, r2)
			return
		}
		cw := &catchWriter{catch: c.catch, header: w.Header().Clone(), body: body}
		cw.ResponseWrapper = runner.WrapResponse(w, cw)
		app.ServeHTTP(cw, r2)
		if !cw.caught {
			if !cw.decided {
				cw.WriteHeader(http.StatusOK)
			}
			return
		}
		if body != nil && body.overflow {
			http.Error(w, fmt.Sprintf("request body over %d bytes cannot be replayed to the next app", c.maxReplay), http.StatusRequestEntityTooLarge)
			return
		}
	}
}

// replayBody records a request body as the apps of a cascade read it.
type replayBody struct {
	src      io.ReadCloser
	buf      []byte
	limit    int
	overflow bool
	err      error // the source's final error (io.EOF at the end)
}

// replayReader reads a replayBody from the start: recorded bytes first,
// then the source, recording what it reads unless it is the final app's.
type replayReader struct {
	b      *replayBody
	pos    int
	record bool
}

func (r *replayReader) Read(p []byte) (int, error) {
	b := r.b
	if r.pos < len(b.buf) {
		n := copy(p, b.buf[r.pos:])
		r.pos += n
		return n, nil
	}
	if b.err != nil {
		return 0, b.err
	}
	if r.record {
		room := b.limit - len(b.buf)
		if room <= 0 {
			b.overflow = true
			return 0, &http.MaxBytesError{Limit: int64(b.limit)}
		}
		if len(p) > room {
			p = p[:room]
		}
	}
	n, err := b.src.Read(p)
	if r.record {
		b.buf = append(b.buf, p[:n]...)
		r.pos += n
	} else {
		// The final reader never looks back; keep pos past the record.
		r.pos = len(b.buf)
	}
	if err != nil {
		b.err = err
	}
	return n, err
}

// Close does nothing: the server closes the real body.
func (r *replayReader) Close() error { return nil }

// catchWriter holds back a non-final app's response until its status is
// known: a caught status discards the response, any other sends it on.
type catchWriter struct {
	runner.ResponseWrapper
	catch   map[int]bool
	header  http.Header
	body    *replayBody // nil without a request body
	decided bool
	caught  bool
}

func (c *catchWriter) Header() http.Header { return c.header }

// WriteHeader decides: a caught code discards the response, another sends
// the held headers and the code. 1xx responses of a non-final app are dropped.
func (c *catchWriter) WriteHeader(code int) {
	if c.decided || interim(code) {
		if c.decided && !c.caught {
			c.ResponseWriter.WriteHeader(code) // superfluous; net/http logs it
		}
		return
	}
	c.decided = true
	if c.catch[code] || (c.body != nil && c.body.overflow) {
		// An app that read past the replay limit answers about an error
		// the cascade caused: its response is replaced by 413.
		c.caught = true
		return
	}
	dst := c.ResponseWriter.Header()
	for k := range dst {
		if _, ok := c.header[k]; !ok {
			delete(dst, k)
		}
	}
	for k, v := range c.header {
		dst[k] = v
	}
	c.header = dst
	c.ResponseWriter.WriteHeader(code)
}

func (c *catchWriter) Write(p []byte) (int, error) {
	if !c.decided {
		c.WriteHeader(http.StatusOK)
	}
	if c.caught {
		return len(p), nil
	}
	return c.ResponseWriter.Write(p)
}

// BeforeFlush commits a 200 if nothing was decided; a passed response is
// then flushed, a caught one has nothing to flush (runner.ResponseHooks).
func (c *catchWriter) BeforeFlush() (bool, error) {
	if !c.decided {
		c.WriteHeader(http.StatusOK)
	}
	return !c.caught, nil
}

// Hijacked notes that the app took the connection; the cascade ends with
// it (runner.ResponseHooks).
func (c *catchWriter) Hijacked() { c.decided = true }

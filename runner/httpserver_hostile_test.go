package runner

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/paster-dev/paster/internal/testsync"
)

// Hostile clients against the TLS and HTTP/2 surface: each test is a
// client that misbehaves on a real socket, and the proof that the server
// bounds what it holds for it and keeps serving a good client.

// insecureClient is an HTTPS client of a server with ssl_pem = * that
// offers HTTP/2 and HTTP/1.1, or only HTTP/1.1 when h1 is set.
func insecureClient(h1 bool) *http.Client {
	tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: !h1}
	if h1 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

// h2cClient is a cleartext HTTP/2 client (prior knowledge).
func h2cClient() *http.Client {
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: &http.Transport{Protocols: p}, Timeout: 20 * time.Second}
}

// partialClientHello returns the first n bytes of a real ClientHello.
func partialClientHello(t *testing.T, n int) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	go tls.Client(a, &tls.Config{InsecureSkipVerify: true}).Handshake()
	buf := make([]byte, 64<<10)
	b.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAtLeast(b, buf, n)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:min(got, n)]
}

// closedByServer reports whether the server ends c (EOF or reset) before
// the deadline, reading and dropping what it sends meanwhile.
func closedByServer(c net.Conn, within time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(within))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// TestTLSHandshakeBounded: over TLS, read_header_timeout bounds the
// handshake too. Clients that open a TCP connection and send nothing, half
// a ClientHello or garbage each take a max_connections slot while they
// stall, but the server ends them after read_header_timeout, and a good
// client, waiting in the listen backlog behind them meanwhile, is served.
func TestTLSHandshakeBounded(t *testing.T) {
	t.Parallel()
	half := partialClientHello(t, 40)
	stallers := []struct {
		name string
		send []byte
	}{
		{"silent", nil},
		{"half ClientHello", half},
		{"TLS record header only", half[:5]},
		{"garbage", []byte("\x16\x03\x01\xff\xff" + strings.Repeat("\x00", 100))},
		{"plain HTTP", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")},
	}
	for _, st := range stallers {
		t.Run(st.name, func(t *testing.T) {
			t.Parallel()
			const slots = 2
			s := serve(t, protoApp, "ssl_pem", "*", "max_connections", fmt.Sprint(slots),
				"read_header_timeout", "500ms", "idle_timeout", "1m")
			var conns []net.Conn
			for range slots + 1 {
				c, err := net.Dial("tcp", s.addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				if _, err := c.Write(st.send); err != nil {
					t.Fatal(err)
				}
				conns = append(conns, c)
			}
			// The good client queues behind the stalled ones.
			if got := getBody(t, insecureClient(false), "https://"+s.addr+"/"); got != "HTTP/2.0 tls=true" {
				t.Errorf("good client got %q", got)
			}
			for i, c := range conns {
				if !closedByServer(c, 15*time.Second) {
					t.Errorf("stalled connection %d still open", i)
				}
			}
		})
	}
}

// TestTLSWithoutALPN: a TLS client that offers no ALPN protocol at all is
// served HTTP/1.1.
func TestTLSWithoutALPN(t *testing.T) {
	t.Parallel()
	s := serve(t, protoApp, "ssl_pem", "*")
	c, err := tls.Dial("tcp", s.addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	if p := c.ConnectionState().NegotiatedProtocol; p != "" {
		t.Errorf("negotiated %q without ALPN", p)
	}
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if string(body) != "HTTP/1.1 tls=true" {
		t.Errorf("got %q", body)
	}
}

// h2Conn is a raw HTTP/2 client connection for crafting frames.
type h2Conn struct {
	net.Conn
	fr  *http2.Framer
	enc *hpack.Encoder
	hb  bytes.Buffer
}

// dialH2 opens an HTTP/2 connection (over TLS with ALPN h2, or h2c with
// prior knowledge) with a small receive buffer, and sends the preface and
// a SETTINGS frame with the settings given.
func dialH2(t *testing.T, addr string, overTLS bool, settings ...http2.Setting) *h2Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	// A small receive buffer: a client that does not read stalls the
	// server's writes after a few frames, not after megabytes.
	c.(*net.TCPConn).SetReadBuffer(8 << 10)
	if overTLS {
		tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		tc.SetDeadline(time.Time{})
		c = tc
	}
	t.Cleanup(func() { c.Close() })
	h := &h2Conn{Conn: c, fr: http2.NewFramer(c, c)}
	h.enc = hpack.NewEncoder(&h.hb)
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := h.fr.WriteSettings(settings...); err != nil {
		t.Fatal(err)
	}
	return h
}

// headerBlock encodes a GET of path with extra header fields.
func (h *h2Conn) headerBlock(path string, extra ...string) []byte {
	h.hb.Reset()
	fields := append([]string{":method", "GET", ":scheme", "https", ":authority", "x", ":path", path}, extra...)
	for i := 0; i+1 < len(fields); i += 2 {
		h.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	return append([]byte(nil), h.hb.Bytes()...)
}

// get opens stream id with a GET of path.
func (h *h2Conn) get(id uint32, path string, extra ...string) error {
	return h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h.headerBlock(path, extra...), EndStream: true, EndHeaders: true})
}

// parkApp parks each request until its context ends, counting the
// handlers running; /ok answers at once.
type parkApp struct {
	running, most, total atomic.Int64
	mu                   sync.Mutex
}

func (a *parkApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/ok" {
		io.WriteString(w, "ok")
		return
	}
	n := a.running.Add(1)
	a.total.Add(1)
	a.mu.Lock()
	a.most.Store(max(a.most.Load(), n))
	a.mu.Unlock()
	defer a.running.Add(-1)
	if r.URL.Path == "/stream" {
		w.WriteHeader(200)
		chunk := bytes.Repeat([]byte("x"), 32<<10)
		for {
			if _, err := w.Write(chunk); err != nil {
				return
			}
			if err := http.NewResponseController(w).Flush(); err != nil {
				return
			}
		}
	}
	<-r.Context().Done()
}

// goodGet checks that a new client is served /ok over the protocol.
func goodGet(t *testing.T, url string, overTLS bool) {
	t.Helper()
	c := h2cClient()
	if overTLS {
		c = insecureClient(false)
	}
	if got := getBody(t, c, url+"/ok"); got != "ok" {
		t.Errorf("good client got %q", got)
	}
}

func serveH2(t *testing.T, app http.Handler, overTLS bool, pairs ...string) (*served, string) {
	t.Helper()
	if overTLS {
		s := serve(t, app, append([]string{"ssl_pem", "*"}, pairs...)...)
		return s, "https://" + s.addr
	}
	s := serve(t, app, append([]string{"h2c", "true"}, pairs...)...)
	return s, s.url
}

// flood writes the frame write makes, again and again, without reading
// what the server answers, for up to chunks × 1000 frames, and returns
// the error that ended it: nil when all went (or a minute passed), a
// timeout when the server read none of a chunk for stall.
func flood(t *testing.T, h *h2Conn, chunks int, stall time.Duration, write func(*http2.Framer) error) error {
	t.Helper()
	var chunk bytes.Buffer
	fr := http2.NewFramer(&chunk, nil)
	for range 1000 {
		if err := write(fr); err != nil {
			t.Fatal(err)
		}
	}
	end := time.Now().Add(time.Minute)
	for range chunks {
		if time.Now().After(end) {
			return nil
		}
		h.SetWriteDeadline(time.Now().Add(stall))
		if _, err := h.Write(chunk.Bytes()); err != nil {
			return err
		}
	}
	return nil
}

// TestHTTP2Hostile: HTTP/2 clients that misbehave, over TLS and h2c. After
// each, the server has ended the attacking connection where it must, the
// handlers the attack started have returned (their contexts cancelled),
// and a good client is served.
func TestHTTP2Hostile(t *testing.T) {
	t.Parallel()
	attacks := []struct {
		name  string
		pairs []string
		// run attacks over h and checks what the server did to h.
		run func(t *testing.T, h *h2Conn)
		// check checks the handlers after the attack.
		check func(t *testing.T, a *parkApp)
		// cancels: the attack itself ends its handlers (their
		// contexts are cancelled while its connection is open).
		cancels bool
	}{
		{name: "rapid reset", run: func(t *testing.T, h *h2Conn) {
			// CVE-2023-44487: net/http runs at most
			// MaxConcurrentStreams handlers of a connection, reset or
			// not, and ends a connection that queues more.
			go io.Copy(io.Discard, h)
			for i := range 5000 {
				id := uint32(2*i + 1)
				if h.get(id, "/park") != nil || h.fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
					break // the server ended the connection: fine
				}
			}
		}, cancels: true, check: func(t *testing.T, a *parkApp) {
			if a.total.Load() == 0 {
				t.Error("no handler ran: the resets cancelled nothing")
			}
			if m := a.most.Load(); m > DefaultHTTP2MaxConcurrentStreams {
				t.Errorf("%d handlers ran at once on one connection, more than %d streams", m, DefaultHTTP2MaxConcurrentStreams)
			}
		}},
		{name: "more streams than allowed", pairs: []string{"http2_max_concurrent_streams", "5"}, run: func(t *testing.T, h *h2Conn) {
			go io.Copy(io.Discard, h)
			for i := range 50 {
				if h.get(uint32(2*i+1), "/park") != nil {
					break
				}
			}
		}, check: func(t *testing.T, a *parkApp) {
			if m := a.most.Load(); m > 5 {
				t.Errorf("%d handlers ran at once on one connection with http2_max_concurrent_streams = 5", m)
			}
		}},
		{name: "PING flood", run: func(t *testing.T, h *h2Conn) {
			// Each PING asks for an ACK, 170 MB of them, which a
			// client that reads nothing leaves to queue: the server
			// must end the connection (or at least stop reading it)
			// rather than hold them.
			err := flood(t, h, 10000, 10*time.Second, func(fr *http2.Framer) error { return fr.WritePing(false, [8]byte{1}) })
			if err == nil {
				t.Error("the server took 10 million PINGs from a client reading none of the ACKs")
			}
		}},
		{name: "SETTINGS flood", run: func(t *testing.T, h *h2Conn) {
			// net/http answers any number of SETTINGS frames with one
			// ACK: nothing queues, so the connection may stay.
			flood(t, h, 200, time.Second, func(fr *http2.Framer) error {
				return fr.WriteSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 0})
			})
		}},
		{name: "CONTINUATION flood", pairs: []string{"max_header_bytes", "4k"}, run: func(t *testing.T, h *h2Conn) {
			// CVE-2023-45288: one header block without end, far
			// beyond max_header_bytes.
			if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: h.headerBlock("/park"), EndStream: true}); err != nil {
				t.Fatal(err)
			}
			err := flood(t, h, 1000, 10*time.Second, func(fr *http2.Framer) error {
				h.hb.Reset()
				h.enc.WriteField(hpack.HeaderField{Name: "x-a", Value: strings.Repeat("y", 100)})
				return fr.WriteContinuation(1, false, h.hb.Bytes())
			})
			if err == nil {
				t.Error("the server took a 100 MB header block")
			}
		}},
	}
	for _, overTLS := range []bool{true, false} {
		for _, at := range attacks {
			t.Run(fmt.Sprintf("%s/tls=%v", at.name, overTLS), func(t *testing.T) {
				t.Parallel()
				app := &parkApp{}
				s, url := serveH2(t, app, overTLS, append([]string{"idle_timeout", "1m"}, at.pairs...)...)
				h := dialH2(t, s.addr, overTLS)
				defer h.Close()
				at.run(t, h)
				goodGet(t, url, overTLS)
				if at.cancels {
					testsync.WaitFor(t, "the reset streams' handlers to return", func() bool { return app.running.Load() == 0 })
				}
				h.Close()
				testsync.WaitFor(t, "the attack's handlers to return", func() bool { return app.running.Load() == 0 })
				if at.check != nil {
					at.check(t, app)
				}
			})
		}
	}
}

// TestHTTP2WriteStall: an HTTP/2 client that opens a stream with a huge
// flow-control window and then never reads its socket holds the only
// connection slot (max_connections = 1) with a stream the server cannot
// write. write_timeout ends the connection (HTTP/2's writes are the
// connection's, not the handler's), the handler returns, and a good client
// waiting in the backlog is served, long before idle_timeout.
func TestHTTP2WriteStall(t *testing.T) {
	t.Parallel()
	for _, overTLS := range []bool{true, false} {
		t.Run(fmt.Sprintf("tls=%v", overTLS), func(t *testing.T) {
			t.Parallel()
			app := &parkApp{}
			s, url := serveH2(t, app, overTLS, "max_connections", "1", "write_timeout", "500ms", "idle_timeout", "5m")
			const huge = 1<<31 - 1
			h := dialH2(t, s.addr, overTLS, http2.Setting{ID: http2.SettingInitialWindowSize, Val: huge})
			defer h.Close()
			if err := h.fr.WriteWindowUpdate(0, huge-65535); err != nil {
				t.Fatal(err)
			}
			if err := h.get(1, "/stream"); err != nil {
				t.Fatal(err)
			}
			testsync.WaitFor(t, "the stream's handler", func() bool { return app.total.Load() == 1 })
			goodGet(t, url, overTLS)
			testsync.WaitFor(t, "the stream's handler to return", func() bool { return app.running.Load() == 0 })
		})
	}
}

// TestHTTP2WindowExhausted: HTTP/2 clients that open streams to a
// streaming handler and never grant flow-control window (but read their
// socket, so the connection itself is fine): each handler's write blocks on
// the window, and write_timeout (the per-write deadline) resets its stream,
// so the handlers return instead of piling up.
func TestHTTP2WindowExhausted(t *testing.T) {
	t.Parallel()
	for _, overTLS := range []bool{true, false} {
		t.Run(fmt.Sprintf("tls=%v", overTLS), func(t *testing.T) {
			t.Parallel()
			app := &parkApp{}
			s, url := serveH2(t, app, overTLS, "write_timeout", "500ms", "idle_timeout", "5m")
			h := dialH2(t, s.addr, overTLS)
			defer h.Close()
			go io.Copy(io.Discard, h)
			const streams = 10
			for i := range streams {
				if err := h.get(uint32(2*i+1), "/stream"); err != nil {
					t.Fatal(err)
				}
			}
			testsync.WaitFor(t, "the streams' handlers", func() bool { return app.total.Load() == streams })
			testsync.WaitFor(t, "the stalled handlers to return", func() bool { return app.running.Load() == 0 })
			goodGet(t, url, overTLS)
		})
	}
}

// TestHTTP2HandlerTimeout: handler_timeout cuts one HTTP/2 stream (503
// before the response started, reset after), not the connection: another
// request on the same connection is served.
func TestHTTP2HandlerTimeout(t *testing.T) {
	t.Parallel()
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/started":
			w.WriteHeader(200)
			http.NewResponseController(w).Flush()
			<-r.Context().Done()
		case "/silent":
			<-r.Context().Done()
		default:
			io.WriteString(w, "ok")
		}
	})
	for _, overTLS := range []bool{true, false} {
		t.Run(fmt.Sprintf("tls=%v", overTLS), func(t *testing.T) {
			t.Parallel()
			_, url := serveH2(t, app, overTLS, "handler_timeout", "300ms")
			c := h2cClient()
			if overTLS {
				c = insecureClient(false)
			}
			var conns sync.Map
			trace := func(path string) *http.Request {
				req, _ := http.NewRequest("GET", url+path, nil)
				return req.WithContext(httptraceConn(req.Context(), &conns, path))
			}
			resp, err := c.Do(trace("/silent"))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable || resp.ProtoMajor != 2 {
				t.Errorf("silent handler: %s %s, want HTTP/2 503", resp.Proto, resp.Status)
			}
			resp, err = c.Do(trace("/started"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.ReadAll(resp.Body); err == nil {
				t.Error("a started response past handler_timeout ended cleanly")
			}
			resp.Body.Close()
			resp, err = c.Do(trace("/ok"))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) != "ok" {
				t.Errorf("after the timeouts: %q", body)
			}
			first, _ := conns.Load("/silent")
			last, _ := conns.Load("/ok")
			if first == nil || first != last {
				t.Error("the timeouts ended the HTTP/2 connection")
			}
		})
	}
}

// httptraceConn records in conns, under key, the local address of the
// connection a request went on.
func httptraceConn(ctx context.Context, conns *sync.Map, key string) context.Context {
	return httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
		conns.Store(key, i.Conn.LocalAddr().String())
	}})
}

// TestHTTP2OversizedHeader: over HTTP/2, a header block somewhat beyond
// max_header_bytes gets 431 on its stream and the connection goes on (a
// request after it on the same connection is served); one whose encoded
// size is more than twice the limit is a connection error (net/http does
// not decode it): GOAWAY, and the server serves the next client.
func TestHTTP2OversizedHeader(t *testing.T) {
	t.Parallel()
	var many []string
	for i := range 50 { // 6.8k of fields, 5.4k encoded, with max_header_bytes = 4k
		many = append(many, fmt.Sprintf("x-f%d", i), strings.Repeat("y", 100))
	}
	tests := []struct {
		name   string
		fields []string
		want   map[uint32]string // :status by stream; nil: GOAWAY
	}{
		{"too large", many, map[uint32]string{1: "431", 3: "200"}},
		{"far too large", []string{"x-big", strings.Repeat("y", 12<<10)}, nil},
	}
	for _, overTLS := range []bool{true, false} {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%s/tls=%v", tt.name, overTLS), func(t *testing.T) {
				t.Parallel()
				s, url := serveH2(t, &parkApp{}, overTLS, "max_header_bytes", "4k")
				h := dialH2(t, s.addr, overTLS)
				h.SetDeadline(time.Now().Add(20 * time.Second))
				if err := h.get(1, "/ok", tt.fields...); err != nil {
					t.Fatal(err)
				}
				if err := h.get(3, "/ok"); err != nil {
					t.Fatal(err)
				}
				status := map[uint32]string{}
				dec := hpack.NewDecoder(4096, nil)
				for len(status) < 2 {
					f, err := h.fr.ReadFrame()
					if err != nil {
						t.Fatalf("reading the responses: %v (got %v)", err, status)
					}
					if g, ok := f.(*http2.GoAwayFrame); ok {
						if tt.want != nil || g.ErrCode == http2.ErrCodeNo {
							t.Errorf("GOAWAY %v, want %v", g.ErrCode, tt.want)
						}
						goodGet(t, url, overTLS)
						return
					}
					hf, ok := f.(*http2.HeadersFrame)
					if !ok {
						continue
					}
					fields, err := dec.DecodeFull(hf.HeaderBlockFragment())
					if err != nil {
						t.Fatal(err)
					}
					for _, fld := range fields {
						if fld.Name == ":status" {
							status[hf.StreamID] = fld.Value
						}
					}
				}
				if fmt.Sprint(status) != fmt.Sprint(tt.want) {
					t.Errorf("statuses %v, want %v", status, tt.want)
				}
			})
		}
	}
}

package runner

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/internal/testsync"
)

// at is where test keys claim to be written, so that errors can be checked
// for file, line and section.
var at = entrypoints.Location{File: "test.ini", Line: 7, Section: "server:main"}

func localOf(pairs ...string) entrypoints.Local {
	var l entrypoints.Local
	for i := 0; i+1 < len(pairs); i += 2 {
		l = l.With(pairs[i], pairs[i+1], at)
	}
	return l
}

func testLogger(t *testing.T) (hclog.Logger, *testsync.Buffer) {
	t.Helper()
	buf := &testsync.Buffer{}
	return hclog.New(&hclog.LoggerOptions{Name: "test", Output: buf, Level: hclog.Debug}), buf
}

func TestNewHTTPServerConfig(t *testing.T) {
	t.Parallel()
	def := HTTPConfig{
		Addr:              "127.0.0.1:8080",
		ReadHeaderTimeout: DefaultReadHeaderTimeout,
		ReadTimeout:       DefaultReadTimeout,
		WriteTimeout:      DefaultWriteTimeout,
		IdleTimeout:       DefaultIdleTimeout,
		MaxHeaderBytes:    DefaultMaxHeaderBytes,
		MaxBodyBytes:      DefaultMaxBodyBytes,
		ShutdownTimeout:   DefaultShutdownTimeout,
		MaxConnections:    DefaultMaxConnections(),

		HTTP2MaxConcurrentStreams: DefaultHTTP2MaxConcurrentStreams,
	}
	with := func(f func(c *HTTPConfig)) HTTPConfig {
		c := def
		f(&c)
		return c
	}
	tests := []struct {
		name    string
		local   entrypoints.Local
		want    HTTPConfig
		wantErr string // substring; the key and location are checked too
		errKey  string
	}{
		{name: "defaults", want: def},
		{name: "host and port", local: localOf("host", "0.0.0.0", "port", "9000"),
			want: with(func(c *HTTPConfig) { c.Addr = "0.0.0.0:9000" })},
		{name: "host:port wins", local: localOf("host", "localhost:8001", "port", "9000"),
			want: with(func(c *HTTPConfig) { c.Addr = "localhost:8001" })},
		{name: "port 0", local: localOf("port", "0"),
			want: with(func(c *HTTPConfig) { c.Addr = "127.0.0.1:0" })},
		{name: "bracketed ipv6 with port", local: localOf("host", "[::1]:9001"),
			want: with(func(c *HTTPConfig) { c.Addr = "[::1]:9001" })},
		{name: "bare ipv6", local: localOf("host", "::1", "port", "9002"),
			want: with(func(c *HTTPConfig) { c.Addr = "[::1]:9002" })},
		{name: "durations", local: localOf("read_header_timeout", "5", "read_timeout", "1.5s",
			"write_timeout", "250ms", "idle_timeout", "0", "shutdown_timeout", "30"),
			want: with(func(c *HTTPConfig) {
				c.ReadHeaderTimeout, c.ReadTimeout, c.WriteTimeout = 5*time.Second, 1500*time.Millisecond, 250*time.Millisecond
				c.IdleTimeout, c.ShutdownTimeout = 0, 30*time.Second
			})},
		{name: "sizes", local: localOf("max_header_bytes", "64k", "max_body_bytes", "2 MiB"),
			want: with(func(c *HTTPConfig) { c.MaxHeaderBytes, c.MaxBodyBytes = 64<<10, 2<<20 })},
		{name: "body limit off", local: localOf("max_body_bytes", "0"),
			want: with(func(c *HTTPConfig) { c.MaxBodyBytes = 0 })},
		{name: "connection cap and handler timeout", local: localOf("max_connections", "500", "handler_timeout", "30s"),
			want: with(func(c *HTTPConfig) { c.MaxConnections, c.HandlerTimeout = 500, 30*time.Second })},
		{name: "connection cap off", local: localOf("max_connections", "0"),
			want: with(func(c *HTTPConfig) { c.MaxConnections = 0 })},
		{name: "bad connection cap", local: localOf("max_connections", "many"), wantErr: "bad integer value", errKey: "max_connections"},
		{name: "negative connection cap", local: localOf("max_connections", "-1"), wantErr: "negative", errKey: "max_connections"},
		{name: "negative handler timeout", local: localOf("handler_timeout", "-1s"), wantErr: "negative", errKey: "handler_timeout"},
		{name: "http2 streams", local: localOf("http2_max_concurrent_streams", "8"),
			want: with(func(c *HTTPConfig) { c.HTTP2MaxConcurrentStreams = 8 })},
		{name: "no http2 streams", local: localOf("http2_max_concurrent_streams", "0"), wantErr: "at least 1", errKey: "http2_max_concurrent_streams"},
		{name: "bad port", local: localOf("port", "eighty"), wantErr: "bad integer value", errKey: "port"},
		{name: "port out of range", local: localOf("port", "70000"), wantErr: "out of range", errKey: "port"},
		{name: "bad port in host", local: localOf("host", "localhost:http"), wantErr: "bad port", errKey: "host"},
		{name: "bad duration", local: localOf("write_timeout", "soon"), wantErr: "bad duration", errKey: "write_timeout"},
		{name: "negative duration", local: localOf("idle_timeout", "-1"), wantErr: "negative", errKey: "idle_timeout"},
		{name: "bad size", local: localOf("max_body_bytes", "lots"), wantErr: "bad size", errKey: "max_body_bytes"},
		{name: "negative size", local: localOf("max_header_bytes", "-5"), wantErr: "bad size", errKey: "max_header_bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			logger, _ := testLogger(t)
			s, err := NewHTTPServer(tt.local, logger)
			if tt.wantErr != "" {
				if err == nil {
					t.Fatalf("no error, want one containing %q", tt.wantErr)
				}
				for _, want := range []string{tt.wantErr, "test.ini:7 [server:main] " + tt.errKey + ":"} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not contain %q", err, want)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := s.Config(); got != tt.want {
				t.Errorf("config\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestNewHTTPServerWarnsAboutKeys(t *testing.T) {
	t.Parallel()
	tests := []struct {
		key, value, want string
	}{
		{"prot", "1", `did_you_mean=port`},
		{"colour", "1", `unknown server option ignored: key=colour`},
		{"threadpool_workers", "1", `server option ignored: key=threadpool_workers`},
		{"request_queue_size", "1", `listen backlog`},
		{"read_header_timeout", "0", `holds its connection and a max_connections slot for good`},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			t.Parallel()
			logger, buf := testLogger(t)
			if _, err := NewHTTPServer(localOf(tt.key, tt.value), logger); err != nil {
				t.Fatal(err)
			}
			if out := buf.String(); !strings.Contains(out, tt.want) || !strings.Contains(out, "[WARN]") || !strings.Contains(out, "test.http") {
				t.Errorf("log %q does not warn with %q", out, tt.want)
			}
		})
	}
}

// served is a running HTTPServer under test.
type served struct {
	srv    *HTTPServer
	url    string
	addr   string
	cancel context.CancelFunc
	done   chan struct{}    // closed when Serve returned
	err    error            // Serve's result, once done is closed
	log    *testsync.Buffer // the server's log
}

// serve starts an HTTPServer on a free port with the given keys and waits
// until it is bound.
func serve(t *testing.T, app http.Handler, pairs ...string) *served {
	t.Helper()
	logger, logs := testLogger(t)
	srv, err := NewHTTPServer(localOf(append([]string{"port", "0"}, pairs...)...), logger)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &served{srv: srv, cancel: cancel, done: make(chan struct{}), log: logs}
	go func() {
		s.err = srv.Serve(ctx, app)
		close(s.done)
	}()
	select {
	case <-srv.Bound():
	case <-s.done:
		t.Fatalf("Serve returned before binding: %v", s.err)
	}
	s.addr = srv.Addr().String()
	s.url = "http://" + s.addr
	t.Cleanup(func() {
		cancel()
		<-s.done
	})
	return s
}

// stop cancels the server's context and returns Serve's result.
func (s *served) stop() error {
	s.cancel()
	<-s.done
	return s.err
}

func newClient() *http.Client {
	return &http.Client{Transport: &http.Transport{DisableKeepAlives: false}}
}

func TestServeGracefulShutdown(t *testing.T) {
	t.Parallel()
	entered := make(chan struct{})
	release := make(chan struct{})
	ctxErr := make(chan error, 1)
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		ctxErr <- r.Context().Err()
		io.WriteString(w, "finished")
	})
	s := serve(t, app)
	shutdownStarted := make(chan struct{})
	s.srv.OnShutdown(func() { close(shutdownStarted) })

	type result struct {
		body string
		err  error
	}
	got := make(chan result, 1)
	go func() {
		resp, err := newClient().Get(s.url + "/slow")
		if err != nil {
			got <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		got <- result{string(b), err}
	}()
	<-entered
	s.cancel()
	<-shutdownStarted // the server is draining, the request still in flight
	close(release)

	if r := <-got; r.err != nil || r.body != "finished" {
		t.Fatalf("in-flight request: body %q, error %v; want it to finish", r.body, r.err)
	}
	if err := <-ctxErr; err != nil {
		t.Errorf("request context was cancelled by shutdown: %v", err)
	}
	if err := s.stop(); err != nil {
		t.Errorf("Serve after a clean shutdown = %v, want nil", err)
	}
	if _, err := newClient().Get(s.url); err == nil {
		t.Error("server still accepts after shutdown")
	}
}

// TestServeShutdownTimeoutCutsRequests: requests still running after
// shutdown_timeout are cut and counted in Serve's error, over HTTP/1 (whose
// connections count their requests), HTTP/2 over cleartext and over TLS.
func TestServeShutdownTimeoutCutsRequests(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		pairs  []string
		scheme string
		client func() *http.Client
	}{
		{"http1", nil, "http", newClient},
		{"h2c", []string{"h2c", "true"}, "http", h2cClient},
		{"tls", []string{"ssl_pem", "*"}, "https", func() *http.Client { return insecureClient(false) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const requests = 2
			entered := make(chan struct{}, requests)
			app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				entered <- struct{}{}
				<-r.Context().Done() // only the cut ends this request
			})
			s := serve(t, app, append([]string{"shutdown_timeout", "50ms"}, tc.pairs...)...)
			clientErr := make(chan error, requests)
			client := tc.client()
			for range requests {
				go func() {
					resp, err := client.Get(tc.scheme + "://" + s.addr)
					if err == nil {
						resp.Body.Close()
					}
					clientErr <- err
				}()
			}
			for range requests {
				<-entered
			}
			err := s.stop()
			if !errors.Is(err, ErrShutdownTimeout) {
				t.Fatalf("Serve = %v, want an error wrapping ErrShutdownTimeout", err)
			}
			if want := fmt.Sprintf("%d requests still in flight", requests); !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say how many requests were cut (%s)", err, want)
			}
			if !strings.Contains(s.log.String(), fmt.Sprintf("in_flight=%d", requests)) {
				t.Errorf("shutdown log does not count %d requests in flight:\n%s", requests, s.log.String())
			}
			for range requests {
				if err := <-clientErr; err == nil {
					t.Error("client of a cut request got a response")
				}
			}
		})
	}
}

func TestServeBindErrorNamesAddress(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	logger, _ := testLogger(t)
	srv, err := NewHTTPServer(localOf("port", port), logger)
	if err != nil {
		t.Fatal(err)
	}
	err = srv.Serve(context.Background(), http.NotFoundHandler())
	if err == nil || !strings.Contains(err.Error(), "127.0.0.1:"+port) {
		t.Fatalf("Serve on a taken port = %v, want an error naming 127.0.0.1:%s", err, port)
	}
}

func TestServeTwiceIsAnError(t *testing.T) {
	t.Parallel()
	s := serve(t, http.NotFoundHandler())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.srv.ServeListener(context.Background(), ln, http.NotFoundHandler()); err == nil {
		t.Fatal("second ServeListener succeeded")
	}
	if err := s.stop(); err != nil {
		t.Fatalf("first Serve = %v", err)
	}
}

func TestServeListenerAndAddr(t *testing.T) {
	t.Parallel()
	logger, _ := testLogger(t)
	srv, err := NewHTTPServer(localOf("port", "0"), logger)
	if err != nil {
		t.Fatal(err)
	}
	if srv.Addr() != nil {
		t.Fatal("Addr before binding is not nil")
	}
	ln, err := srv.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), ctxKey{}, "from-serve"))
	done := make(chan error, 1)
	go func() {
		done <- srv.ServeListener(ctx, ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprint(w, r.Context().Value(ctxKey{}))
		}))
	}()
	<-srv.Bound()
	if got, want := srv.Addr().String(), ln.Addr().String(); got != want {
		t.Errorf("Addr = %s, want %s", got, want)
	}
	resp, err := newClient().Get("http://" + ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "from-serve" {
		t.Errorf("request context value = %q, want the Serve context's value", b)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

type ctxKey struct{}

func TestMaxBodyBytes(t *testing.T) {
	t.Parallel()
	const limit = 16
	small := strings.Repeat("a", limit)
	big := strings.Repeat("b", limit+1)
	tests := []struct {
		name    string
		body    string
		chunked bool
		handler http.HandlerFunc
		status  int
		want    string // body prefix
		called  bool   // whether the app must have been called
	}{
		{name: "under the limit", body: small, handler: echo, status: 200, want: small, called: true},
		{name: "chunked under the limit", body: small, chunked: true, handler: echo, status: 200, want: small, called: true},
		{name: "content-length over", body: big, handler: echo, status: 413, want: "request body larger than max_body_bytes (16 bytes)"},
		{name: "chunked over, app answers 400", body: big, chunked: true, handler: echo, status: 413, want: "request body larger", called: true},
		{name: "chunked over, app ignores the error", body: big, chunked: true, status: 413, want: "request body larger", called: true,
			handler: func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				w.Header().Set("X-App", "yes")
				io.WriteString(w, "ok")
			}},
		{name: "chunked over, app writes nothing", body: big, chunked: true, status: 413, want: "request body larger", called: true,
			handler: func(w http.ResponseWriter, r *http.Request) { io.Copy(io.Discard, r.Body) }},
		{name: "chunked over, app streamed its header first", body: big, chunked: true, status: 200, want: "started", called: true,
			handler: func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, "started")
				w.(http.Flusher).Flush()
				io.Copy(io.Discard, r.Body)
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var called bool
			var mu sync.Mutex
			s := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				called = true
				mu.Unlock()
				tt.handler(w, r)
			}), "max_body_bytes", fmt.Sprint(limit))
			var body io.Reader = strings.NewReader(tt.body)
			if tt.chunked {
				body = struct{ io.Reader }{body} // unknown length: sent chunked
			}
			resp, err := newClient().Post(s.url, "text/plain", body)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status || !strings.HasPrefix(string(b), tt.want) {
				t.Errorf("got %d %q, want %d %q...", resp.StatusCode, b, tt.status, tt.want)
			}
			if tt.status == 413 && resp.Header.Get("X-App") != "" {
				t.Error("413 kept the app's headers")
			}
			mu.Lock()
			defer mu.Unlock()
			if called != tt.called {
				t.Errorf("app called = %v, want %v", called, tt.called)
			}
		})
	}
}

func echo(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Write(b)
}

// TestLongPollOutlivesTimeouts: a handler that reads its body and then waits
// longer than read_timeout and write_timeout still answers, and its context
// is not cancelled; with http.Server's global timeouts it would be cut.
func TestLongPollOutlivesTimeouts(t *testing.T) {
	t.Parallel()
	const timeout = 50 * time.Millisecond
	ctxErr := make(chan error, 1)
	s := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		<-time.After(4 * timeout) // the parked wait the test is about, not synchronisation
		ctxErr <- r.Context().Err()
		io.WriteString(w, "woken")
	}), "read_timeout", timeout.String(), "write_timeout", timeout.String())
	resp, err := newClient().Post(s.url, "text/plain", strings.NewReader("subscribe"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(b) != "woken" {
		t.Fatalf("long-poll got %q, %v; want woken", b, err)
	}
	if err := <-ctxErr; err != nil {
		t.Errorf("long-poll request context cancelled: %v", err)
	}
}

// TestWriteTimeoutCutsStalledClient: a client that stops reading makes the
// handler's writes fail once write_timeout passes without progress.
func TestWriteTimeoutCutsStalledClient(t *testing.T) {
	t.Parallel()
	writeErr := make(chan error, 1)
	s := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := bytes.Repeat([]byte("x"), 64<<10)
		for {
			if _, err := w.Write(chunk); err != nil {
				writeErr <- err
				return
			}
		}
	}), "write_timeout", "100ms")
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n") // and never read
	if err := <-writeErr; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write to a stalled client: %v, want a deadline error", err)
	}
}

// TestWriteTimeoutEveryRequest: write_timeout bounds the writes of every
// request on a keep-alive connection, not only the first one's (net/http
// clears the connection's write deadline after each request), and a
// write deadline left from a request does not cut net/http's own reply
// to a later bad request once it has passed.
func TestWriteTimeoutEveryRequest(t *testing.T) {
	t.Parallel()
	const writeTimeout = 300 * time.Millisecond
	writeErr := make(chan error, 1)
	s := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hello" {
			io.WriteString(w, "hello")
			return
		}
		chunk := bytes.Repeat([]byte("x"), 64<<10)
		for {
			if _, err := w.Write(chunk); err != nil {
				writeErr <- err
				return
			}
		}
	}), "write_timeout", writeTimeout.String())

	t.Run("second request", func(t *testing.T) {
		t.Parallel()
		c, err := net.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		// Both at once: the second starts right after the first has
		// answered, and its response is never read.
		fmt.Fprintf(c, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\nGET /stall HTTP/1.1\r\nHost: x\r\n\r\n")
		select {
		case err := <-writeErr:
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("write to a stalled client: %v, want a deadline error", err)
			}
		case <-time.After(30 * writeTimeout):
			t.Fatal("the second request's writes to a stalled client never failed: no write deadline")
		}
	})
	t.Run("own reply after the deadline", func(t *testing.T) {
		t.Parallel()
		c, err := net.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		br := bufio.NewReader(c)
		fmt.Fprintf(c, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		// Idle past the write deadline the request left, which is what
		// this case is about (not synchronisation).
		time.Sleep(2 * writeTimeout)
		fmt.Fprintf(c, "GET /hello HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
		resp, err = http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("net/http's reply to a malformed request after idling past write_timeout: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("status %d, want 400", resp.StatusCode)
		}
	})
}

// TestWriteTimeoutWriters: write_timeout bounds the writes of handlers of
// requests with and without a body (over plain HTTP/1 the latter get
// net/http's own writer and the connection arms the deadline): a client
// that stops reading cuts a handler's writes and a file sent with
// sendfile (io.ReaderFrom); it does not cut a file that takes longer than
// write_timeout to a client that keeps reading (the deadline moves on
// every mebibyte), a handler that set its own write deadline, nor one
// that hijacked the connection.
func TestWriteTimeoutWriters(t *testing.T) {
	t.Parallel()
	const writeTimeout = 100 * time.Millisecond
	const size = 64 << 20 // far more than the loopback socket buffers hold
	const slowPace = 50 * time.Millisecond
	file := filepath.Join(t.TempDir(), "big")
	if f, err := os.Create(file); err != nil {
		t.Fatal(err)
	} else if err := errors.Join(f.Truncate(size), f.Close()); err != nil { // sparse: no disk used
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte("x"), 64<<10)
	writeAll := func(w io.Writer) error {
		for n := 0; n < size; n += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return err
			}
		}
		return nil
	}
	sendfile := func(w http.ResponseWriter) error {
		f, err := os.Open(file)
		if err != nil {
			return err
		}
		defer f.Close()
		w.Header().Set("Content-Length", fmt.Sprint(size)) // not chunked: net/http uses the connection's ReadFrom
		_, err = w.(io.ReaderFrom).ReadFrom(f)
		return err
	}
	modes := []struct {
		name string
		cut  bool // the client never reads and the handler's writes must fail
		slow bool // the client reads a mebibyte every slowPace
		h    func(w http.ResponseWriter) error
	}{
		{"stalled client", true, false, func(w http.ResponseWriter) error {
			for {
				if _, err := w.Write(chunk); err != nil {
					return err
				}
			}
		}},
		{"sendfile", true, false, sendfile},
		{"sendfile slow client", false, true, sendfile},
		{"own deadline", false, false, func(w http.ResponseWriter) error {
			if err := http.NewResponseController(w).SetWriteDeadline(time.Time{}); err != nil {
				return err
			}
			w.Header().Set("Content-Length", fmt.Sprint(size))
			return writeAll(w)
		}},
		{"hijacked", false, false, func(w http.ResponseWriter) error {
			c, brw, err := http.NewResponseController(w).Hijack()
			if err != nil {
				return err
			}
			defer c.Close()
			fmt.Fprintf(brw, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", size)
			if err := brw.Flush(); err != nil {
				return err
			}
			return writeAll(c)
		}},
	}
	for _, mode := range modes {
		for _, method := range []string{"GET", "POST"} {
			t.Run(mode.name+"/"+method, func(t *testing.T) {
				t.Parallel()
				writeTimeout := writeTimeout
				if mode.slow {
					// The whole file takes about two write_timeouts, and
					// each mebibyte has write_timeout, 32 times the pace.
					writeTimeout = size / (1 << 20) * slowPace / 2
				}
				handlerErr := make(chan error, 1)
				s := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if _, err := io.ReadAll(r.Body); err != nil {
						handlerErr <- err
						return
					}
					handlerErr <- mode.h(w)
				}), "write_timeout", writeTimeout.String())
				c, err := net.Dial("tcp", s.addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				if method == "GET" {
					fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
				} else {
					fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nping")
				}
				if mode.cut {
					// The client never reads.
					select {
					case err := <-handlerErr:
						if !errors.Is(err, os.ErrDeadlineExceeded) {
							t.Fatalf("write to a stalled client: %v, want a deadline error", err)
						}
					case <-time.After(100 * writeTimeout):
						t.Fatal("writes to a stalled client never failed: no write deadline")
					}
					return
				}
				var body io.Reader = c
				if mode.slow {
					body = &slowReader{r: c, every: slowPace}
				} else {
					// The client stops reading for several write_timeouts
					// (what the case is about, not synchronisation), then
					// reads it all.
					time.Sleep(5 * writeTimeout)
				}
				resp, err := http.ReadResponse(bufio.NewReader(body), nil)
				if err != nil {
					t.Fatal(err)
				}
				n, err := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err != nil || n != size {
					t.Fatalf("read %d bytes, %v; want %d", n, err, size)
				}
				if err := <-handlerErr; err != nil {
					t.Fatalf("handler's writes: %v; want them to outlast write_timeout", err)
				}
			})
		}
	}
}

// slowReader reads a mebibyte from r every period: a client that keeps
// reading, slowly.
type slowReader struct {
	r     io.Reader
	every time.Duration
	left  int
}

func (s *slowReader) Read(p []byte) (int, error) {
	if s.left <= 0 {
		time.Sleep(s.every) // the pace the test is about, not synchronisation
		s.left = 1 << 20
	}
	n, err := s.r.Read(p[:min(len(p), s.left)])
	s.left -= n
	return n, err
}

// TestReadTimeoutCutsSlowBody: a body that stops arriving fails the
// handler's read once read_timeout passes.
func TestReadTimeoutCutsSlowBody(t *testing.T) {
	t.Parallel()
	readErr := make(chan error, 1)
	s := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		readErr <- err
	}), "read_timeout", "100ms")
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab") // 8 bytes short
	if err := <-readErr; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read of a stalled body: %v, want a deadline error", err)
	}
}

// TestWriterPassesThrough: the writer handlers get keeps Flush (streaming
// reaches the client while the handler waits), Hijack and the
// ResponseController methods.
func TestWriterPassesThrough(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	s := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/stream":
			if err := http.NewResponseController(w).EnableFullDuplex(); err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			if err := http.NewResponseController(w).SetWriteDeadline(time.Time{}); err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			io.WriteString(w, "first\n")
			w.(http.Flusher).Flush()
			<-release
			io.WriteString(w, "second\n")
		case "/hijack":
			c, brw, err := w.(http.Hijacker).Hijack()
			if err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			defer c.Close()
			brw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nhijacked")
			brw.Flush()
		}
	}))

	resp, err := newClient().Get(s.url + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "first\n" {
		t.Fatalf("flushed line = %q, %v", line, err)
	}
	close(release) // the first line arrived while the handler was still waiting
	rest, _ := io.ReadAll(br)
	resp.Body.Close()
	if string(rest) != "second\n" {
		t.Errorf("rest = %q", rest)
	}

	resp, err = newClient().Get(s.url + "/hijack")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "hijacked" {
		t.Errorf("hijacked response = %q", b)
	}
}

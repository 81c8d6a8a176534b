package runner

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/paster-dev/paster/entrypoints"
)

// Defaults of the http server's settings. Every limit is on unless the INI
// file turns it off with 0.
const (
	DefaultHTTPHost          = "127.0.0.1"
	DefaultHTTPPort          = 8080
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultReadTimeout       = 60 * time.Second
	DefaultWriteTimeout      = 60 * time.Second
	DefaultIdleTimeout       = 120 * time.Second
	DefaultMaxHeaderBytes    = http.DefaultMaxHeaderBytes // 1 MiB
	DefaultMaxBodyBytes      = 10 << 20                   // 10 MiB
	DefaultShutdownTimeout   = 10 * time.Second
	// DefaultHandlerTimeout is off: long-polls park for as long as their
	// own waits allow.
	DefaultHandlerTimeout = 0
	// DefaultHTTP2MaxConcurrentStreams is the number of requests one
	// HTTP/2 connection may have open at once (the RFC's recommended
	// minimum; net/http's own default is 250).
	DefaultHTTP2MaxConcurrentStreams = 100
)

// ErrShutdownTimeout is wrapped by the error Serve returns when requests were
// still in flight after shutdown_timeout and their connections were closed.
var ErrShutdownTimeout = errors.New("shutdown timeout passed")

// HTTPConfig is the http server's configuration as read from its section.
type HTTPConfig struct {
	// Addr is the address to bind, host:port ("127.0.0.1:8080"), or
	// unix:PATH for a unix domain socket, or systemd:NAME for a socket
	// systemd passed (see listen.go). Port 0 binds any free port; Addr of
	// the HTTPServer reports which.
	Addr string
	// SocketMode is the mode of a unix socket's file (socket_mode,
	// DefaultSocketMode unless set).
	SocketMode fs.FileMode
	// ReadHeaderTimeout bounds reading a request's header (slow clients).
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a request's body, from the handler's first
	// read of it to its end. It is a per-request deadline, not
	// http.Server.ReadTimeout: a long-poll handler that has read its body
	// (or has none) is never cut by it.
	ReadTimeout time.Duration
	// WriteTimeout bounds each write to the client (and the final flush
	// after the handler returns): the write deadline is moved forward
	// whenever the handler writes or flushes. It is not
	// http.Server.WriteTimeout, which would cut every long-poll and stream
	// after a fixed time.
	WriteTimeout time.Duration
	// IdleTimeout closes keep-alive connections idle for that long.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds the size of a request header.
	MaxHeaderBytes int
	// MaxBodyBytes bounds a request body: 0 means no limit.
	MaxBodyBytes int64
	// ShutdownTimeout bounds the graceful shutdown.
	ShutdownTimeout time.Duration
	// MaxConnections caps the connections the server has open at once
	// (idle keep-alive, active and hijacked ones): at the cap it stops
	// accepting and new connections wait in the kernel's listen backlog
	// until one closes. 0 means no cap. The default is
	// DefaultMaxConnections().
	MaxConnections int
	// HandlerTimeout bounds how long a handler may run: after it, the
	// handler's context is cancelled and the client gets 503 if nothing
	// was sent yet, or its connection is ended if the response had
	// started (see TimeoutHandler). 0, the default, means no bound.
	HandlerTimeout time.Duration
	// HTTP2MaxConcurrentStreams is http2_max_concurrent_streams: the
	// requests (streams) one HTTP/2 connection may have open at once.
	// Beyond it the client is refused the stream; with max_connections it
	// bounds the handlers HTTP/2 clients can have running to
	// max_connections × HTTP2MaxConcurrentStreams. Streams a client reset
	// still count until their handlers return.
	HTTP2MaxConcurrentStreams int
	// TLS is nil for plain HTTP, else the TLS settings (cert_file and
	// key_file, ssl_pem, acme, ...; see TLSConfig).
	TLS *TLSConfig
	// H2C is h2c: HTTP/2 over cleartext (prior knowledge, as a proxy in
	// front speaks it) besides HTTP/1.1; plain HTTP only.
	H2C bool
	// RedirectHTTP is redirect_http, the address of a plain HTTP server
	// that redirects every request to https ("" for none); TLS only.
	RedirectHTTP string
	// Unknown is nil, or the keys of the section that mean nothing to the
	// server, joined: each error names the file, line, section and key,
	// with the near-miss it may be a misspelling of. Serving warns about
	// them; a check (Checking) fails on them.
	Unknown error
}

// HTTPServerKeys are the local configuration keys NewHTTPServer reads.
// A server runner that reads keys of its own passes them to NewHTTPServer
// removed (Local.Without) so that they are not reported as unknown.
var HTTPServerKeys = append([]string{
	"host", "port", "read_header_timeout", "read_timeout", "write_timeout",
	"idle_timeout", "max_header_bytes", "max_body_bytes", "shutdown_timeout",
	"max_connections", "handler_timeout", "socket_mode", "http2_max_concurrent_streams",
}, TLSKeys...)

// ignoredHTTPKeys are options of Paste's and cogen's servers that have no
// meaning here; NewHTTPServer warns about each with the reason.
var ignoredHTTPKeys = map[string]string{
	"use_threadpool":        "net/http serves each connection on its own goroutine",
	"threadpool_workers":    "net/http serves each connection on its own goroutine",
	"daemon_threads":        "net/http serves each connection on its own goroutine",
	"request_queue_size":    "the listen backlog is not settable with net.Listen",
	"socket_timeout":        "use read_header_timeout, read_timeout, write_timeout and idle_timeout",
	"sockoper_timeout":      "use read_header_timeout and idle_timeout",
	"sendfile_timeout":      "write_timeout bounds every write, file bodies included",
	"server_version":        "the Server header is not set",
	"protocol_version":      "net/http speaks HTTP/1.1 (and HTTP/1.0 to old clients), and HTTP/2 over TLS or with h2c",
	"start_loop":            "the server always serves",
	"server_name":           "the Host header names the server",
	"proactor":              "not used: net/http has its own poller",
	"sched_default_timeout": "the scheduler is configured by the runner",
}

// HTTPServer serves an http.Handler over HTTP/1.1, and over TLS with
// HTTP/2 too, with the limits of its section (HTTPConfig) and a graceful
// shutdown bounded by shutdown_timeout.
// An HTTPServer serves once: Serve or ServeListener may be called a single
// time.
type HTTPServer struct {
	cfg    HTTPConfig
	logger hclog.Logger

	served   atomic.Bool
	inflight atomic.Int64    // requests in flight but for those rejects counts
	rejects  *rejectListener // the connections of plain HTTP, set by ServeListener; nil over TLS

	tls            *tls.Config  // nil: plain HTTP
	acme           *acmeManager // made by ServeListener with acme = true
	acmeSupervised atomic.Bool  // ACMECoroutine was taken: a scheduler runs it

	mu    sync.Mutex
	hooks []func()
	addr  net.Addr
	bound chan struct{}
}

// NewHTTPServer reads the http server's keys from local and returns a
// server that has bound nothing yet. Keys (durations are seconds or Go
// durations such as 1.5s; sizes are bytes with an optional k, m or g suffix,
// powers of 1024; 0 turns a timeout or the body limit off):
//
//	host                 address to bind (default 127.0.0.1); host:port accepted;
//	                     unix:PATH a unix domain socket (relative to the INI
//	                     file's directory; a stale file is removed first,
//	                     one something still listens on is an error);
//	                     systemd:NAME a socket systemd passed by that name
//	port                 port (default 8080; 0 = any free port)
//	socket_mode          mode of a unix socket's file, octal (default 0660)
//	read_header_timeout  default 10s; over TLS it bounds the handshake too
//	read_timeout         per-request body read deadline, default 60s
//	write_timeout        per-write deadline, default 60s (long-polls are fine)
//	idle_timeout         keep-alive idle limit, default 120s
//	max_header_bytes     default 1 MiB
//	max_body_bytes       default 10 MiB; a larger body gets 413
//	shutdown_timeout     graceful shutdown bound, default 10s
//	max_connections      open connections at once; more wait in the listen
//	                     backlog (default DefaultMaxConnections(), from
//	                     the open-file limit; 0 = no cap)
//	handler_timeout      bound on a handler's run: then 503 and its context
//	                     cancelled (default 0 = off, for long-polls)
//	http2_max_concurrent_streams
//	                     requests one HTTP/2 connection may have open at
//	                     once (default 100)
//
// A bad value is an error naming the file, line, section and key. Unknown
// keys are logged as warnings (with a near-miss suggestion) and kept in
// HTTPConfig.Unknown, which Serve returns instead of binding when its
// context asks for a check (Checking); options of Paste's and cogen's
// servers that mean nothing here are logged as warnings.
//
// TLS (see TLSConfig and ACMEConfig for each key's meaning):
//
//	cert_file, key_file  certificate (chain) and key, PEM
//	ssl_pem              certificate and key in one PEM file (Paste's
//	                     key); * for a self-signed certificate made now
//	tls_min_version      1.0, 1.1, 1.2 (default) or 1.3
//	client_ca            PEM file of the CAs client certificates must be
//	                     signed by (mutual TLS)
//	redirect_http        address (":80") of a server redirecting to https
//	acme                 true: certificates from an ACME CA, for domains;
//	                     acme_email, acme_ca, acme_ca_root, acme_storage,
//	                     acme_renew_interval, acme_challenges
//	h2c                  true: HTTP/2 over cleartext too (no TLS)
//
// Over TLS, HTTP/2 is offered with ALPN beside HTTP/1.1. Certificate and
// key files are read here: one missing or bad is an error naming its key.
// A key that a global of the same name hides takes the global's value
// (Unshadow). Logging goes to logger named "http" (hclog.Default() when
// logger is nil).
func NewHTTPServer(local entrypoints.Local, logger hclog.Logger) (*HTTPServer, error) {
	if logger == nil {
		logger = hclog.Default()
	}
	logger = logger.Named("http")
	cfg, err := parseHTTPConfig(Unshadow(local, logger), logger)
	if err != nil {
		return nil, err
	}
	s := &HTTPServer{cfg: cfg, logger: logger, bound: make(chan struct{})}
	if cfg.TLS != nil {
		host, _, _ := net.SplitHostPort(cfg.Addr)
		if s.tls, err = serverTLS(cfg.TLS, host); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// ParseHTTPConfig reads the http server's settings from local as
// NewHTTPServer does (global values of hidden keys included), without
// logging: paster serve learns from it the
// address a server section asks for. Keys of the runner (RunnerKeys) are
// reported in Unknown like any other key.
func ParseHTTPConfig(local entrypoints.Local) (HTTPConfig, error) {
	local, _ = local.Unshadow()
	return parseHTTPConfig(local, hclog.NewNullLogger())
}

func parseHTTPConfig(local entrypoints.Local, logger hclog.Logger) (HTTPConfig, error) {
	cfg := HTTPConfig{}
	known := map[string]bool{}
	for _, k := range HTTPServerKeys {
		known[k] = true
	}
	var unknown []error
	for _, k := range local.Keys() {
		switch {
		case known[k]:
		case ignoredHTTPKeys[k] != "":
			logger.Warn("server option ignored", "key", k, "at", local.Where(k).String(), "why", ignoredHTTPKeys[k])
		default:
			// The runner's keys are named too: a section mostly
			// reaches this parser through New.
			serverKeys := append(append([]string(nil), HTTPServerKeys...), RunnerKeys...)
			args := []any{"key", k, "at", local.Where(k).String(), "known", strings.Join(serverKeys, ", ")}
			msg := "unknown server option"
			if s := entrypoints.Suggest(k, serverKeys); s != "" {
				args = append(args, "did_you_mean", s)
				msg += fmt.Sprintf("; did you mean %q?", s)
			}
			logger.Warn("unknown server option ignored", args...)
			unknown = append(unknown, local.Errorf(k, "%s (known: %s)", msg, strings.Join(serverKeys, ", ")))
		}
	}
	cfg.Unknown = errors.Join(unknown...)

	host := strings.TrimSpace(local.Get("host"))
	if host == "" {
		host = DefaultHTTPHost
	}
	var err error
	if cfg.Addr, cfg.SocketMode, err = socketAddr(host, local, logger); err != nil {
		return cfg, err
	}
	if cfg.Addr == "" {
		if cfg.Addr, err = tcpAddr(host, local, logger); err != nil {
			return cfg, err
		}
	}

	durations := []struct {
		key string
		def time.Duration
		dst *time.Duration
	}{
		{"read_header_timeout", DefaultReadHeaderTimeout, &cfg.ReadHeaderTimeout},
		{"read_timeout", DefaultReadTimeout, &cfg.ReadTimeout},
		{"write_timeout", DefaultWriteTimeout, &cfg.WriteTimeout},
		{"idle_timeout", DefaultIdleTimeout, &cfg.IdleTimeout},
		{"shutdown_timeout", DefaultShutdownTimeout, &cfg.ShutdownTimeout},
		{"handler_timeout", DefaultHandlerTimeout, &cfg.HandlerTimeout},
	}
	for _, d := range durations {
		v, err := Timeout(local, d.key, d.def)
		if err != nil {
			return cfg, err
		}
		*d.dst = v
	}

	if _, set := local.Lookup("read_header_timeout"); set && cfg.ReadHeaderTimeout == 0 {
		// net/http bounds a request's header, and the TLS handshake, by
		// read_header_timeout alone (read_timeout and write_timeout are
		// per request here, not http.Server's).
		logger.Warn("read_header_timeout = 0: a client that sends nothing, or stalls in its header or TLS handshake, holds its connection and a max_connections slot for good",
			"at", local.Where("read_header_timeout").String())
	}
	hb, err := local.Size("max_header_bytes", DefaultMaxHeaderBytes)
	if err != nil {
		return cfg, err
	}
	if hb == 0 {
		hb = DefaultMaxHeaderBytes // net/http has no "unlimited"; 0 means its default
	}
	cfg.MaxHeaderBytes = int(hb)
	if cfg.MaxBodyBytes, err = local.Size("max_body_bytes", DefaultMaxBodyBytes); err != nil {
		return cfg, err
	}
	if cfg.MaxConnections, err = local.Int("max_connections", DefaultMaxConnections()); err != nil {
		return cfg, err
	}
	if cfg.MaxConnections < 0 {
		return cfg, local.Errorf("max_connections", "negative count %d (0 turns the cap off)", cfg.MaxConnections)
	}
	if cfg.HTTP2MaxConcurrentStreams, err = local.Int("http2_max_concurrent_streams", DefaultHTTP2MaxConcurrentStreams); err != nil {
		return cfg, err
	}
	if cfg.HTTP2MaxConcurrentStreams < 1 {
		return cfg, local.Errorf("http2_max_concurrent_streams", "%d: an HTTP/2 connection needs at least 1 stream", cfg.HTTP2MaxConcurrentStreams)
	}
	if err := parseTLS(local, &cfg); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// tcpAddr is the host:port of a section's host and port keys (Paste's
// "host = 0.0.0.0:8000" wins over port).
func tcpAddr(host string, local entrypoints.Local, logger hclog.Logger) (string, error) {
	port, err := local.Int("port", DefaultHTTPPort)
	if err != nil {
		return "", err
	}
	if port < 0 || port > 65535 {
		return "", local.Errorf("port", "port %d out of range 0-65535", port)
	}
	portText := strconv.Itoa(port)
	if h, p, ok := splitHostPort(host); ok {
		// Paste: "host = 0.0.0.0:8000" wins over port.
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > 65535 {
			return "", local.Errorf("host", "bad port in %q", host)
		}
		if v, set := local.Lookup("port"); set && strings.TrimSpace(v) != p {
			logger.Warn("host has a port; port ignored", "host", host, "port", v, "at", local.Where("port").String())
		}
		host, portText = h, p
	}
	return net.JoinHostPort(strings.Trim(host, "[]"), portText), nil
}

// splitHostPort splits "host:port" and "[v6]:port"; a bare name or a bare
// IPv6 address (more than one colon, no brackets) has no port.
func splitHostPort(s string) (host, port string, ok bool) {
	if strings.HasPrefix(s, "[") || strings.Count(s, ":") == 1 {
		h, p, err := net.SplitHostPort(s)
		if err == nil {
			return h, p, true
		}
	}
	return s, "", false
}

func (c HTTPConfig) listenOptions() ListenOptions { return ListenOptions{SocketMode: c.SocketMode} }

// Config returns the server's settings.
func (s *HTTPServer) Config() HTTPConfig { return s.cfg }

// OnShutdown registers f to run when shutdown starts, before in-flight
// requests are waited for: the runner uses it to wake parked waiters so that
// they answer and the drain can finish. Each function runs on its own
// goroutine; shutdown waits for them at most until shutdown_timeout.
func (s *HTTPServer) OnShutdown(f func()) {
	s.mu.Lock()
	s.hooks = append(s.hooks, f)
	s.mu.Unlock()
}

// Bound returns a channel that is closed once the server has its listener;
// Addr then reports the bound address.
func (s *HTTPServer) Bound() <-chan struct{} { return s.bound }

// Addr returns the address the server listens on, or nil before it has bound.
func (s *HTTPServer) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Listen binds the configured address and returns the listener without
// serving on it; ServeListener serves it. A failure names the address.
func (s *HTTPServer) Listen() (net.Listener, error) {
	return listen(s.cfg.Addr, s.cfg.listenOptions())
}

// listenOn returns a listener on addr from ctx's ListenerSource, or bound
// now (listen) when ctx has none. A failure names the address.
func listenOn(ctx context.Context, addr string, opt ListenOptions) (net.Listener, error) {
	if src := ListenersFrom(ctx); src != nil {
		return src.Listen(addr, opt)
	}
	return listen(addr, opt)
}

// Serve binds the configured address and serves app until ctx is done, then
// shuts down gracefully (see ServeListener). When ctx carries a
// ListenerSource (WithListeners), the listener comes from it, so a socket
// kept across a reload is reused. A bind failure is an error that names the
// address. When ctx asks for a check (WithCheck), Serve binds nothing and
// returns HTTPConfig.Unknown: nil when every key of the section means
// something to the server.
func (s *HTTPServer) Serve(ctx context.Context, app http.Handler) error {
	if Checking(ctx) {
		return s.cfg.Unknown
	}
	ln, err := listenOn(ctx, s.cfg.Addr, s.cfg.listenOptions())
	if err != nil {
		return err
	}
	return s.ServeListener(ctx, ln, app)
}

// ServeListener serves app on ln until ctx is done; it closes ln when it
// returns. Once serving it calls Ready(ctx), so a caller that gave ctx a
// ReadyFunc learns that the server accepts. Request contexts carry ctx's
// values but are not cancelled with it. When ctx is done the server stops
// accepting, runs the OnShutdown functions and waits up to shutdown_timeout
// for in-flight requests to finish; it returns nil when they all did. After
// the timeout it closes the remaining connections and returns an error
// wrapping ErrShutdownTimeout that says how many requests were cut.
//
// With handler_timeout set, a handler still running after it is bound by
// TimeoutHandler (503, or the connection ended, and its context
// cancelled). With max_connections set, at most that many connections are
// open at once; the server accepts the next when one closes. A temporary
// accept error (such as running out of file descriptors) is retried after a
// backoff, as net/http does; another one is returned. Calling
// ServeListener (or Serve) a second time is an error.
//
// With TLS, connections on ln are TLS ones, offering HTTP/2 and HTTP/1.1
// (ALPN); with redirect_http a second server, on that address (from ctx's
// ListenerSource, like Serve's), redirects to https and, with acme, answers
// the HTTP-01 challenges; it stops with the first. With acme, the
// certificates are obtained once ln serves, by the coroutine
// ACMECoroutine returns, or, when nothing took it, by a goroutine of the
// server's that logs its error. With h2c, HTTP/2 with prior knowledge is
// served besides HTTP/1.1.
func (s *HTTPServer) ServeListener(ctx context.Context, ln net.Listener, app http.Handler) error {
	if !s.served.CompareAndSwap(false, true) {
		ln.Close()
		return errors.New("http: server already served; make a new HTTPServer")
	}
	var redirectLn net.Listener
	if s.cfg.RedirectHTTP != "" {
		var err error
		if redirectLn, err = listenOn(ctx, s.cfg.RedirectHTTP, ListenOptions{}); err != nil {
			ln.Close()
			return fmt.Errorf("redirect_http: %w", err)
		}
	}
	if s.cfg.TLS != nil && s.cfg.TLS.ACME != nil {
		s.acme = newACMEManager(s.cfg.TLS.ACME, s.logger.Named("acme"))
		s.acme.setPorts(portOf(ln.Addr()), portOf(addrOf(redirectLn)))
		s.tls = s.acme.tlsConfig(s.tls)
	}
	srv := &http.Server{
		Handler:           &limitHandler{s: s, next: TimeoutHandler(app, s.cfg.HandlerTimeout, "handler_timeout", s.logger)},
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    netHTTPHeaderLimit(s.cfg.MaxHeaderBytes, s.unseenReplies()),
		ErrorLog:          log.New(serverLogWriter{s.logger}, "", 0),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
		ConnContext:       connContext,
		TLSConfig:         s.tls,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams: s.cfg.HTTP2MaxConcurrentStreams,
			// HTTP/2 writes a connection's frames on a goroutine of its
			// own, beyond the per-request write deadline: a client that
			// stops reading its socket would hold the connection (and
			// its max_connections slot) until idle_timeout, or forever
			// while one of its streams is parked.
			WriteByteTimeout: s.cfg.WriteTimeout,
			// That covers a write in progress only: when the stream
			// whose data filled the socket is reset (its own write
			// deadline) nothing more is written, and the stalled
			// connection would sit idle until idle_timeout. A connection
			// silent for write_timeout gets a PING, whose write then
			// meets WriteByteTimeout (or whose answer must come within
			// write_timeout); clients answer PINGs by themselves.
			SendPingTimeout: s.cfg.WriteTimeout,
			PingTimeout:     s.cfg.WriteTimeout,
		},
	}
	if s.cfg.H2C {
		p := new(http.Protocols)
		p.SetHTTP1(true)
		p.SetUnencryptedHTTP2(true)
		srv.Protocols = p
	}
	addr := ln.Addr()
	s.mu.Lock()
	s.addr = addr
	s.mu.Unlock()
	close(s.bound)

	s.logger.Info("serving", "addr", addr.String(), "tls", s.tls != nil, "h2c", s.cfg.H2C)
	// Tell whoever started the server that it accepts (paster serve learns
	// it this way across a plugin boundary); a no-op without a ReadyFunc.
	Ready(ctx)
	served := make(chan error, 1)
	serveLn := ln
	if s.cfg.MaxConnections > 0 {
		serveLn = newCapListener(ln, s.cfg.MaxConnections)
	}
	if s.tls != nil {
		// net/http must get the *tls.Conn itself (it negotiates HTTP/2
		// on it), so the connections are not watched for its own replies
		// (those are encrypted beneath it).
		serveLn = tls.NewListener(serveLn, s.tls)
	} else {
		s.rejects = watchRejects(serveLn, app, s.cfg.WriteTimeout)
		serveLn = s.rejects
	}
	go func() { served <- srv.Serve(serveLn) }()
	var redirect *http.Server
	if redirectLn != nil {
		var h http.Handler = redirectToHTTPS(strconv.Itoa(portOf(addr)))
		if s.acme != nil {
			h = s.acme.httpHandler(h)
		}
		redirect = &http.Server{Handler: h, ReadHeaderTimeout: s.cfg.ReadHeaderTimeout, IdleTimeout: s.cfg.IdleTimeout,
			MaxHeaderBytes: s.cfg.MaxHeaderBytes, ErrorLog: srv.ErrorLog}
		s.logger.Info("redirecting to https", "addr", redirectLn.Addr().String())
		go func() { _ = redirect.Serve(redirectLn) }()
	}
	if s.acme != nil && !s.acmeSupervised.Load() {
		go func() {
			if err := s.acme.run(ctx, s.bound); err != nil {
				s.logger.Error("acme", "error", err)
			}
		}()
	}

	select {
	case err := <-served:
		if redirect != nil {
			redirect.Close()
		}
		return fmt.Errorf("http: serving on %s: %w", addr, err)
	case <-ctx.Done():
	}

	s.logger.Info("shutting down", "addr", addr.String(), "in_flight", s.inFlight(), "shutdown_timeout", s.cfg.ShutdownTimeout)
	sctx := context.Background()
	if s.cfg.ShutdownTimeout > 0 {
		var cancel context.CancelFunc
		sctx, cancel = context.WithTimeout(sctx, s.cfg.ShutdownTimeout)
		defer cancel()
	}
	hooksDone := s.runHooks()
	if d, ok := ln.(interface{ Detach(time.Duration) bool }); ok {
		// A socket shared through a ListenerPool: let the other servers
		// on it take the connections first, since net/http drops, without
		// an answer, a request it reads after Shutdown began.
		d.Detach(time.Second)
	}
	if redirect != nil {
		if d, ok := redirectLn.(interface{ Detach(time.Duration) bool }); ok {
			d.Detach(time.Second)
		}
		go redirect.Shutdown(sctx)
	}
	err := srv.Shutdown(sctx)
	<-served // http.ErrServerClosed, now that Shutdown has closed the listener
	if err != nil {
		cut := s.inFlight()
		srv.Close()
		s.logger.Error("shutdown timeout passed; connections closed", "requests_cut", cut)
		return fmt.Errorf("http: %w (%s) on %s: %d requests still in flight; their connections were closed",
			ErrShutdownTimeout, s.cfg.ShutdownTimeout, addr, cut)
	}
	select {
	case <-hooksDone:
	case <-sctx.Done():
		s.logger.Warn("shutdown hooks still running after shutdown_timeout")
	}
	s.logger.Info("stopped", "addr", addr.String())
	return nil
}

// inFlight returns the number of requests whose handlers are running.
func (s *HTTPServer) inFlight() int64 {
	n := s.inflight.Load()
	if s.rejects != nil {
		n += s.rejects.inFlight()
	}
	return n
}

func (s *HTTPServer) runHooks() <-chan struct{} {
	s.mu.Lock()
	hooks := append([]func(){}, s.hooks...)
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, f := range hooks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f()
		}()
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	return done
}

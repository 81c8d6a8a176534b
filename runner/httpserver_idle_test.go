package runner

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// getOn sends GET path on c and reads its 200 response.
func getOn(t *testing.T, c net.Conn, br *bufio.Reader, path string) {
	t.Helper()
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: status %d", path, resp.StatusCode)
	}
}

// TestIdleTimeoutClosesKeepAlive: a keep-alive connection left idle after
// a response is closed by the server once idle_timeout passes, whatever the
// request before was (one, several, one with a body, one with a body its
// handler left unread, one whose handler set its own read deadline); one
// used again and again within idle_timeout stays open; a request on a
// connection that was idle before it is not cut by idle_timeout however
// long its handler takes.
func TestIdleTimeoutClosesKeepAlive(t *testing.T) {
	t.Parallel()
	const idle = 300 * time.Millisecond
	s := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/deadline":
			http.NewResponseController(w).SetReadDeadline(time.Now().Add(time.Hour))
		case "/long":
			<-time.After(3 * idle) // the long handler the case is about, not synchronisation
		case "/unread":
			io.WriteString(w, "ok")
			return
		}
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "ok")
	}), "idle_timeout", idle.String())

	dial := func(t *testing.T) (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c, bufio.NewReader(c)
	}
	// closedByServer waits (bounded) for the server to close c.
	closedByServer := func(t *testing.T, c net.Conn, br *bufio.Reader) {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
			t.Fatalf("idle keep-alive connection: read %v, want io.EOF (closed by the server)", err)
		}
	}
	for _, tc := range []struct {
		name     string
		requests func(t *testing.T, c net.Conn, br *bufio.Reader)
	}{
		{"one request", func(t *testing.T, c net.Conn, br *bufio.Reader) { getOn(t, c, br, "/") }},
		{"three requests", func(t *testing.T, c net.Conn, br *bufio.Reader) {
			for range 3 {
				getOn(t, c, br, "/")
			}
		}},
		{"request with a body", func(t *testing.T, c net.Conn, br *bufio.Reader) {
			fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}},
		{"request with a body left unread", func(t *testing.T, c net.Conn, br *bufio.Reader) {
			fmt.Fprintf(c, "POST /unread HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}},
		{"handler's own read deadline", func(t *testing.T, c net.Conn, br *bufio.Reader) { getOn(t, c, br, "/deadline") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, br := dial(t)
			tc.requests(t, c, br)
			closedByServer(t, c, br)
		})
	}
	t.Run("used within idle_timeout", func(t *testing.T) {
		t.Parallel()
		c, br := dial(t)
		for end := time.Now().Add(3 * idle); time.Now().Before(end); {
			getOn(t, c, br, "/")
			<-time.After(idle / 6) // idling, less than idle_timeout: what the case is about
		}
	})
	t.Run("long request after idling", func(t *testing.T) {
		t.Parallel()
		c, br := dial(t)
		getOn(t, c, br, "/")
		<-time.After(idle / 2) // idle, then a request: what the case is about
		getOn(t, c, br, "/long")
		closedByServer(t, c, br)
	})
}

// deadlineCounter is a listener whose connections count the read
// deadlines set on them that lie in the future: each arms a runtime timer.
type deadlineCounter struct {
	net.Listener
	armed *atomic.Int64
}

func (l deadlineCounter) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &deadlineCountingConn{Conn: c, armed: l.armed}, nil
}

type deadlineCountingConn struct {
	net.Conn
	armed *atomic.Int64
}

func (c *deadlineCountingConn) SetReadDeadline(t time.Time) error {
	if time.Until(t) > 0 {
		c.armed.Add(1)
	}
	return c.Conn.SetReadDeadline(t)
}

// TestIdleTimeoutArmsNoTimerPerRequest: over a keep-alive connection an
// HTTPServer with every limit on (read_header_timeout and idle_timeout
// included) arms no read deadline on the socket per request, where plain
// net/http with read_header_timeout alone arms one: the connection keeps
// those deadlines without a runtime timer each (rejectConn.lazy).
func TestIdleTimeoutArmsNoTimerPerRequest(t *testing.T) {
	t.Parallel()
	const n = 50
	perRequest := func(t *testing.T, serve func(net.Listener)) float64 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		var armed atomic.Int64
		serve(deadlineCounter{Listener: ln, armed: &armed})
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		br := bufio.NewReader(c)
		getOn(t, c, br, "/") // the connection's first deadlines
		before := armed.Load()
		for range n {
			getOn(t, c, br, "/")
		}
		return float64(armed.Load()-before) / n
	}
	plain := perRequest(t, func(ln net.Listener) {
		srv := &http.Server{Handler: http.HandlerFunc(hello), ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
	})
	paster := perRequest(t, func(ln net.Listener) {
		srv, err := NewHTTPServer(localOf("port", "0"), hclog.NewNullLogger())
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- srv.ServeListener(ctx, ln, http.HandlerFunc(hello)) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		})
	})
	t.Logf("read deadlines armed per request: plain net/http %.2f, HTTPServer %.2f", plain, paster)
	if paster != 0 || plain == 0 {
		t.Errorf("HTTPServer arms %.2f read deadlines per request, plain net/http %.2f; want 0 and more than 0", paster, plain)
	}
}

// TestIdleTimeoutLeavesHijackedConn: a connection a handler hijacked is
// its own: a read deadline it sets after its handler returned holds, and
// idle_timeout does not end it.
func TestIdleTimeoutLeavesHijackedConn(t *testing.T) {
	t.Parallel()
	const idle = 200 * time.Millisecond
	readErr := make(chan error, 1)
	s := serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			readErr <- err
			return
		}
		go func() {
			defer c.Close()
			brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\n")
			brw.Flush()
			// After the handler returned: a deadline of its own, then one
			// past idle_timeout.
			c.SetReadDeadline(time.Now().Add(idle / 4))
			_, err := brw.ReadByte()
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				readErr <- fmt.Errorf("read under the hijacker's own deadline: %v, want a deadline error", err)
				return
			}
			c.SetReadDeadline(time.Now().Add(3 * idle))
			_, err = brw.ReadByte()
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				err = fmt.Errorf("read under a deadline past idle_timeout: %v, want its deadline error", err)
			} else {
				err = nil
			}
			readErr <- err
		}()
	}), "idle_timeout", idle.String())
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: test\r\n\r\n")
	select {
	case err := <-readErr:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the hijacked connection's reads never ended: its own read deadline was not set")
	}
}

// TestReadHeaderTimeoutPlain: over plain HTTP/1, a client that stalls in
// a request's header, the first of its connection or one after a served
// request, or sends nothing at all, has its connection closed after
// read_header_timeout, before idle_timeout could, with what plain net/http
// sends in that case (400 Bad Request for a header cut after its request
// line, nothing else); one that completes its header in time is served.
func TestReadHeaderTimeoutPlain(t *testing.T) {
	t.Parallel()
	s := serve(t, http.HandlerFunc(hello), "read_header_timeout", "300ms", "idle_timeout", "1h")
	plainLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	plain := &http.Server{Handler: http.HandlerFunc(hello), ReadHeaderTimeout: 300 * time.Millisecond, IdleTimeout: time.Hour}
	go plain.Serve(plainLn)
	t.Cleanup(func() { plain.Close() })
	// stall sends before requests then send on a connection to addr and
	// returns what comes back until the server closes it.
	stall := func(t *testing.T, addr string, before int, send string) string {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		br := bufio.NewReader(c)
		for range before {
			getOn(t, c, br, "/")
		}
		io.WriteString(c, send)
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		got, err := io.ReadAll(br)
		if err != nil {
			t.Fatalf("stalled header: read %v, want the connection closed by the server", err)
		}
		return string(got)
	}
	for _, tc := range []struct {
		name   string
		before int    // requests served on the connection first
		send   string // then this, and nothing more
	}{
		{"nothing sent", 0, ""},
		{"first header stalled", 0, "GET / HTTP/1.1\r\nHost: x\r\n"},
		{"second header stalled", 1, "GET / HTTP/1.1\r\nHo"},
		{"tenth header stalled", 9, "GET /"}, // net/http waits for 4 bytes under idle_timeout
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			want := stall(t, plainLn.Addr().String(), tc.before, tc.send)
			if got := stall(t, s.addr, tc.before, tc.send); got != want {
				t.Errorf("stalled header: got %q before the close, plain net/http sends %q", got, want)
			}
		})
	}
	t.Run("header in time", func(t *testing.T) {
		t.Parallel()
		c, err := net.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		br := bufio.NewReader(c)
		getOn(t, c, br, "/")
		io.WriteString(c, "GET / HTTP/1.1\r\n")
		<-time.After(100 * time.Millisecond) // a slow client within read_header_timeout: what the case is about
		io.WriteString(c, "Host: x\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
	})
}

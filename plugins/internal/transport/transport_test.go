package transport

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/paster-dev/paster/plugins/internal/wire"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// The tests here run the exchange in one process over a real gRPC connection
// on a loopback socket: a net/http server on the host side forwards to a
// gRPC server that serves the same handler an in-process server runs
// directly. Each scenario is sent with raw sockets to both, and the handler
// must see the same thing either way.

// outcome is what a handler saw of one request.
type outcome struct {
	n         int64  // body bytes read
	err       string // body read error, "" at a clean end
	limit     int64  // Limit of an *http.MaxBytesError
	cancelled bool   // the request context ended after the error
}

// reporter is an app that reads the body the way an upload handler does
// and answers 413 for a body over the limit, 400 for a broken one, and the
// byte count otherwise. Each request's outcome goes to out; with progress,
// every read's byte count is sent to progress as it happens.
type reporter struct {
	out      chan outcome
	progress chan int
	started  chan struct{}
}

func newReporter() *reporter {
	return &reporter{out: make(chan outcome, 16), progress: make(chan int, 16), started: make(chan struct{}, 16)}
}

func (rp *reporter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/ignore" {
		fmt.Fprint(w, "ignored")
		return
	}
	if r.URL.Path == "/block" {
		rp.started <- struct{}{}
		select {
		case <-r.Context().Done():
			rp.out <- outcome{cancelled: true}
		case <-time.After(20 * time.Second):
			rp.out <- outcome{}
		}
		return
	}
	var o outcome
	buf := make([]byte, 4096)
	var err error
	for {
		var k int
		k, err = r.Body.Read(buf)
		o.n += int64(k)
		if k > 0 && r.URL.Path == "/progress" {
			rp.progress <- k
		}
		if err != nil {
			break
		}
	}
	var mbe *http.MaxBytesError
	switch {
	case err == io.EOF:
		fmt.Fprint(w, o.n)
	case errors.As(err, &mbe):
		o.err, o.limit = err.Error(), mbe.Limit
		http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
	default:
		o.err = err.Error()
		if errors.Is(err, io.ErrUnexpectedEOF) {
			// The client is gone: its context must end.
			select {
			case <-r.Context().Done():
				o.cancelled = true
			case <-time.After(10 * time.Second):
			}
		}
		http.Error(w, err.Error(), http.StatusBadRequest)
	}
	rp.out <- o
}

// limited is the front of both servers: like paster's HTTP server, it caps
// the body at limit bytes with http.MaxBytesReader.
func limited(limit int64, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		next.ServeHTTP(w, r)
	})
}

// plugin serves h as target 1 on a gRPC server on loopback and returns a
// client connection to it. The server stops before the test's later
// cleanups run (an httptest server's Close waits for exchanges that a
// stuck plugin would hold forever).
func plugin(t testing.TB, h http.Handler) (*grpc.ClientConn, func()) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(grpc.MaxRecvMsgSize(wire.MaxMessage))
	s.RegisterService(&grpc.ServiceDesc{
		ServiceName: wire.PluginService,
		HandlerType: (*any)(nil),
		Streams: []grpc.StreamDesc{{StreamName: "HTTP", ServerStreams: true, ClientStreams: true,
			Handler: func(_ any, st grpc.ServerStream) error {
				return Serve(st.Context(), st, func(id uint64) http.Handler {
					if id == 1 {
						return h
					}
					return nil
				}, hclog.NewNullLogger())
			}}},
	}, struct{}{})
	go s.Serve(lis)
	conn, err := grpc.NewClient("passthrough:///"+lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, s.Stop
}

// forwarder is the host side: it forwards every request to target 1 the
// way the host's remote apps do.
func forwarder(conn *grpc.ClientConn) http.Handler {
	o := GRPC{Conn: conn, Method: wire.MethodHTTP}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := Forward(w, r, o, 1)
		switch {
		case err == nil:
		case errors.Is(err, ErrNoResponse):
			if r.Context().Err() == nil {
				http.Error(w, "Bad Gateway", http.StatusBadGateway)
			}
		default:
			panic(http.ErrAbortHandler)
		}
	})
}

// servers returns the in-process server and the forwarding one, both with
// a body limit of 1000 bytes, serving rp.
func servers(t *testing.T, rp *reporter) map[string]string {
	t.Helper()
	direct := httptest.NewServer(limited(1000, rp))
	t.Cleanup(direct.Close)
	conn, stop := plugin(t, rp)
	fwd := httptest.NewServer(limited(1000, forwarder(conn)))
	t.Cleanup(func() { stop(); fwd.Close() })
	return map[string]string{"in-process": direct.Listener.Addr().String(), "forwarded": fwd.Listener.Addr().String()}
}

// exchange writes raw to addr; with hangUp it closes the connection right
// after and returns "", otherwise it returns the response status line
// ("" if the server closed the connection without one).
func exchange(addr, raw string, hangUp bool) (string, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if _, err := io.WriteString(c, raw); err != nil {
		return "", err
	}
	if hangUp {
		return "", nil
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("reading the response: %w", err)
	}
	return strings.TrimSpace(line), nil
}

const chunkedHead = "POST /body HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"

func chunked(n int) string {
	var b strings.Builder
	for n > 0 {
		k := min(n, 600)
		fmt.Fprintf(&b, "%x\r\n%s\r\n", k, strings.Repeat("a", k))
		n -= k
	}
	return b.String()
}

// bodyCases are the broken and oversized bodies, each as raw bytes, with
// what the handler must see.
var bodyCases = []struct {
	name   string
	raw    string
	hangUp bool
	status string // response status line ("" when the client hung up)
	want   outcome
}{
	{
		name:   "chunked over the limit",
		raw:    chunkedHead + chunked(1200) + "0\r\n\r\n",
		status: "HTTP/1.1 413 Request Entity Too Large",
		want:   outcome{n: 1000, err: "http: request body too large", limit: 1000},
	},
	{
		name:   "malformed chunk size",
		raw:    chunkedHead + "5\r\nhello\r\nzz\r\n",
		status: "HTTP/1.1 400 Bad Request",
		want:   outcome{n: 5, err: "invalid byte in chunk length"},
	},
	{
		name:   "missing chunk terminator",
		raw:    chunkedHead + "5\r\nhelloXX",
		status: "HTTP/1.1 400 Bad Request",
		want:   outcome{n: 5, err: "malformed chunked encoding"},
	},
	{
		name:   "client gone mid-body (Content-Length)",
		raw:    "POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789",
		hangUp: true,
		want:   outcome{n: 10, err: io.ErrUnexpectedEOF.Error(), cancelled: true},
	},
	{
		name:   "client gone mid-body (large Content-Length)",
		raw:    "POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 900\r\n\r\n" + strings.Repeat("z", 500),
		hangUp: true,
		want:   outcome{n: 500, err: io.ErrUnexpectedEOF.Error(), cancelled: true},
	},
	{
		name:   "client gone mid-body (chunked)",
		raw:    chunkedHead + "5\r\nhello\r\n",
		hangUp: true,
		want:   outcome{n: 5, err: io.ErrUnexpectedEOF.Error(), cancelled: true},
	},
}

// TestBodyErrors sends each broken body to the in-process server and to the
// forwarding one: the handler must see the same error (the same bytes
// before it, an *http.MaxBytesError with the limit for a body over it, a
// cancelled context when the client is gone) and the client the same
// status.
func TestBodyErrors(t *testing.T) {
	t.Parallel()
	rp := newReporter()
	addrs := servers(t, rp)
	for _, mode := range []string{"in-process", "forwarded"} {
		for _, c := range bodyCases {
			t.Run(mode+"/"+c.name, func(t *testing.T) {
				var status string
				if c.hangUp {
					// Hang up once the handler has read the first bytes.
					conn, err := net.Dial("tcp", addrs[mode])
					if err != nil {
						t.Fatal(err)
					}
					defer conn.Close()
					if _, err := io.WriteString(conn, strings.Replace(c.raw, "/body", "/progress", 1)); err != nil {
						t.Fatal(err)
					}
					select {
					case <-rp.progress:
					case <-time.After(10 * time.Second):
						t.Fatal("the handler read nothing")
					}
					conn.Close()
				} else {
					var err error
					if status, err = exchange(addrs[mode], c.raw, false); err != nil {
						t.Fatal(err)
					}
				}
				if status != c.status {
					t.Errorf("status %q, want %q", status, c.status)
				}
				select {
				case got := <-rp.out:
					want := c.want
					if c.hangUp && mode == "forwarded" && got.n <= want.n {
						// The exchange ends when the client does: bytes
						// still in flight to the plugin may be dropped.
						want.n = got.n
					}
					if got != want {
						t.Errorf("handler saw %+v, want %+v", got, want)
					}
				case <-time.After(15 * time.Second):
					t.Fatal("the handler did not finish")
				}
				for len(rp.progress) > 0 {
					<-rp.progress
				}
			})
		}
	}
}

// TestBodyAsItArrives: the handler sees the first bytes of a small body that
// has not fully arrived, so its own per-read timeout can work.
func TestBodyAsItArrives(t *testing.T) {
	t.Parallel()
	rp := newReporter()
	addrs := servers(t, rp)
	for _, mode := range []string{"in-process", "forwarded"} {
		t.Run(mode, func(t *testing.T) {
			c, err := net.Dial("tcp", addrs[mode])
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.WriteString(c, "POST /progress HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789"); err != nil {
				t.Fatal(err)
			}
			select {
			case n := <-rp.progress:
				if n != 10 {
					t.Errorf("first read %d bytes, want 10", n)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the handler saw nothing of the 10 bytes sent")
			}
			c.Close()
			<-rp.out
		})
	}
}

// TestAnswerBeforeBody: a handler that answers without reading a body the
// client is slow to send gets its answer to the client, and the host lets
// go of the connection instead of waiting for the rest of the body.
func TestAnswerBeforeBody(t *testing.T) {
	t.Parallel()
	conn, stop := plugin(t, newReporter())
	srv := httptest.NewServer(forwarder(conn))
	t.Cleanup(func() { stop(); srv.Close() })
	for _, size := range []int{100, 100 << 10, 1 << 20} {
		c, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "POST /ignore HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n0123456789", size)
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("Content-Length %d: no answer: %v", size, err)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil || string(b) != "ignored" {
			t.Fatalf("Content-Length %d: body %q, %v", size, b, err)
		}
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("Content-Length %d: the server kept the connection: %v", size, err)
		}
	}
}

// TestCancelReachesHandler: when the host's request context ends (a
// server-side handler timeout), the exchange ends and the plugin handler's
// context is cancelled.
func TestCancelReachesHandler(t *testing.T) {
	t.Parallel()
	rp := newReporter()
	conn, stop := plugin(t, rp)
	fwd := forwarder(conn)
	cancels := make(chan context.CancelFunc, 1)
	returned := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithCancel(r.Context())
		cancels <- cancel
		fwd.ServeHTTP(w, r.WithContext(ctx))
		returned <- struct{}{}
	}))
	t.Cleanup(func() { stop(); srv.Close() })
	for _, body := range []string{"", "Content-Length: 5\r\n\r\nhello", "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"} {
		c, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		if body == "" {
			body = "\r\n"
		}
		if _, err := io.WriteString(c, "POST /block HTTP/1.1\r\nHost: x\r\n"+body); err != nil {
			t.Fatal(err)
		}
		cancel := <-cancels
		select {
		case <-rp.started:
		case <-time.After(10 * time.Second):
			t.Fatal("the handler did not start")
		}
		cancel()
		if got := <-rp.out; !got.cancelled {
			t.Errorf("%q: the plugin handler's context was not cancelled", body)
		}
		select {
		case <-returned:
		case <-time.After(10 * time.Second):
			t.Fatalf("%q: the host handler did not return", body)
		}
		c.Close()
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd:", err)
	}
	return len(fds)
}

// TestBodyErrorsLeakNothing sends 1,000 broken bodies through the
// exchange; afterwards the goroutines (host and plugin side, one process
// here) and open files are back to what they were.
func TestBodyErrorsLeakNothing(t *testing.T) {
	rp := newReporter()
	conn, stop := plugin(t, rp)
	fwd := httptest.NewServer(limited(1000, forwarder(conn)))
	t.Cleanup(func() { stop(); fwd.Close() })
	addr := fwd.Listener.Addr().String()
	go func() {
		for range rp.out {
		}
	}()
	if _, err := exchange(addr, "GET /body HTTP/1.1\r\nHost: x\r\n\r\n", false); err != nil { // warm up the connection
		t.Fatal(err)
	}
	runtime.GC()
	baseG, baseFD := runtime.NumGoroutine(), openFDs(t)

	const total, workers = 1000, 8
	var failed atomic.Bool
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < total && !failed.Load(); i += workers {
				c := bodyCases[i%len(bodyCases)]
				if got, err := exchange(addr, c.raw, c.hangUp); err != nil || got != c.status {
					t.Errorf("%s: status %q (%v), want %q", c.name, got, err, c.status)
					failed.Store(true)
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	// Slack for the runtime's and gRPC's own goroutines; a leak here is one
	// or two per request.
	const slack = 5
	deadline := time.Now().Add(15 * time.Second)
	for {
		g, fd := runtime.NumGoroutine(), openFDs(t)
		if g <= baseG+slack && fd <= baseFD+slack {
			break
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("after %d broken bodies: %d goroutines (baseline %d), %d open files (baseline %d)\n%s", total, g, baseG, fd, baseFD, buf)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

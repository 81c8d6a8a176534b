package plugins

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/internal/testsync"
)

// The request bodies of these tests are written by hand on raw sockets, as a
// broken or hostile client sends them, to a plugin app behind a server that
// caps bodies at bodyLimit bytes the way paster's HTTP server does.

const bodyLimit = 1000

// limitedServer serves app on loopback with bodies capped at bodyLimit
// bytes. Unlike an httptest.Server's, its Close does not wait for handlers,
// which a stuck exchange would hold until the host closes.
func limitedServer(t *testing.T, app http.Handler) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, bodyLimit)
		app.ServeHTTP(w, r)
	})}
	go srv.Serve(lis)
	t.Cleanup(func() { srv.Close() })
	return lis.Addr().String()
}

// rawExchange writes raw to addr and returns the status line and body of the
// response (the server closes these connections after answering).
func rawExchange(addr, raw string) (string, string, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return "", "", err
	}
	defer c.Close()
	if _, err := io.WriteString(c, raw); err != nil {
		return "", "", err
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return "", "", fmt.Errorf("reading the response: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", "", fmt.Errorf("reading the response body: %w", err)
	}
	return resp.Status, strings.TrimSpace(string(b)), nil
}

// hangUp sends raw to addr and closes the connection once the probe's /body
// handler for id has read the first bytes.
func hangUp(t *testing.T, addr, id, raw string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	mustGet(t, "http://"+addr+"/started?id="+id, "yes")
}

const chunkedPost = "POST /body HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"

func chunks(n int) string {
	var b strings.Builder
	for n > 0 {
		k := min(n, 600)
		fmt.Fprintf(&b, "%x\r\n%s\r\n", k, strings.Repeat("a", k))
		n -= k
	}
	return b.String() + "0\r\n\r\n"
}

// brokenBodies are answered by the probe's /body handler.
var brokenBodies = []struct{ name, raw, status, body string }{
	{"chunked over the limit", chunkedPost + chunks(1200),
		"413 Request Entity Too Large", "http: request body too large (limit 1000)"},
	{"malformed chunk size", chunkedPost + "5\r\nhello\r\nzz\r\n",
		"400 Bad Request", "invalid byte in chunk length"},
	{"missing chunk terminator", chunkedPost + "5\r\nhelloXX",
		"400 Bad Request", "malformed chunked encoding"},
}

// gone are bodies whose client hangs up in the middle.
var gone = []struct{ name, head, sent string }{
	{"Content-Length", "Content-Length: 100", "0123456789"},
	{"chunked", "Transfer-Encoding: chunked", "5\r\nhello\r\n"},
}

func goneRequest(id, head, sent string) string {
	return "POST /body?id=" + id + " HTTP/1.1\r\nHost: x\r\n" + head + "\r\n\r\n" + sent
}

// TestPluginBodyErrors: a plugin handler sees a broken body's error as an
// in-process one would (413 for a chunked body over the server's limit, the
// parse error, a cancelled context when the client hangs up) instead of
// waiting for the rest forever.
func TestPluginBodyErrors(t *testing.T) {
	t.Parallel()
	h := newHost(t, HostOptions{})
	_, app := probeApp(t, h, "body")
	addr := limitedServer(t, app)
	for _, c := range brokenBodies {
		t.Run(c.name, func(t *testing.T) {
			status, body, err := rawExchange(addr, c.raw)
			if err != nil {
				t.Fatal(err)
			}
			if status != c.status || body != c.body {
				t.Errorf("got %s %q, want %s %q", status, body, c.status, c.body)
			}
		})
	}
	for _, c := range gone {
		t.Run("client gone mid-body/"+c.name, func(t *testing.T) {
			id := "gone-" + c.name
			hangUp(t, addr, id, goneRequest(id, c.head, c.sent))
			testsync.WaitFor(t, "the plugin handler's context to end", func() bool {
				_, b := get(t, "http://"+addr+"/cancelled?id="+id)
				return b == "true"
			})
		})
	}
}

// TestPluginBodyErrorsLeakNothing sends 1,000 broken and abandoned bodies to
// a plugin app; afterwards the host's goroutines and open files and the
// plugin's goroutines and open files are back to their baselines.
func TestPluginBodyErrorsLeakNothing(t *testing.T) {
	// Not parallel: counts the process's goroutines and files.
	h := newHost(t, HostOptions{})
	_, app := probeApp(t, h, "leak")
	addr := limitedServer(t, app)
	pid := strconv.Itoa(h.Plugins()[0].PID)
	pluginGoroutines := func() int {
		_, b := get(t, "http://"+addr+"/goroutines")
		n, err := strconv.Atoi(b)
		if err != nil {
			t.Fatalf("/goroutines: %q", b)
		}
		return n
	}
	http.DefaultClient.CloseIdleConnections()
	runtime.GC()
	type counts struct{ hostG, hostFD, plugG, plugFD int }
	measure := func() counts {
		c := counts{plugG: pluginGoroutines()}
		http.DefaultClient.CloseIdleConnections()
		c.hostG, c.hostFD, c.plugFD = runtime.NumGoroutine(), fdCount(t, "self"), fdCount(t, pid)
		return c
	}
	base := measure()

	const total, workers = 1000, 8
	var failed atomic.Bool
	fail := func(format string, args ...any) {
		t.Errorf(format, args...)
		failed.Store(true)
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; i < total && !failed.Load(); i += workers {
				if i%2 == 0 {
					c := brokenBodies[i/2%len(brokenBodies)]
					if status, _, err := rawExchange(addr, c.raw); err != nil || status != c.status {
						fail("%s: %s (%v), want %s", c.name, status, err, c.status)
					}
					continue
				}
				// A client that hangs up mid-body without waiting for the
				// handler to start.
				c := gone[i/2%len(gone)]
				conn, err := net.Dial("tcp", addr)
				if err != nil {
					fail("dial: %v", err)
					continue
				}
				if _, err := io.WriteString(conn, goneRequest("", c.head, c.sent)); err != nil {
					fail("write: %v", err)
				}
				conn.Close()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	// Slack for the runtimes' and gRPC's own goroutines and connections; a
	// leak here is one or more per request.
	const slack = 5
	var now counts
	testsync.WaitFor(t, "goroutines and files back to their baselines", func() bool {
		now = measure()
		return now.hostG <= base.hostG+slack && now.hostFD <= base.hostFD+slack &&
			now.plugG <= base.plugG+slack && now.plugFD <= base.plugFD+slack
	})
	t.Logf("after %d requests: %+v, baseline %+v", total, now, base)

}

// fdCount counts the open files of process pid ("self" for this one).
func fdCount(t *testing.T, pid string) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/" + pid + "/fd")
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			t.Skip("no /proc")
		}
		t.Fatal(err)
	}
	return len(fds)
}

// TestUploadStalledSmallBody: the upload example's per-read timeout holds for
// a small body that stalls: 10 of 100 declared bytes, then nothing, get 408
// from the plugin after read_timeout (not the server's read timeout later).
func TestUploadStalledSmallBody(t *testing.T) {
	t.Parallel()
	h := newHost(t, HostOptions{})
	d, err := h.Binary(bin("upload"), entrypoints.Origin{})
	if err != nil {
		t.Fatal(err)
	}
	app, err := d.Apps["main"](nil, entrypoints.NewLocal("read_timeout", "300ms"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", limitedServer(t, app))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789"); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer to a stalled body: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout || !strings.HasPrefix(string(b), "timed out after 10 bytes") {
		t.Fatalf("got %s %q, want 408 timed out after 10 bytes", resp.Status, b)
	}
}

// TestPluginRequestCancelled: when the host ends a request's context (as a
// server-side handler timeout does), the exchange ends, the host handler
// returns and the plugin handler's context is cancelled, with or without a
// body still on its way.
func TestPluginRequestCancelled(t *testing.T) {
	t.Parallel()
	h := newHost(t, HostOptions{})
	_, app := probeApp(t, h, "cancel")
	cancels := make(chan context.CancelFunc, 1)
	returned := make(chan struct{}, 1)
	addr := limitedServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/block" {
			app.ServeHTTP(w, r)
			return
		}
		ctx, cancel := context.WithCancel(r.Context())
		cancels <- cancel
		app.ServeHTTP(w, r.WithContext(ctx))
		returned <- struct{}{}
	}))
	for _, c := range []struct{ name, head, body string }{
		{"no body", "", ""},
		{"stalled body", "Content-Length: 100\r\n", "0123456789"},
		{"stalled chunked body", "Transfer-Encoding: chunked\r\n", "5\r\nhello\r\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			id := strings.ReplaceAll(c.name, " ", "-")
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := io.WriteString(conn, "POST /block?id="+id+" HTTP/1.1\r\nHost: x\r\n"+c.head+"\r\n"+c.body); err != nil {
				t.Fatal(err)
			}
			cancel := <-cancels
			mustGet(t, "http://"+addr+"/started?id="+id, "yes")
			cancel()
			select {
			case <-returned:
			case <-time.After(10 * time.Second):
				t.Fatal("the host handler did not return")
			}
			testsync.WaitFor(t, "the plugin handler's context to end", func() bool {
				_, b := get(t, "http://"+addr+"/cancelled?id="+id)
				return b == "true"
			})
		})
	}
}

// TestPluginServerBodyErrors is the other direction: a server inside a
// plugin (hello's http-runner) serves an app of the host, and a broken or
// abandoned body reaches the host's handler as it would in process.
func TestPluginServerBodyErrors(t *testing.T) {
	t.Parallel()
	h := newHost(t, HostOptions{})
	d, err := h.Egg("hello", entrypoints.Origin{})
	if err != nil {
		t.Fatal(err)
	}
	type outcome struct {
		err       string
		cancelled bool
	}
	seen := make(chan outcome, 1)
	started := make(chan struct{}, 1)
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 4096)
		var err error
		for first := true; err == nil; first = false {
			var k int
			k, err = r.Body.Read(buf)
			if k > 0 && first && r.URL.Path == "/gone" {
				started <- struct{}{}
			}
		}
		o := outcome{err: err.Error()}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			select {
			case <-r.Context().Done():
				o.cancelled = true
			case <-time.After(10 * time.Second):
			}
		}
		http.Error(w, err.Error(), http.StatusBadRequest)
		seen <- o
	})
	sock := filepath.Join(t.TempDir(), "hello.sock")
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- d.Runners["http-runner"](ctx, app, nil, entrypoints.NewLocal("listen", "unix:"+sock)) }()
	t.Cleanup(func() { cancel(); <-ran })
	dial := func() net.Conn {
		t.Helper()
		var c net.Conn
		testsync.WaitFor(t, "the plugin's server to listen", func() bool {
			c, err = net.Dial("unix", sock)
			return err == nil
		})
		return c
	}
	next := func() outcome {
		t.Helper()
		select {
		case o := <-seen:
			return o
		case <-time.After(15 * time.Second):
			t.Fatal("the host handler did not finish")
			return outcome{}
		}
	}

	t.Run("malformed chunk size", func(t *testing.T) {
		c := dial()
		defer c.Close()
		io.WriteString(c, chunkedPost+"5\r\nhello\r\nzz\r\n")
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if o := next(); resp.StatusCode != http.StatusBadRequest || o.err != "invalid byte in chunk length" {
			t.Errorf("got %s, the handler saw %+v", resp.Status, o)
		}
	})
	t.Run("client gone mid-body", func(t *testing.T) {
		c := dial()
		defer c.Close()
		io.WriteString(c, "POST /gone HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
		select {
		case <-started:
		case <-time.After(10 * time.Second):
			t.Fatal("the host handler read nothing")
		}
		c.Close()
		if o := next(); o != (outcome{err: io.ErrUnexpectedEOF.Error(), cancelled: true}) {
			t.Errorf("the handler saw %+v", o)
		}
		// A client that left is not a failure of the host app: once a
		// later line of the plugin's log is in, no warning came before.
		tick, err := d.Coroutines["ticker"](nil, entrypoints.NewLocal("interval", "10ms"))
		if err != nil {
			t.Fatal(err)
		}
		tctx, stop := context.WithCancel(context.Background())
		ticked := make(chan error, 1)
		go func() { ticked <- tick(tctx) }()
		testsync.WaitFor(t, "a tick in the log", func() bool { return strings.Contains(h.logs.String(), "tick") })
		stop()
		<-ticked
		if strings.Contains(h.logs.String(), "calling host app failed") {
			t.Errorf("a client that hung up was logged as a failure:\n%s", h.logs.String())
		}
	})
}

package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/paster-dev/paster/internal/testsync"
	"github.com/paster-dev/paster/plugins/internal/wire"
)

// muxPair returns the two ends of a Mux over n real unix socket pairs,
// each with its shared memory (NewArena) where there is any: the client
// (initiator) and the server, whose exchanges h serves.
func muxPair(t testing.TB, n int, h Handler) (*Mux, *Mux) {
	t.Helper()
	var a, b []net.Conn
	var arenas []*os.File
	for range n {
		if f, err := NewArena(); err == nil {
			arenas = append(arenas, f)
			defer f.Close()
		}
		c0, c1 := socketPair(t)
		a, b = append(a, c0), append(b, c1)
	}
	refuse := func(context.Context, string, uint64, *Exchange) error { return errors.New("nothing served here") }
	client := NewMux(a, true, refuse, hclog.NewNullLogger(), arenas...)
	server := NewMux(b, false, h, hclog.NewNullLogger(), arenas...)
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// socketPair returns the two ends of a real unix socket pair.
func socketPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var cs [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "mux test")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		cs[i] = c
	}
	return cs[0], cs[1]
}

// TestMuxSlowReader: an exchange whose reader does not read stops its
// sender after a window's worth, while other exchanges on the same
// connection go on; once read, it goes on too.
func TestMuxSlowReader(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	client, _ := muxPair(t, 1, func(ctx context.Context, method string, _ uint64, x *Exchange) error {
		if method == "slow" {
			<-release
			var f wire.Frame
			for {
				if err := x.RecvMsg(&f); err != nil {
					return nil
				}
				if f.Flags&wire.FlagEnd != 0 {
					return x.SendMsg(&wire.Frame{Flags: wire.FlagEnd})
				}
			}
		}
		return ServeCall(ctx, x, func(_ context.Context, in []byte) ([]byte, error) { return in, nil })
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	slow, err := client.open(ctx, "slow", 0)
	if err != nil {
		t.Fatal(err)
	}
	var sent atomic.Int64
	const total = 64
	done := make(chan error, 1)
	go func() {
		chunk := make([]byte, wire.ChunkSize)
		for i := range total {
			f := &wire.Frame{Body: chunk}
			if i == total-1 {
				f.Flags = wire.FlagEnd
			}
			if err := slow.SendMsg(f); err != nil {
				done <- err
				return
			}
			sent.Add(int64(len(chunk)))
		}
		done <- nil
	}()
	// The sender stops at the window (the frame that crosses it is sent).
	deadline := time.Now().Add(10 * time.Second)
	for last := int64(-1); ; {
		time.Sleep(50 * time.Millisecond)
		n := sent.Load()
		if n == last {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the sender never stopped")
		}
		last = n
	}
	if n := sent.Load(); n > Window+wire.ChunkSize {
		t.Fatalf("sent %d bytes to a reader that reads nothing; window %d", n, Window)
	}
	// Meanwhile other exchanges on the connection are answered.
	for range 10 {
		out, err := client.Call(context.Background(), "echo", []byte("hi"))
		if err != nil || string(out) != "hi" {
			t.Fatalf("call beside a stalled exchange: %q %v", out, err)
		}
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var f wire.Frame
	if err := slow.RecvMsg(&f); err != nil || f.Flags&wire.FlagEnd == 0 {
		t.Fatalf("answer: %+v %v", f, err)
	}
	if err := slow.RecvMsg(&f); err != io.EOF {
		t.Fatalf("after the end: %v", err)
	}
}

// TestMuxTinyMessagesWindow: an honest sender of tiny messages fills the
// window to its last byte while the reader reads nothing, and then goes on
// as the reader reads: the receiver's count of the window (each message
// at least minMessage) never takes it for a peer past its window.
func TestMuxTinyMessagesWindow(t *testing.T) {
	t.Parallel()
	const n = 3 * Window / minMessage
	got := make(chan int, 1)
	client, _ := muxPair(t, 1, func(ctx context.Context, _ string, _ uint64, x *Exchange) error {
		// Not a message read until the sender has filled the window.
		testsync.WaitFor(t, "the window full", func() bool {
			x.mu.Lock()
			defer x.mu.Unlock()
			return x.inflight >= Window
		})
		var f wire.Frame
		i := 0
		for ; ; i++ {
			if err := x.RecvMsg(&f); err != nil || f.Flags&wire.FlagEnd != 0 {
				break
			}
		}
		got <- i
		return x.SendMsg(&wire.Frame{Flags: wire.FlagEnd})
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	x, err := client.open(ctx, "tiny", 0)
	if err != nil {
		t.Fatal(err)
	}
	tiny := &wire.Frame{Flags: wire.FlagFlush}
	for i := range n {
		if err := x.SendMsg(tiny); err != nil {
			t.Fatal(i, err)
		}
	}
	if err := x.SendMsg(&wire.Frame{Flags: wire.FlagEnd}); err != nil {
		t.Fatal(err)
	}
	if i := testsync.Recv(t, "the reader done", got); i != n {
		t.Fatalf("received %d of %d tiny messages", i, n)
	}
	x.end()
}

// TestMuxConnLost: when the peer's connections close, exchanges and calls
// in flight fail at once, and the served side's contexts end.
func TestMuxConnLost(t *testing.T) {
	t.Parallel()
	served := make(chan context.Context, 1)
	client, server := muxPair(t, 2, func(ctx context.Context, _ string, _ uint64, x *Exchange) error {
		served <- ctx
		<-ctx.Done()
		return nil
	})
	errs := make(chan error, 1)
	go func() {
		_, err := client.Call(context.Background(), "park", nil)
		errs <- err
	}()
	ctx := <-served
	server.Close()
	if err := <-errs; !errors.Is(err, ErrConnLost) {
		t.Fatalf("call: %v, want ErrConnLost", err)
	}
	<-ctx.Done()
	<-client.Done()
	if _, err := client.Open(context.Background()); !errors.Is(err, ErrConnLost) {
		t.Fatalf("open after the loss: %v", err)
	}
}

// TestMuxCancel: a client whose context ends cancels the handler's.
func TestMuxCancel(t *testing.T) {
	t.Parallel()
	ended := make(chan error, 1)
	client, _ := muxPair(t, 1, func(ctx context.Context, _ string, _ uint64, x *Exchange) error {
		var f wire.Frame
		_ = x.RecvMsg(&f)
		<-ctx.Done()
		ended <- x.RecvMsg(&f)
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	s, err := client.Open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SendMsg(&wire.Frame{Flags: wire.FlagHead}); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-ended; !errors.Is(err, ErrReset) {
		t.Fatalf("handler's read after the cancel: %v", err)
	}
	var f wire.Frame
	if err := s.RecvMsg(&f); !errors.Is(err, context.Canceled) {
		t.Fatalf("client's read after its cancel: %v", err)
	}
}

func hello(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain")
	_, _ = io.WriteString(w, "Hello, world!\n")
}

// httpPair serves h over a Mux pair the way a plugin does and returns the
// host's end.
func httpPair(b testing.TB, h http.Handler) *Mux {
	client, _ := muxPair(b, 2, func(ctx context.Context, _ string, _ uint64, x *Exchange) error {
		return Serve(ctx, x, func(uint64) http.Handler { return h }, hclog.NewNullLogger())
	})
	return client
}

// BenchmarkMuxHTTP is one small HTTP exchange (GET, 14-byte answer)
// through Forward, the Mux and Serve, as the host sends a request to a
// plugin: exchanges per second and allocations per exchange, both sides.
func BenchmarkMuxHTTP(b *testing.B) {
	m := httpPair(b, http.HandlerFunc(hello))
	r := httptest.NewRequest("GET", "/", nil)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		w := httptest.NewRecorder()
		if err := Forward(w, r, m, 1); err != nil || w.Code != 200 {
			b.Fatal(w.Code, err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "exchanges/s")
}

// BenchmarkMuxHTTPParallel is BenchmarkMuxHTTP from many goroutines: the
// writes of concurrent exchanges are coalesced.
func BenchmarkMuxHTTPParallel(b *testing.B) {
	m := httpPair(b, http.HandlerFunc(hello))
	b.ReportAllocs()
	b.SetParallelism(8)
	b.RunParallel(func(pb *testing.PB) {
		r := httptest.NewRequest("GET", "/", nil)
		for pb.Next() {
			w := httptest.NewRecorder()
			if err := Forward(w, r, m, 1); err != nil || w.Code != 200 {
				b.Error(w.Code, err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "exchanges/s")
}

// BenchmarkMuxCall is one Core-sized call (64 bytes each way).
func BenchmarkMuxCall(b *testing.B) {
	client, _ := muxPair(b, 2, func(ctx context.Context, _ string, _ uint64, x *Exchange) error {
		return ServeCall(ctx, x, func(_ context.Context, in []byte) ([]byte, error) { return in, nil })
	})
	in := []byte(strings.Repeat("c", 64))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := client.Call(context.Background(), "echo", in); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "calls/s")
}

// readToEnd receives frames until one with FlagEnd, and answers it with
// an empty FlagEnd.
func readToEnd(x *Exchange) error {
	var f wire.Frame
	for {
		if err := x.RecvMsg(&f); err != nil {
			return err
		}
		if f.Flags&wire.FlagEnd != 0 {
			return x.SendMsg(&wire.Frame{Flags: wire.FlagEnd})
		}
	}
}

// streamBench sends b.N body frames of size bytes on one exchange to a
// handler that reads them: frames per second and bytes per second.
func streamBench(b *testing.B, size int) {
	client, _ := muxPair(b, 1, func(ctx context.Context, _ string, _ uint64, x *Exchange) error {
		return readToEnd(x)
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := client.Open(ctx)
	if err != nil {
		b.Fatal(err)
	}
	f := &wire.Frame{Body: make([]byte, size)}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for b.Loop() {
		if err := s.SendMsg(f); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.SendMsg(&wire.Frame{Flags: wire.FlagEnd}); err != nil {
		b.Fatal(err)
	}
	if err := s.RecvMsg(f); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "frames/s")
}

// BenchmarkMuxFrames: small frames (64-byte bodies) on one exchange.
func BenchmarkMuxFrames(b *testing.B) { streamBench(b, 64) }

// BenchmarkMuxBytes: full body chunks (wire.ChunkSize) on one exchange.
func BenchmarkMuxBytes(b *testing.B) { streamBench(b, wire.ChunkSize) }

// TestMuxIdleWorkersEnd: the goroutines that served exchanges wait idle for
// the next ones, then end once idle for a while (the reaper), and serving
// goes on after.
func TestMuxIdleWorkersEnd(t *testing.T) {
	t.Parallel()
	const n = 4
	var started sync.WaitGroup
	hold := make(chan struct{})
	client, server := muxPair(t, 1, func(ctx context.Context, _ string, _ uint64, x *Exchange) error {
		return ServeCall(ctx, x, func(_ context.Context, in []byte) ([]byte, error) {
			if string(in) == "hold" {
				started.Done()
				<-hold
			}
			return in, nil
		})
	})
	idle := func() int {
		server.idleMu.Lock()
		defer server.idleMu.Unlock()
		return len(server.idle)
	}
	ctx := context.Background()
	started.Add(n)
	errs := make(chan error, n)
	for range n {
		go func() {
			_, err := client.Call(ctx, "m", []byte("hold"))
			errs <- err
		}()
	}
	started.Wait() // n workers at once
	close(hold)
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); idle() < min(n, maxIdle); {
		if time.Now().After(deadline) {
			t.Fatalf("%d workers idle, want %d", idle(), min(n, maxIdle))
		}
		time.Sleep(time.Millisecond)
	}
	for deadline := time.Now().Add(10 * time.Second); idle() > 0; {
		if time.Now().After(deadline) {
			t.Fatalf("%d workers still idle after 10 s", idle())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if out, err := client.Call(ctx, "m", []byte("again")); err != nil || string(out) != "again" {
		t.Fatalf("call after the workers ended: %q, %v", out, err)
	}
}

// TestMuxCallLater: calls served by ServeCallLater are answered after the
// handler returned, all at once from one goroutine (as a Signal answers
// its waiters), or at once; a call its client abandons ends the context
// its reply waited with.
func TestMuxCallLater(t *testing.T) {
	t.Parallel()
	const n = 200
	type parked struct {
		ctx   context.Context
		in    string
		reply func([]byte, error)
	}
	calls := make(chan parked, n+1)
	client, _ := muxPair(t, 2, func(ctx context.Context, _ string, _ uint64, x *Exchange) error {
		return ServeCallLater(ctx, x, func(ctx context.Context, in []byte, reply func([]byte, error)) {
			if string(in) == "now" {
				reply([]byte("at once"), nil)
				return
			}
			calls <- parked{ctx, string(in), reply}
		})
	})
	if out, err := client.Call(context.Background(), "m", []byte("now")); err != nil || string(out) != "at once" {
		t.Fatalf("call answered at once: %q, %v", out, err)
	}

	// One call abandoned by its client: its handler's context ends.
	ctx, cancel := context.WithCancel(context.Background())
	abandoned := make(chan error, 1)
	go func() {
		_, err := client.Call(ctx, "m", []byte("abandoned"))
		abandoned <- err
	}()
	p := <-calls
	cancel()
	if err := <-abandoned; !errors.Is(err, context.Canceled) {
		t.Fatalf("abandoned call: %v", err)
	}
	<-p.ctx.Done()
	p.reply([]byte("too late"), nil) // goes nowhere

	errs := make(chan error, n)
	for i := range n {
		go func() {
			want := fmt.Sprint("call ", i)
			out, err := client.Call(context.Background(), "m", []byte(want))
			if err == nil && string(out) != "answer to "+want {
				err = fmt.Errorf("got %q for %q", out, want)
			}
			errs <- err
		}()
	}
	var ps []parked
	for range n {
		ps = append(ps, <-calls)
	}
	for _, p := range ps {
		if p.in == "call 7" {
			p.reply(nil, errors.New("no answer for 7"))
			continue
		}
		p.reply([]byte("answer to "+p.in), nil)
	}
	failed := 0
	for range n {
		if err := <-errs; err != nil {
			if err.Error() != "no answer for 7" {
				t.Error(err)
			}
			failed++
		}
	}
	if failed != 1 {
		t.Errorf("%d calls failed, want the one answered with an error", failed)
	}
}

// TestMuxHonestPeak: honest peak traffic never trips the host's budget
// for large messages. Many exchanges each way, opened by the host and by
// the plugin, each start with a head larger than maxSmallMessage (large
// headers) and then fill their window with the largest body frames an
// honest sender sends (wire.ChunkSize), which nobody reads until every
// window is full; the heads, many times the budget together, are read as
// they come (as Forward and Serve read them). The host's reader waits
// for them at times, and the connection carries everything.
func TestMuxHonestPeak(t *testing.T) {
	t.Parallel()
	const (
		exchanges = 24 // each way
		budget    = 1 << 20
		chunks    = 3 // a window of them and one more
	)
	header := http.Header{"X-Big": {strings.Repeat("h", maxSmallMessage)}}
	// send sends a large head, then body chunks and the end.
	send := func(x *Exchange) error {
		if err := x.SendMsg(&wire.Frame{Flags: wire.FlagHead, Status: 200, Header: header}); err != nil {
			return err
		}
		body := &wire.Frame{Body: make([]byte, wire.ChunkSize)}
		for range chunks {
			if err := x.SendMsg(body); err != nil {
				return err
			}
		}
		return x.SendMsg(&wire.Frame{Flags: wire.FlagEnd})
	}
	full := make(chan *Exchange, 2*exchanges) // windows full, head read
	proceed := make(chan struct{})
	// recv reads x's head, waits until its window is full and proceed,
	// then reads the rest.
	recv := func(x *Exchange) error {
		var f wire.Frame
		if err := x.RecvMsg(&f); err != nil {
			return err
		}
		if len(f.Header.Get("X-Big")) != maxSmallMessage {
			return errors.New("head lost its header")
		}
		full <- x
		<-proceed
		n := 0
		for {
			if err := x.RecvMsg(&f); err != nil {
				return err
			}
			n += len(f.Body)
			if f.Flags&wire.FlagEnd != 0 {
				break
			}
		}
		if n != chunks*wire.ChunkSize {
			return fmt.Errorf("received %d body bytes, want %d", n, chunks*wire.ChunkSize)
		}
		return nil
	}
	errs := make(chan error, 4*exchanges)
	var log testsync.Buffer
	var a, b []net.Conn
	c0, c1 := socketPair(t)
	a, b = append(a, c0), append(b, c1)
	// The host serves what the plugin opens: it receives.
	host := NewMux(a, true, func(_ context.Context, _ string, _ uint64, x *Exchange) error {
		err := recv(x)
		errs <- err
		return err
	}, hclog.New(&hclog.LoggerOptions{Output: &log}))
	// The plugin serves what the host opens: it sends.
	plugin := NewMux(b, false, func(_ context.Context, _ string, _ uint64, x *Exchange) error {
		var f wire.Frame
		if err := x.RecvMsg(&f); err != nil {
			return err
		}
		err := send(x)
		errs <- err
		return err
	}, hclog.NewNullLogger())
	t.Cleanup(func() { host.Close(); plugin.Close() })
	host.budget.Store(budget)
	ctx := context.Background()
	for range exchanges {
		go func() {
			x, err := plugin.open(ctx, "", 0)
			if err == nil {
				defer x.end()
				err = send(x)
			}
			if err == nil {
				// The host's handler answers nothing and returns.
				if err = x.RecvMsg(new(wire.Frame)); err == io.EOF {
					err = nil
				}
			}
			errs <- err
		}()
		go func() {
			x, err := host.open(ctx, "", 0)
			if err == nil {
				defer x.end()
				err = x.SendMsg(&wire.Frame{Flags: wire.FlagHead | wire.FlagEnd})
			}
			if err == nil {
				err = recv(x)
			}
			errs <- err
		}()
	}
	var xs []*Exchange
	for range 2 * exchanges {
		xs = append(xs, testsync.Recv(t, "a head read", full))
	}
	testsync.WaitFor(t, "every window full", func() bool {
		for _, x := range xs {
			x.mu.Lock()
			n := x.inflight
			x.mu.Unlock()
			if n < Window {
				return false
			}
		}
		return true
	})
	cn := host.conns[0]
	cn.lmu.Lock()
	peak := cn.peak
	cn.lmu.Unlock()
	if peak > budget {
		t.Errorf("the host held %d bytes of large messages; the budget is %d", peak, budget)
	}
	close(proceed)
	for range 4 * exchanges {
		if err := testsync.Recv(t, "an exchange done", errs); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-host.Done():
		t.Fatal("the connection failed")
	case <-host.Broken():
		t.Fatal("the host took the plugin for a hostile one")
	default:
	}
	if s := log.String(); s != "" {
		t.Fatalf("the host logged:\n%s", s)
	}
}

// watchedCtx is a context whose watches are counted: context.AfterFunc and
// WithCancel register on it through its AfterFunc method (it is not a
// context package's cancelCtx), and watches reports how many are
// registered and not stopped.
type watchedCtx struct {
	done chan struct{}
	mu   sync.Mutex
	err  error
	fs   map[*func()]bool
}

func newWatchedCtx() *watchedCtx {
	return &watchedCtx{done: make(chan struct{}), fs: map[*func()]bool{}}
}

func (c *watchedCtx) Deadline() (time.Time, bool) { return time.Time{}, false }
func (c *watchedCtx) Done() <-chan struct{}       { return c.done }
func (c *watchedCtx) Value(any) any               { return nil }

func (c *watchedCtx) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *watchedCtx) AfterFunc(f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		go f()
		return func() bool { return false }
	}
	k := &f
	c.fs[k] = true
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		ok := c.fs[k]
		delete(c.fs, k)
		return ok
	}
}

func (c *watchedCtx) cancel() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.err = context.Canceled
	close(c.done)
	for k := range c.fs {
		go (*k)()
	}
	clear(c.fs)
}

func (c *watchedCtx) watches() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.fs)
}

// flushWriter is a ResponseWriter that another goroutine may read.
type flushWriter struct {
	h    http.Header
	body testsync.Buffer
}

func (w *flushWriter) Header() http.Header         { return w.h }
func (w *flushWriter) Write(p []byte) (int, error) { return w.body.Write(p) }
func (w *flushWriter) WriteHeader(int)             {}
func (w *flushWriter) Flush()                      {}

// TestForwardParkedHoldsNoWatch: a response that parks in the plugin after
// a first flush (a request waiting in WaitForSignal) leaves no watch on
// the request's context while Forward waits for the rest (Forward's wait
// watches it), so waking thousands at once stops none; the context's end
// still reaches the handler.
func TestForwardParkedHoldsNoWatch(t *testing.T) {
	t.Parallel()
	ended := make(chan error, 1)
	client := httpPair(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "waiting\n")
		_ = http.NewResponseController(w).Flush()
		<-r.Context().Done()
		ended <- r.Context().Err()
	}))
	ctx := newWatchedCtx()
	w := &flushWriter{h: http.Header{}}
	forwarded := make(chan error, 1)
	go func() {
		forwarded <- Forward(w, httptest.NewRequest("GET", "/", nil).WithContext(ctx), client, 0)
	}()
	testsync.WaitFor(t, "the first flush at the client", func() bool { return w.body.String() == "waiting\n" })
	testsync.WaitFor(t, "no watch on the parked request's context", func() bool { return ctx.watches() == 0 })
	ctx.cancel()
	if err := testsync.Recv(t, "the handler's context end", ended); !errors.Is(err, context.Canceled) {
		t.Fatalf("handler's context: %v", err)
	}
	if err := testsync.Recv(t, "Forward's return", forwarded); err == nil {
		t.Fatal("Forward of a cancelled request returned no error")
	}
}

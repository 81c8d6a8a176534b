package runner

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

// listenerOf serves hello and, from its requests, learns the server's
// rejectListener: the test reads what expire did from it.
func listenerOf(ln *atomic.Pointer[rejectListener]) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if cs := connStateOf(r); cs != nil && cs.reject != nil {
			ln.Store(cs.reject.l)
		}
		hello(w, r)
	})
}

// held returns the connections l keeps open and those it has queued for
// expire.
func (l *rejectListener) held() (conns, queued int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.conns), l.queue.Len()
}

// examinedSoFar returns how many connections expire has looked at.
func (l *rejectListener) examinedSoFar() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.examined
}

// waitEmpty waits (bounded) until l keeps no connection open and none
// queued.
func waitEmpty(t *testing.T, l *rejectListener) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		conns, queued := l.held()
		if conns == 0 && queued == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the listener still holds %d open connections and %d queued, want none", conns, queued)
		}
		time.Sleep(10 * time.Millisecond) // polling for the server's closes
	}
}

// TestIdleTimeoutStaggeredCost: idle keep-alive connections whose kept
// deadlines are staggered (each one's request came at another moment, as
// they do, and as a hostile client makes them) are each looked at by the
// listener's timer (rejectListener.expire) a bounded number of times until
// idle_timeout ends them, not once per other connection's deadline: the
// cost of N idle connections is O(N log N) per idle_timeout, not O(N²)
// (100k connections once cost tens of seconds of CPU per idle_timeout).
// With read_header_timeout below idle_timeout each connection is first
// due at its header deadline, found idle and looked at again at its idle
// deadline; above it, the idle deadline replaces the header one.
func TestIdleTimeoutStaggeredCost(t *testing.T) {
	t.Parallel()
	const (
		n       = 300
		idle    = time.Second
		stagger = time.Second // over which the n requests come
	)
	for _, tc := range []struct {
		name       string
		readHeader time.Duration
		perConn    int64 // examinations per connection expected at most
	}{
		{"header deadline first", idle / 2, 4},
		{"idle deadline first", 10 * time.Second, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var ln atomic.Pointer[rejectListener]
			s := serve(t, listenerOf(&ln), "idle_timeout", idle.String(), "read_header_timeout", tc.readHeader.String())
			conns := make([]net.Conn, 0, n)
			readers := make([]*bufio.Reader, 0, n)
			t.Cleanup(func() {
				for _, c := range conns {
					c.Close()
				}
			})
			start := time.Now()
			for i := range n {
				// Each request at its own moment: the staggering the case
				// is about, not synchronisation.
				<-time.After(time.Until(start.Add(stagger * time.Duration(i) / n)))
				c, err := net.Dial("tcp", s.addr)
				if err != nil {
					t.Fatal(err)
				}
				br := bufio.NewReader(c)
				conns, readers = append(conns, c), append(readers, br)
				getOn(t, c, br, "/")
			}
			for i, c := range conns {
				c.SetReadDeadline(time.Now().Add(30 * time.Second))
				if _, err := readers[i].ReadByte(); !errors.Is(err, io.EOF) {
					t.Fatalf("idle connection %d: read %v, want io.EOF (closed by the server)", i, err)
				}
			}
			l := ln.Load()
			waitEmpty(t, l)
			got := l.examinedSoFar()
			t.Logf("%d staggered idle connections: expire looked at connections %d times (%.1f each)", n, got, float64(got)/n)
			if got > tc.perConn*n {
				t.Errorf("expire looked at connections %d times for %d idle connections, want at most %d (%d each)",
					got, n, tc.perConn*n, tc.perConn)
			}
		})
	}
}

// TestIdleConnsNotRetained: connections a client opens and closes, before
// a request, in the middle of its header or after one, with their kept
// deadlines far away, are let go by the listener (neither kept open nor
// queued for its timer), so that opening and closing connections fast
// does not grow the server's memory.
func TestIdleConnsNotRetained(t *testing.T) {
	t.Parallel()
	const n = 200
	for _, tc := range []struct {
		name string
		use  func(t *testing.T, c net.Conn, br *bufio.Reader)
	}{
		{"before a request", func(t *testing.T, c net.Conn, br *bufio.Reader) {}},
		{"in a header", func(t *testing.T, c net.Conn, br *bufio.Reader) { io.WriteString(c, "GET / HTTP/1.1\r\nHo") }},
		{"after a request", func(t *testing.T, c net.Conn, br *bufio.Reader) { getOn(t, c, br, "/") }},
		{"after two requests", func(t *testing.T, c net.Conn, br *bufio.Reader) {
			getOn(t, c, br, "/")
			getOn(t, c, br, "/")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var ln atomic.Pointer[rejectListener]
			s := serve(t, listenerOf(&ln), "idle_timeout", "1h", "read_header_timeout", "1h")
			for range n {
				c, err := net.Dial("tcp", s.addr)
				if err != nil {
					t.Fatal(err)
				}
				tc.use(t, c, bufio.NewReader(c))
				c.Close()
			}
			c, err := net.Dial("tcp", s.addr) // to learn the listener
			if err != nil {
				t.Fatal(err)
			}
			getOn(t, c, bufio.NewReader(c), "/")
			c.Close()
			waitEmpty(t, ln.Load())
		})
	}
}

// TestIdleTimeoutAfterBusyConns: connections busy with requests back to
// back, with read_header_timeout short so that the listener's timer finds
// them due again and again while net/http sets their deadlines (the race
// rejectListener.look describes), are all ended by idle_timeout once they
// go idle: none is left without a deadline, open for ever.
func TestIdleTimeoutAfterBusyConns(t *testing.T) {
	t.Parallel()
	const (
		n    = 20
		busy = time.Second
	)
	var ln atomic.Pointer[rejectListener]
	s := serve(t, listenerOf(&ln), "idle_timeout", "300ms", "read_header_timeout", "20ms")
	errs := make(chan error, n)
	for range n {
		go func() {
			c, err := net.Dial("tcp", s.addr)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(30 * time.Second))
			br := bufio.NewReader(c)
			req := []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			for end := time.Now().Add(busy); time.Now().Before(end); {
				if _, err := c.Write(req); err != nil {
					errs <- err
					return
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					errs <- err
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
				errs <- errors.New("idle after busy: read " + err.Error() + ", want io.EOF (closed by the server)")
				return
			}
			errs <- nil
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	waitEmpty(t, ln.Load())
}

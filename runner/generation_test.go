package runner

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/paster-dev/paster/internal/testsync"
)

// getString returns the body of GET url, or the error's text.
func getString(c *http.Client, url string) string {
	resp, err := c.Get(url)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// parkingApp answers "NAME: woken VALUE" after WaitForSignal("s") returns,
// or "NAME: ERROR" when it fails; it writes nothing before.
func parkingApp(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, err := CoreFrom(r.Context()).WaitForSignal(r.Context(), "s", NoTimeout)
		if err != nil {
			fmt.Fprintf(w, "%s: %v", name, err)
			return
		}
		fmt.Fprintf(w, "%s: woken %s", name, v)
	})
}

func TestFrontSwapAndDrain(t *testing.T) {
	t.Parallel()
	core := newTestCore(t, CoreOptions{})
	old := NewMount(parkingApp("old"), core, nil)
	front := NewFront(old)
	srv := httptest.NewServer(front)
	defer srv.Close()

	// Two requests park in the old generation.
	results := make(chan string, 3)
	for range 2 {
		go func() { results <- getString(http.DefaultClient, srv.URL) }()
	}
	testsync.WaitFor(t, "2 parked in the old mount", func() bool { return old.InFlight() == 2 && core.Stats().Waiters == 2 })

	// Swap: new requests go to the new mount, the parked ones stay.
	next := NewMount(parkingApp("new"), core, nil)
	if got := front.Swap(next); got != old {
		t.Fatalf("Swap returned %p, want the old mount", got)
	}
	go func() { results <- getString(http.DefaultClient, srv.URL) }()
	testsync.WaitFor(t, "1 parked in the new mount", func() bool { return next.InFlight() == 1 && core.Stats().Waiters == 3 })

	// A signal from the new generation reaches the old one's waiters: the
	// Core is shared.
	if n, err := core.Signal(context.Background(), "s", []byte("x")); err != nil || n != 3 {
		t.Fatalf("Signal woke %d (%v), want 3", n, err)
	}
	got := map[string]int{}
	for range 3 {
		got[testsync.Recv(t, "a response", results)]++
	}
	if got["old: woken x"] != 2 || got["new: woken x"] != 1 {
		t.Errorf("responses %v", got)
	}
	if left := old.Drain(time.Second); left != 0 {
		t.Errorf("Drain of an idle mount left %d", left)
	}
}

func TestMountDrainCutsParkedWaiters(t *testing.T) {
	t.Parallel()
	core := newTestCore(t, CoreOptions{})
	m := NewMount(parkingApp("old"), core, nil)
	front := NewFront(m)
	srv := httptest.NewServer(front)
	defer srv.Close()
	res := make(chan string, 1)
	go func() { res <- getString(http.DefaultClient, srv.URL) }()
	testsync.WaitFor(t, "a parked request", func() bool { return core.Stats().Waiters == 1 })
	front.Swap(NewMount(parkingApp("new"), core, nil))
	// The waiter is never signalled: Drain answers it at grace minus the
	// margin, with ErrClosed, and the request ends.
	if left := m.Drain(200 * time.Millisecond); left != 0 {
		t.Errorf("Drain left %d requests", left)
	}
	if body := testsync.Recv(t, "the cut response", res); !strings.HasPrefix(body, "old: ") || !strings.Contains(body, ErrClosed.Error()) {
		t.Errorf("cut waiter answered %q", body)
	}
	// The core itself is still open for the new generation.
	if _, err := core.Signal(context.Background(), "s", nil); err != nil {
		t.Errorf("core after a mount's drain: %v", err)
	}
}

func TestFrontRetiredMountPassesOn(t *testing.T) {
	t.Parallel()
	core := newTestCore(t, CoreOptions{})
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "next") })
	old := NewMount(ok, core, nil)
	front := NewFront(old)
	front.Swap(NewMount(ok, core, nil))
	<-old.Retire()
	rec := httptest.NewRecorder()
	front.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Body.String() != "next" {
		t.Errorf("got %q", rec.Body.String())
	}
	rec = httptest.NewRecorder()
	NewFront(nil).ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("empty front answered %d", rec.Code)
	}
}

// TestListenerPoolHandOver: a second server on the same address shares the
// socket; once the first detaches and closes, every connection reaches the
// second, none is refused or dropped.
func TestListenerPoolHandOver(t *testing.T) {
	t.Parallel()
	pool := NewListenerPool()
	defer pool.Close()
	v1 := pool.View()
	ln1, err := v1.Listen("127.0.0.1:0", ListenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	addr := ln1.Addr().String()
	serve := func(ln net.Listener, name string) *http.Server {
		s := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) })}
		go s.Serve(ln)
		return s
	}
	s1 := serve(ln1, "one")
	get := func() string {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return err.Error()
		}
		defer c.Close()
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err.Error()
		}
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if got := get(); got != "one" {
		t.Fatalf("first server: %q", got)
	}
	v2 := pool.View()
	ln2, err := v2.Listen(addr, ListenOptions{})
	if err != nil {
		t.Fatalf("second listen on the kept address: %v", err)
	}
	<-v2.Bound()
	s2 := serve(ln2, "two")
	defer s2.Close()
	if !v1.Detach(time.Second) {
		t.Error("Detach: connections still fresh")
	}
	if err := s1.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if got := get(); got != "two" {
			t.Fatalf("request %d after the hand-over: %q", i, got)
		}
	}
	if pruned := pool.Prune(); len(pruned) != 0 {
		t.Errorf("Prune closed %v while a server uses it", pruned)
	}
	s2.Close()
	if pruned := pool.Prune(); len(pruned) != 1 || pruned[0] != addr {
		t.Errorf("Prune after both closed: %v", pruned)
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Error("socket still accepts after Prune")
	}
}

func TestListenerPoolClosed(t *testing.T) {
	t.Parallel()
	pool := NewListenerPool()
	ln, err := pool.Listen("127.0.0.1:0", ListenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pool.Close()
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: %v", err)
	}
	if _, err := pool.Listen("127.0.0.1:0", ListenOptions{}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Listen after Close: %v", err)
	}
}

// TestHTTPServerTakesPoolListener: Serve with WithListeners binds through
// the pool.
func TestHTTPServerTakesPoolListener(t *testing.T) {
	t.Parallel()
	pool := NewListenerPool()
	defer pool.Close()
	view := pool.View()
	srv, err := NewHTTPServer(serverLocal("port", "0"), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- srv.Serve(WithListeners(ctx, view), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	}()
	testsync.Recv(t, "the server to bind through the pool", view.Bound())
	if addrs := pool.Addrs(); len(addrs) != 1 {
		t.Errorf("pool holds %v", addrs)
	}
	cancel()
	if err := testsync.Recv(t, "Serve to return", done); err != nil {
		t.Errorf("Serve: %v", err)
	}
}

// TestMountRequestContext: the context a Mount's handler gets carries the
// Mount's CoreScope and ends with cause ErrClosed at Cut, whether the
// handler waits on Done already or looks only afterwards, and ends when
// the client goes away.
func TestMountRequestContext(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		cut     bool // the end is Cut, else the client going away
		waiting bool // the handler waits on Done before the end
		after   bool // the handler waits on Done only once the end has come
	}{
		{name: "cut/waiting", cut: true, waiting: true},
		{name: "cut/looks after", cut: true},
		{name: "cut/waits after", cut: true, after: true},
		{name: "client gone/waiting", waiting: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			core := newTestCore(t, CoreOptions{})
			entered, ended, cut := make(chan struct{}), make(chan string, 1), make(chan struct{})
			var m *Mount
			m = NewMount(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				ctx := r.Context()
				if CoreFrom(ctx) != Core(m.Scope()) {
					ended <- "the handler's Core is not the Mount's scope"
					return
				}
				close(entered)
				switch {
				case tc.waiting:
					<-ctx.Done()
				case tc.after:
					<-cut
					<-ctx.Done()
				default:
					testsync.WaitFor(t, "the request cut", func() bool { return ctx.Err() != nil })
				}
				ended <- fmt.Sprintf("err %v, cause %v", ctx.Err(), context.Cause(ctx))
			}), core, nil)
			srv := httptest.NewServer(NewFront(m))
			defer srv.Close()
			reqCtx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, err := http.NewRequestWithContext(reqCtx, "GET", srv.URL, nil)
			if err != nil {
				t.Fatal(err)
			}
			go func() {
				if resp, err := http.DefaultClient.Do(req); err == nil {
					resp.Body.Close()
				}
			}()
			select {
			case <-entered:
			case got := <-ended:
				t.Fatal(got)
			}
			want := "err context canceled, cause context canceled"
			if tc.cut {
				m.Cut()
				close(cut)
				want = fmt.Sprintf("err context canceled, cause %v", ErrClosed)
			} else {
				cancel()
			}
			if got := testsync.Recv(t, "the handler's end", ended); got != want {
				t.Errorf("handler saw %s, want %s", got, want)
			}
		})
	}
}

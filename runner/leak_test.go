package runner_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/internal/testsync"
	"github.com/paster-dev/paster/runner"
	"github.com/paster-dev/paster/runner/coretest"
)

// TestNoGoroutineLeak is not parallel: parallel tests have not started
// yet, so the goroutine count is stable around it. It is in package
// runner_test so that it can park waiters with coretest.Park (runner's own
// tests cannot import coretest, which imports runner).
func TestNoGoroutineLeak(t *testing.T) {
	base := runtime.NumGoroutine()
	func() {
		c := runner.NewCore(runner.CoreOptions{})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		res := coretest.Park(t, c, ctx, "s", runner.NoTimeout, 100)
		subCtx, subCancel := context.WithCancel(ctx)
		for i := range 20 {
			sub, err := c.Subscribe(subCtx, fmt.Sprint("t", i%3), runner.FromOldest)
			if err != nil {
				t.Fatal(err)
			}
			go sub.Fetch(ctx)
		}
		scope := runner.NewCoreScope(c)
		go scope.WaitForSignal(ctx, "s", runner.NoTimeout)
		testsync.WaitFor(t, "all parked", func() bool {
			st := c.Stats()
			return st.Waiters == 101 && st.Fetching == 20
		})
		scope.Close()
		subCancel()
		c.Close()
		for range 100 {
			testsync.Recv(t, "waiter", res)
		}

		s := runner.NewSched(hclog.NewNullLogger())
		for i := range 5 {
			s.Add(fmt.Sprint("co", i), func(ctx context.Context) error {
				<-ctx.Done()
				return nil
			})
		}
		s.Add("crash", func(ctx context.Context) error { panic("boom") }, runner.Policy{Backoff: time.Millisecond, MaxRestarts: 3})
		s.Start(ctx)
		if err := s.Stop(time.Minute); err != nil {
			t.Fatal(err)
		}

		// A runner shut down with parked requests: its app parks each on
		// the runner's Core and answers 503 when the Core closes.
		app := http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			_, err := runner.CoreFrom(req.Context()).WaitForSignal(req.Context(), "abc", runner.NoTimeout)
			if errors.Is(err, runner.ErrClosed) {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
		})
		r, err := runner.New(app, entrypoints.NewLocal("host", "127.0.0.1", "port", "0"))
		if err != nil {
			t.Fatal(err)
		}
		own := r.Core.(*runner.LocalCore) // Run keeps it: its context has no Core
		r.Logger = hclog.NewNullLogger()
		r.Sched.Add("co", func(ctx context.Context) error { <-ctx.Done(); return nil })
		rctx, rcancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- r.Run(rctx) }()
		testsync.Recv(t, "bound", r.HTTP.Bound())
		client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 20 * time.Second}
		answers := make(chan int, 5)
		for range 5 {
			go func() {
				resp, err := client.Get("http://" + r.HTTP.Addr().String() + "/wait")
				if err != nil {
					answers <- 0
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				answers <- resp.StatusCode
			}()
		}
		testsync.WaitFor(t, "parked requests", func() bool { return own.Stats().Waiters == 5 })
		rcancel()
		for range 5 {
			if code := testsync.Recv(t, "an answer", answers); code != http.StatusServiceUnavailable {
				t.Errorf("parked request answered %d at shutdown", code)
			}
		}
		if err := testsync.Recv(t, "Run", done); err != nil {
			t.Fatal(err)
		}
		client.CloseIdleConnections()
	}()
	checkGoroutines(t, base)
}

// checkGoroutines waits until no more than base goroutines run, failing
// with every goroutine's stack after testsync.Deadline.
func checkGoroutines(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(testsync.Deadline)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("%d goroutines, %d before:\n%s", runtime.NumGoroutine(), base, buf)
		}
		time.Sleep(time.Millisecond)
	}
}

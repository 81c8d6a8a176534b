package runner

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
)

// waitFor and recv are coretest.WaitFor and coretest.Recv for this
// package's own tests, which cannot import coretest (it imports runner).
//
// waitFor polls cond until it holds, failing the test after a generous
// deadline. It is how tests wait for another goroutine to reach a state (a
// waiter parked, a coroutine restarted) without sleeping for a guessed time.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// recv returns what ch delivers, failing the test if nothing comes within a
// generous deadline (a hang is a failure, not a wait).
func recv[T any](t testing.TB, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(20 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

type waitResult struct {
	val []byte
	err error
}

// park starts n WaitForSignal calls on name and waits until they are all
// parked, as the core's Stats say.
func park(t testing.TB, c *LocalCore, ctx context.Context, name string, timeout time.Duration, n int) <-chan waitResult {
	t.Helper()
	before := c.Stats().Waiters
	out := make(chan waitResult, n)
	for range n {
		go func() {
			v, err := c.WaitForSignal(ctx, name, timeout)
			out <- waitResult{v, err}
		}()
	}
	waitFor(t, fmt.Sprintf("%d waiters parked on %q", n, name), func() bool { return c.Stats().Waiters >= before+n })
	return out
}

func newTestCore(t testing.TB, opts CoreOptions) *LocalCore {
	c := NewCore(opts)
	t.Cleanup(func() { c.Close() })
	return c
}

func TestCoreFrom(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	if HasCore(ctx) {
		t.Fatal("HasCore on an empty context")
	}
	none := CoreFrom(ctx)
	if none == nil {
		t.Fatal("CoreFrom returned nil")
	}
	ops := map[string]error{}
	ops["sleep"] = none.Sleep(ctx, time.Second)
	_, ops["wait"] = none.WaitForSignal(ctx, "a", 0)
	_, ops["signal"] = none.Signal(ctx, "a", nil)
	_, ops["signal at least"] = none.SignalAtLeast(ctx, "a", nil, 1)
	_, ops["publish"] = none.Publish(ctx, "t", nil)
	_, ops["subscribe"] = none.Subscribe(ctx, "t", FromNow)
	for op, err := range ops {
		if !errors.Is(err, ErrNoCore) {
			t.Errorf("%s without a core: got %v, want ErrNoCore", op, err)
		}
	}

	c := newTestCore(t, CoreOptions{})
	ctx = WithCore(ctx, c)
	if !HasCore(ctx) || CoreFrom(ctx) != Core(c) {
		t.Fatal("CoreFrom does not return the core given to WithCore")
	}
}

// TestNoGoroutineLeak is not parallel: parallel tests have not started
// yet, so the goroutine count is stable around it.
func TestNoGoroutineLeak(t *testing.T) {
	base := runtime.NumGoroutine()
	func() {
		c := NewCore(CoreOptions{})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		res := park(t, c, ctx, "s", NoTimeout, 100)
		subCtx, subCancel := context.WithCancel(ctx)
		for i := range 20 {
			sub, err := c.Subscribe(subCtx, fmt.Sprint("t", i%3), FromOldest)
			if err != nil {
				t.Fatal(err)
			}
			go sub.Fetch(ctx)
		}
		scope := NewCoreScope(c)
		go scope.WaitForSignal(ctx, "s", NoTimeout)
		waitFor(t, "all parked", func() bool {
			st := c.Stats()
			return st.Waiters == 101 && st.Fetching == 20
		})
		scope.Close()
		subCancel()
		c.Close()
		for range 100 {
			recv(t, "waiter", res)
		}

		s := NewSched(hclog.NewNullLogger())
		for i := range 5 {
			s.Add(fmt.Sprint("co", i), func(ctx context.Context) error {
				<-ctx.Done()
				return nil
			})
		}
		s.Add("crash", func(ctx context.Context) error { panic("boom") }, Policy{Backoff: time.Millisecond, MaxRestarts: 3})
		s.Start(ctx)
		if err := s.Stop(time.Minute); err != nil {
			t.Fatal(err)
		}

		// A runner shut down with parked requests.
		r, err := New(waitApp(), serverLocal())
		if err != nil {
			t.Fatal(err)
		}
		r.Logger = hclog.NewNullLogger()
		r.Sched.Add("co", func(ctx context.Context) error { <-ctx.Done(); return nil })
		rctx, rcancel := context.WithCancel(ctx)
		done := startRun(t, r, rctx)
		recv(t, "bound", r.HTTP.Bound())
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
		waitFor(t, "parked requests", func() bool { return r.own.Stats().Waiters == 5 })
		rcancel()
		for range 5 {
			if code := recv(t, "an answer", answers); code != http.StatusServiceUnavailable {
				t.Errorf("parked request answered %d at shutdown", code)
			}
		}
		if err := recv(t, "Run", done); err != nil {
			t.Fatal(err)
		}
		client.CloseIdleConnections()
	}()
	checkGoroutines(t, base)
}

func checkGoroutines(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("%d goroutines, %d before:\n%s", runtime.NumGoroutine(), base, buf)
		}
		time.Sleep(time.Millisecond)
	}
}

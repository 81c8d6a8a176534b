package runner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

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

func TestSleep(t *testing.T) {
	t.Parallel()
	c := newTestCore(t, CoreOptions{})
	ctx := context.Background()
	for _, d := range []time.Duration{0, -1, -time.Hour} {
		if err := c.Sleep(ctx, d); err != nil {
			t.Errorf("Sleep(%v) = %v", d, err)
		}
	}
	if err := c.Sleep(ctx, time.Microsecond); err != nil {
		t.Errorf("Sleep(1µs) = %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := c.Sleep(cctx, time.Hour); !errors.Is(err, context.Canceled) {
		t.Errorf("Sleep on a cancelled context = %v, want context.Canceled", err)
	}
	dctx, cancel2 := context.WithTimeout(ctx, time.Millisecond)
	defer cancel2()
	if err := c.Sleep(dctx, time.Hour); !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Sleep past the context's deadline = %v, want ErrTimeout and DeadlineExceeded", err)
	}
}

func TestSignalWokenCount(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, 1, 7, 1000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			t.Parallel()
			c := newTestCore(t, CoreOptions{})
			ctx := context.Background()
			results := park(t, c, ctx, "abc", NoTimeout, n)
			// A waiter on another name is not woken.
			other := park(t, c, ctx, "other", NoTimeout, 1)

			woken, err := c.Signal(ctx, "abc", []byte("hello"))
			if err != nil || woken != n {
				t.Fatalf("Signal = %d, %v; want %d, nil", woken, err, n)
			}
			for range n {
				r := recv(t, "a woken waiter", results)
				if r.err != nil || string(r.val) != "hello" {
					t.Fatalf("waiter got %q, %v; want hello", r.val, r.err)
				}
			}
			if st := c.Stats(); st.Waiters != 1 {
				t.Fatalf("after Signal, %d waiters parked; want 1 (on other)", st.Waiters)
			}
			// The signal is not sticky.
			if woken, _ := c.Signal(ctx, "abc", nil); woken != 0 {
				t.Fatalf("second Signal woke %d, want 0", woken)
			}
			if woken, _ := c.Signal(ctx, "other", nil); woken != 1 {
				t.Fatalf("Signal on other woke %d, want 1", woken)
			}
			recv(t, "the waiter on other", other)
		})
	}
}

func TestSignalAtLeast(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("late waiters", func(t *testing.T) {
		t.Parallel()
		c := newTestCore(t, CoreOptions{})
		early := park(t, c, ctx, "go", NoTimeout, 2)
		type sigResult struct {
			n   int
			err error
		}
		done := make(chan sigResult, 1)
		go func() {
			n, err := c.SignalAtLeast(ctx, "go", []byte("v"), 5)
			done <- sigResult{n, err}
		}()
		waitFor(t, "the signaller pending", func() bool { return c.Stats().PendingSignals == 1 })
		for range 2 {
			if r := recv(t, "an early waiter", early); string(r.val) != "v" {
				t.Fatalf("early waiter got %q, %v", r.val, r.err)
			}
		}
		// Three late waiters take the value without parking.
		for range 3 {
			v, err := c.WaitForSignal(ctx, "go", NoTimeout)
			if err != nil || string(v) != "v" {
				t.Fatalf("late waiter got %q, %v", v, err)
			}
		}
		r := recv(t, "SignalAtLeast", done)
		if r.err != nil || r.n != 5 {
			t.Fatalf("SignalAtLeast = %d, %v; want 5, nil", r.n, r.err)
		}
		if st := c.Stats(); st.PendingSignals != 0 || st.Waiters != 0 {
			t.Fatalf("after completion: %+v", st)
		}
		// Nothing pending any more: the next waiter parks.
		late := park(t, c, ctx, "go", NoTimeout, 1)
		if n, _ := c.Signal(ctx, "go", []byte("w")); n != 1 {
			t.Fatalf("Signal woke %d, want 1", n)
		}
		if r := recv(t, "the parked waiter", late); string(r.val) != "w" {
			t.Fatalf("parked waiter got %q", r.val)
		}
	})

	t.Run("enough waiters at once", func(t *testing.T) {
		t.Parallel()
		c := newTestCore(t, CoreOptions{})
		res := park(t, c, ctx, "go", NoTimeout, 3)
		n, err := c.SignalAtLeast(ctx, "go", nil, 2)
		if n != 3 || err != nil {
			t.Fatalf("SignalAtLeast = %d, %v; want 3, nil", n, err)
		}
		for range 3 {
			recv(t, "waiter", res)
		}
	})

	t.Run("several pending signallers", func(t *testing.T) {
		t.Parallel()
		c := newTestCore(t, CoreOptions{})
		a := make(chan int, 1)
		go func() { n, _ := c.SignalAtLeast(ctx, "x", []byte("A"), 2); a <- n }()
		waitFor(t, "A pending", func() bool { return c.Stats().PendingSignals == 1 })
		b := make(chan int, 1)
		go func() { n, _ := c.SignalAtLeast(ctx, "x", []byte("B"), 1); b <- n }()
		waitFor(t, "B pending", func() bool { return c.Stats().PendingSignals == 2 })
		var got []string
		for range 3 {
			v, err := c.WaitForSignal(ctx, "x", NoTimeout)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, string(v))
		}
		if strings.Join(got, "") != "AAB" {
			t.Fatalf("waiters got %v; want A A B (oldest signaller first)", got)
		}
		if n := recv(t, "A", a); n != 2 {
			t.Fatalf("A delivered to %d, want 2", n)
		}
		if n := recv(t, "B", b); n != 1 {
			t.Fatalf("B delivered to %d, want 1", n)
		}
	})

	for _, tc := range []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		opts CoreOptions
		want []error
	}{
		{"context deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(ctx, 5*time.Millisecond)
		}, CoreOptions{}, []error{ErrTimeout, context.DeadlineExceeded}},
		{"default timeout", func() (context.Context, context.CancelFunc) {
			return context.WithCancel(ctx)
		}, CoreOptions{DefaultTimeout: 5 * time.Millisecond}, []error{ErrTimeout}},
	} {
		t.Run("times out/"+tc.name, func(t *testing.T) {
			t.Parallel()
			c := newTestCore(t, tc.opts)
			res := park(t, c, ctx, "y", NoTimeout, 1)
			sctx, cancel := tc.ctx()
			defer cancel()
			n, err := c.SignalAtLeast(sctx, "y", []byte("z"), 3)
			for _, want := range tc.want {
				if !errors.Is(err, want) {
					t.Errorf("SignalAtLeast error %v is not %v", err, want)
				}
			}
			if n != 1 {
				t.Errorf("SignalAtLeast = %d, want 1 (the one parked waiter)", n)
			}
			recv(t, "the parked waiter", res)
			if st := c.Stats(); st.PendingSignals != 0 {
				t.Errorf("a timed-out signaller is still pending: %+v", st)
			}
		})
	}

	t.Run("cancelled", func(t *testing.T) {
		t.Parallel()
		c := newTestCore(t, CoreOptions{})
		sctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { _, err := c.SignalAtLeast(sctx, "y", nil, 1); done <- err }()
		waitFor(t, "pending", func() bool { return c.Stats().PendingSignals == 1 })
		cancel()
		if err := recv(t, "SignalAtLeast", done); !errors.Is(err, context.Canceled) || errors.Is(err, ErrTimeout) {
			t.Fatalf("cancelled SignalAtLeast = %v; want context.Canceled, not ErrTimeout", err)
		}
	})
}

func TestWaitForSignalTimeouts(t *testing.T) {
	t.Parallel()
	bg := context.Background()
	for _, tc := range []struct {
		name    string
		opts    CoreOptions
		ctx     func() (context.Context, context.CancelFunc)
		timeout time.Duration
		want    []error
		notWant []error
	}{
		{"own timeout", CoreOptions{}, nil, time.Millisecond, []error{ErrTimeout}, []error{context.DeadlineExceeded}},
		{"default timeout", CoreOptions{DefaultTimeout: time.Millisecond}, nil, 0, []error{ErrTimeout}, nil},
		{"context deadline", CoreOptions{}, func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(bg, time.Millisecond)
		}, 0, []error{ErrTimeout, context.DeadlineExceeded}, nil},
		{"own timeout beats default", CoreOptions{DefaultTimeout: time.Hour}, nil, time.Millisecond, []error{ErrTimeout}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := newTestCore(t, tc.opts)
			ctx := bg
			if tc.ctx != nil {
				var cancel context.CancelFunc
				ctx, cancel = tc.ctx()
				defer cancel()
			}
			v, err := c.WaitForSignal(ctx, "never", tc.timeout)
			if v != nil {
				t.Errorf("value %q on timeout", v)
			}
			for _, want := range tc.want {
				if !errors.Is(err, want) {
					t.Errorf("error %v is not %v", err, want)
				}
			}
			for _, nw := range tc.notWant {
				if errors.Is(err, nw) {
					t.Errorf("error %v should not be %v", err, nw)
				}
			}
			if err != nil && !strings.Contains(err.Error(), `"never"`) {
				t.Errorf("error %q does not name the signal", err)
			}
			if st := c.Stats(); st.Waiters != 0 {
				t.Errorf("timed-out waiter still counted: %+v", st)
			}
		})
	}

	t.Run("cancelled", func(t *testing.T) {
		t.Parallel()
		c := newTestCore(t, CoreOptions{DefaultTimeout: time.Hour})
		ctx, cancel := context.WithCancel(bg)
		res := park(t, c, ctx, "n", 0, 1)
		cancel()
		r := recv(t, "the waiter", res)
		if !errors.Is(r.err, context.Canceled) || errors.Is(r.err, ErrTimeout) {
			t.Fatalf("cancelled wait = %v; want context.Canceled and not ErrTimeout", r.err)
		}
	})

	// The default timeout applies only to waits with neither a timeout nor
	// a context deadline. The waits below outlive it many times over and
	// must still get the signal.
	t.Run("default timeout not applied", func(t *testing.T) {
		t.Parallel()
		c := newTestCore(t, CoreOptions{DefaultTimeout: time.Millisecond})
		ctx, cancel := context.WithTimeout(bg, time.Hour)
		defer cancel()
		withDeadline := park(t, c, ctx, "n", 0, 1)
		noTimeout := park(t, c, bg, "n", NoTimeout, 1)
		<-time.After(50 * time.Millisecond) // 50 default timeouts
		if n, err := c.Signal(bg, "n", []byte("ok")); n != 2 || err != nil {
			t.Fatalf("Signal = %d, %v; want 2", n, err)
		}
		for _, ch := range []<-chan waitResult{withDeadline, noTimeout} {
			if r := recv(t, "waiter", ch); r.err != nil {
				t.Fatalf("wait = %v", r.err)
			}
		}
	})
}

// TestSignalCountExact races timeouts against signals: every waiter either
// gets a value or a timeout, and the sum of the counts Signal returned is
// exactly the number of waiters that got a value.
func TestSignalCountExact(t *testing.T) {
	t.Parallel()
	c := newTestCore(t, CoreOptions{})
	ctx := context.Background()
	const waiters = 2000
	var got sync.WaitGroup
	var mu sync.Mutex
	received := 0
	for i := range waiters {
		got.Add(1)
		go func() {
			defer got.Done()
			_, err := c.WaitForSignal(ctx, "race", time.Duration(i%50)*time.Microsecond+time.Microsecond)
			if err == nil {
				mu.Lock()
				received++
				mu.Unlock()
			} else if !errors.Is(err, ErrTimeout) {
				t.Errorf("wait: %v", err)
			}
		}()
	}
	stop := make(chan struct{})
	signalled := make(chan int)
	go func() {
		total := 0
		for {
			select {
			case <-stop:
				signalled <- total
				return
			default:
			}
			n, _ := c.Signal(ctx, "race", []byte("x"))
			total += n
		}
	}()
	got.Wait()
	close(stop)
	total := <-signalled
	if total != received {
		t.Fatalf("Signal counted %d wake-ups but %d waiters received the value", total, received)
	}
}

// TestNoLostWakeup: a Signal sent after a waiter registered always wakes it.
func TestNoLostWakeup(t *testing.T) {
	t.Parallel()
	c := newTestCore(t, CoreOptions{})
	ctx := context.Background()
	for i := range 300 {
		res := park(t, c, ctx, "w", NoTimeout, 1)
		if n, err := c.Signal(ctx, "w", []byte{byte(i)}); n != 1 || err != nil {
			t.Fatalf("round %d: Signal = %d, %v; want 1", i, n, err)
		}
		if r := recv(t, "waiter", res); r.err != nil || r.val[0] != byte(i) {
			t.Fatalf("round %d: waiter got %v, %v", i, r.val, r.err)
		}
	}
}

func TestSignalNoAliasing(t *testing.T) {
	t.Parallel()
	c := newTestCore(t, CoreOptions{})
	ctx := context.Background()
	res := park(t, c, ctx, "v", NoTimeout, 2)
	value := []byte("original")
	if n, _ := c.Signal(ctx, "v", value); n != 2 {
		t.Fatalf("Signal woke %d, want 2", n)
	}
	copy(value, "CHANGED!")
	a := recv(t, "waiter", res).val
	copy(a, "mutated!")
	b := recv(t, "waiter", res).val
	if string(b) != "original" {
		t.Fatalf("second waiter got %q; the value was aliased", b)
	}
}

func TestCloseWakesEverything(t *testing.T) {
	t.Parallel()
	c := NewCore(CoreOptions{DefaultTimeout: time.Hour})
	ctx := context.Background()
	waits := park(t, c, ctx, "s", 0, 10)

	errs := make(chan error, 3)
	go func() { _, err := c.SignalAtLeast(ctx, "p", nil, 1); errs <- err }()
	sub, err := c.Subscribe(ctx, "t", FromNow)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _, err := sub.Fetch(ctx); errs <- err }()
	go func() { errs <- c.Sleep(ctx, time.Hour) }()
	waitFor(t, "everything parked", func() bool {
		st := c.Stats()
		return st.PendingSignals == 1 && st.Fetching == 1
	})

	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if r := recv(t, "waiter", waits); !errors.Is(r.err, ErrClosed) {
			t.Fatalf("parked waiter after Close: %v", r.err)
		}
	}
	for range 3 {
		if err := recv(t, "parked op", errs); !errors.Is(err, ErrClosed) {
			t.Fatalf("parked op after Close: %v", err)
		}
	}
	if st := c.Stats(); st.Waiters != 0 || st.PendingSignals != 0 || st.Fetching != 0 {
		t.Fatalf("after Close: %+v", st)
	}

	// Everything after Close fails with ErrClosed.
	_, e1 := c.WaitForSignal(ctx, "s", NoTimeout)
	_, e2 := c.Signal(ctx, "s", nil)
	_, e3 := c.Publish(ctx, "t", nil)
	_, e4 := c.Subscribe(ctx, "t", FromOldest)
	_, e5 := sub.Fetch(ctx)
	e6 := c.Sleep(ctx, time.Second)
	for i, err := range []error{e1, e2, e3, e4, e5, e6} {
		if !errors.Is(err, ErrClosed) {
			t.Errorf("op %d after Close: %v, want ErrClosed", i+1, err)
		}
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestCoreScope(t *testing.T) {
	t.Parallel()
	c := newTestCore(t, CoreOptions{})
	ctx := context.Background()
	scope := NewCoreScope(c)
	inScope := make(chan waitResult, 1)
	go func() {
		v, err := scope.WaitForSignal(ctx, "s", NoTimeout)
		inScope <- waitResult{v, err}
	}()
	sub, err := scope.Subscribe(ctx, "t", FromNow)
	if err != nil {
		t.Fatal(err)
	}
	fetched := make(chan error, 1)
	go func() { _, err := sub.Fetch(ctx); fetched <- err }()
	outside := park(t, c, ctx, "s", NoTimeout, 1)
	waitFor(t, "both parked", func() bool {
		st := c.Stats()
		return st.Waiters == 2 && st.Fetching == 1
	})

	scope.Close()
	if r := recv(t, "scoped waiter", inScope); !errors.Is(r.err, ErrClosed) {
		t.Fatalf("scoped waiter after scope Close: %v", r.err)
	}
	if err := recv(t, "scoped fetch", fetched); !errors.Is(err, ErrClosed) {
		t.Fatalf("scoped fetch after scope Close: %v", err)
	}
	if _, err := scope.Signal(ctx, "s", nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Signal through a closed scope: %v", err)
	}
	// The core and its other waiters go on.
	if n, err := c.Signal(ctx, "s", []byte("v")); n != 1 || err != nil {
		t.Fatalf("Signal on the core = %d, %v; want 1", n, err)
	}
	if r := recv(t, "outside waiter", outside); r.err != nil {
		t.Fatalf("waiter outside the scope: %v", r.err)
	}
	waitFor(t, "the scoped subscription closed", func() bool { return c.Stats().Subscriptions == 0 })
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

// Package coretest is the behavioural contract of a runner.Core, as tests
// any Core implementation runs: Run(t, newCore) checks signals (counts,
// SignalAtLeast, timeouts, no lost wake-up, no aliasing), closing, scopes and
// publish/subscribe (positions, retention by count, gaps, blocking Fetch)
// against the Cores newCore makes. The in-memory Core and the NATS Core both
// run it, so they keep the same semantics.
package coretest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paster-dev/paster/internal/testsync"
	"github.com/paster-dev/paster/runner"
)

// Core is what the suite needs of a Core: the operations, Stats to see that
// waiters parked (so the tests never sleep for a guessed time), and Close.
// Stats must count Waiters, PendingSignals, Subscriptions and Fetching of
// this Core; the other fields are not read.
type Core = runner.ManagedCore

// NewCore returns a new, open Core configured by opts, closed by the test's
// cleanup. opts.Now is never set by the suite.
type NewCore func(t testing.TB, opts runner.CoreOptions) Core

// Run runs the contract suite, each part as a parallel subtest of t.
func Run(t *testing.T, newCore NewCore) {
	for _, tc := range []struct {
		name string
		test func(*testing.T, NewCore)
	}{
		{"Sleep", testSleep},
		{"SignalWokenCount", testSignalWokenCount},
		{"SignalAtLeast", testSignalAtLeast},
		{"WaitForSignalTimeouts", testWaitForSignalTimeouts},
		{"SignalCountExact", testSignalCountExact},
		{"NoLostWakeup", testNoLostWakeup},
		{"SignalNoAliasing", testSignalNoAliasing},
		{"CloseWakesEverything", testCloseWakesEverything},
		{"CoreScope", testCoreScope},
		{"SubscribePositions", testSubscribePositions},
		{"RetentionByCount", testRetentionByCount},
		{"RetentionByBytes", testRetentionByBytes},
		{"ValueTooLarge", testValueTooLarge},
		{"ValueAtDefaultLimit", testValueAtDefaultLimit},
		{"LongNames", testLongNames},
		{"PubSubNoAliasing", testPubSubNoAliasing},
		{"FetchBlocksAndWakes", testFetchBlocksAndWakes},
		{"FetchEnds", testFetchEnds},
		{"ConcurrentFetchOneSubscription", testConcurrentFetchOneSubscription},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.test(t, newCore) })
	}
}

// WaitResult is what a WaitForSignal started by Park returned.
type WaitResult struct {
	Val []byte
	Err error
}

// Park starts n WaitForSignal calls on name and waits until they are all
// parked, as c's Stats say.
func Park(t testing.TB, c Core, ctx context.Context, name string, timeout time.Duration, n int) <-chan WaitResult {
	t.Helper()
	before := c.Stats().Waiters
	out := make(chan WaitResult, n)
	for range n {
		go func() {
			v, err := c.WaitForSignal(ctx, name, timeout)
			out <- WaitResult{v, err}
		}()
	}
	testsync.WaitFor(t, fmt.Sprintf("%d waiters parked on %q", n, name), func() bool { return c.Stats().Waiters >= before+n })
	return out
}

// PublishN publishes "m<i>" for i in from..to on topic and checks each gets
// sequence number i.
func PublishN(t testing.TB, c runner.Core, topic string, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		seq, err := c.Publish(context.Background(), topic, []byte(fmt.Sprint("m", i)))
		if err != nil || seq != uint64(i) {
			t.Fatalf("Publish m%d = %d, %v; want seq %d", i, seq, err, i)
		}
	}
}

// FetchSeqs fetches once and returns the sequence numbers, checking that
// each message's data matches its number (as PublishN made them).
func FetchSeqs(t testing.TB, sub runner.Subscription) []uint64 {
	t.Helper()
	msgs := fetchOnce(t, sub)
	for _, m := range msgs {
		if string(m.Data) != fmt.Sprint("m", m.Seq) {
			t.Fatalf("message %d carries %q", m.Seq, m.Data)
		}
	}
	return seqsOf(msgs)
}

// fetchAnySeqs fetches once and returns the sequence numbers, whatever the
// messages carry.
func fetchAnySeqs(t testing.TB, sub runner.Subscription) []uint64 {
	t.Helper()
	return seqsOf(fetchOnce(t, sub))
}

func fetchOnce(t testing.TB, sub runner.Subscription) []runner.Message {
	t.Helper()
	msgs, err := sub.Fetch(context.Background())
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	return msgs
}

func seqsOf(msgs []runner.Message) []uint64 {
	var seqs []uint64
	for _, m := range msgs {
		seqs = append(seqs, m.Seq)
	}
	return seqs
}

// SeqRange returns from, from+1, ..., to.
func SeqRange(from, to uint64) []uint64 {
	var s []uint64
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return s
}

func testSleep(t *testing.T, newCore NewCore) {
	t.Parallel()
	c := newCore(t, runner.CoreOptions{})
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
	if err := c.Sleep(dctx, time.Hour); !errors.Is(err, runner.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Sleep past the context's deadline = %v, want runner.ErrTimeout and DeadlineExceeded", err)
	}
}

func testSignalWokenCount(t *testing.T, newCore NewCore) {
	t.Parallel()
	for _, n := range []int{0, 1, 7, 1000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			t.Parallel()
			c := newCore(t, runner.CoreOptions{})
			ctx := context.Background()
			results := Park(t, c, ctx, "abc", runner.NoTimeout, n)
			// A waiter on another name is not woken.
			other := Park(t, c, ctx, "other", runner.NoTimeout, 1)

			woken, err := c.Signal(ctx, "abc", []byte("hello"))
			if err != nil || woken != n {
				t.Fatalf("Signal = %d, %v; want %d, nil", woken, err, n)
			}
			for range n {
				r := testsync.Recv(t, "a woken waiter", results)
				if r.Err != nil || string(r.Val) != "hello" {
					t.Fatalf("waiter got %q, %v; want hello", r.Val, r.Err)
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
			testsync.Recv(t, "the waiter on other", other)
		})
	}
}

func testSignalAtLeast(t *testing.T, newCore NewCore) {
	t.Parallel()
	ctx := context.Background()

	t.Run("late waiters", func(t *testing.T) {
		t.Parallel()
		c := newCore(t, runner.CoreOptions{})
		early := Park(t, c, ctx, "go", runner.NoTimeout, 2)
		type sigResult struct {
			n   int
			Err error
		}
		done := make(chan sigResult, 1)
		go func() {
			n, err := c.SignalAtLeast(ctx, "go", []byte("v"), 5)
			done <- sigResult{n, err}
		}()
		testsync.WaitFor(t, "the signaller pending", func() bool { return c.Stats().PendingSignals == 1 })
		for range 2 {
			if r := testsync.Recv(t, "an early waiter", early); string(r.Val) != "v" {
				t.Fatalf("early waiter got %q, %v", r.Val, r.Err)
			}
		}
		// Three late waiters take the value without parking.
		for range 3 {
			v, err := c.WaitForSignal(ctx, "go", runner.NoTimeout)
			if err != nil || string(v) != "v" {
				t.Fatalf("late waiter got %q, %v", v, err)
			}
		}
		r := testsync.Recv(t, "SignalAtLeast", done)
		if r.Err != nil || r.n != 5 {
			t.Fatalf("SignalAtLeast = %d, %v; want 5, nil", r.n, r.Err)
		}
		if st := c.Stats(); st.PendingSignals != 0 || st.Waiters != 0 {
			t.Fatalf("after completion: %+v", st)
		}
		// Nothing pending any more: the next waiter parks.
		late := Park(t, c, ctx, "go", runner.NoTimeout, 1)
		if n, _ := c.Signal(ctx, "go", []byte("w")); n != 1 {
			t.Fatalf("Signal woke %d, want 1", n)
		}
		if r := testsync.Recv(t, "the parked waiter", late); string(r.Val) != "w" {
			t.Fatalf("parked waiter got %q", r.Val)
		}
	})

	t.Run("enough waiters at once", func(t *testing.T) {
		t.Parallel()
		c := newCore(t, runner.CoreOptions{})
		res := Park(t, c, ctx, "go", runner.NoTimeout, 3)
		n, err := c.SignalAtLeast(ctx, "go", nil, 2)
		if n != 3 || err != nil {
			t.Fatalf("SignalAtLeast = %d, %v; want 3, nil", n, err)
		}
		for range 3 {
			testsync.Recv(t, "waiter", res)
		}
	})

	t.Run("several pending signallers", func(t *testing.T) {
		t.Parallel()
		c := newCore(t, runner.CoreOptions{})
		a := make(chan int, 1)
		go func() { n, _ := c.SignalAtLeast(ctx, "x", []byte("A"), 2); a <- n }()
		testsync.WaitFor(t, "A pending", func() bool { return c.Stats().PendingSignals == 1 })
		b := make(chan int, 1)
		go func() { n, _ := c.SignalAtLeast(ctx, "x", []byte("B"), 1); b <- n }()
		testsync.WaitFor(t, "B pending", func() bool { return c.Stats().PendingSignals == 2 })
		var got []string
		for range 3 {
			v, err := c.WaitForSignal(ctx, "x", runner.NoTimeout)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, string(v))
		}
		if strings.Join(got, "") != "AAB" {
			t.Fatalf("waiters got %v; want A A B (oldest signaller first)", got)
		}
		if n := testsync.Recv(t, "A", a); n != 2 {
			t.Fatalf("A delivered to %d, want 2", n)
		}
		if n := testsync.Recv(t, "B", b); n != 1 {
			t.Fatalf("B delivered to %d, want 1", n)
		}
	})

	for _, tc := range []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		opts runner.CoreOptions
		want []error
	}{
		{"context deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(ctx, 5*time.Millisecond)
		}, runner.CoreOptions{}, []error{runner.ErrTimeout, context.DeadlineExceeded}},
		{"default timeout", func() (context.Context, context.CancelFunc) {
			return context.WithCancel(ctx)
		}, runner.CoreOptions{DefaultTimeout: 5 * time.Millisecond}, []error{runner.ErrTimeout}},
	} {
		t.Run("times out/"+tc.name, func(t *testing.T) {
			t.Parallel()
			c := newCore(t, tc.opts)
			res := Park(t, c, ctx, "y", runner.NoTimeout, 1)
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
			testsync.Recv(t, "the parked waiter", res)
			if st := c.Stats(); st.PendingSignals != 0 {
				t.Errorf("a timed-out signaller is still pending: %+v", st)
			}
		})
	}

	t.Run("cancelled", func(t *testing.T) {
		t.Parallel()
		c := newCore(t, runner.CoreOptions{})
		sctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { _, err := c.SignalAtLeast(sctx, "y", nil, 1); done <- err }()
		testsync.WaitFor(t, "pending", func() bool { return c.Stats().PendingSignals == 1 })
		cancel()
		if err := testsync.Recv(t, "SignalAtLeast", done); !errors.Is(err, context.Canceled) || errors.Is(err, runner.ErrTimeout) {
			t.Fatalf("cancelled SignalAtLeast = %v; want context.Canceled, not runner.ErrTimeout", err)
		}
	})
}

func testWaitForSignalTimeouts(t *testing.T, newCore NewCore) {
	t.Parallel()
	bg := context.Background()
	for _, tc := range []struct {
		name    string
		opts    runner.CoreOptions
		ctx     func() (context.Context, context.CancelFunc)
		timeout time.Duration
		want    []error
		notWant []error
	}{
		{"own timeout", runner.CoreOptions{}, nil, time.Millisecond, []error{runner.ErrTimeout}, []error{context.DeadlineExceeded}},
		{"default timeout", runner.CoreOptions{DefaultTimeout: time.Millisecond}, nil, 0, []error{runner.ErrTimeout}, nil},
		{"context deadline", runner.CoreOptions{}, func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(bg, time.Millisecond)
		}, 0, []error{runner.ErrTimeout, context.DeadlineExceeded}, nil},
		{"own timeout beats default", runner.CoreOptions{DefaultTimeout: time.Hour}, nil, time.Millisecond, []error{runner.ErrTimeout}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := newCore(t, tc.opts)
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
		c := newCore(t, runner.CoreOptions{DefaultTimeout: time.Hour})
		ctx, cancel := context.WithCancel(bg)
		res := Park(t, c, ctx, "n", 0, 1)
		cancel()
		r := testsync.Recv(t, "the waiter", res)
		if !errors.Is(r.Err, context.Canceled) || errors.Is(r.Err, runner.ErrTimeout) {
			t.Fatalf("cancelled wait = %v; want context.Canceled and not runner.ErrTimeout", r.Err)
		}
	})

	// The default timeout applies only to waits with neither a timeout nor
	// a context deadline. The waits below outlive it many times over and
	// must still get the signal.
	t.Run("default timeout not applied", func(t *testing.T) {
		t.Parallel()
		c := newCore(t, runner.CoreOptions{DefaultTimeout: time.Millisecond})
		ctx, cancel := context.WithTimeout(bg, time.Hour)
		defer cancel()
		withDeadline := Park(t, c, ctx, "n", 0, 1)
		noTimeout := Park(t, c, bg, "n", runner.NoTimeout, 1)
		<-time.After(50 * time.Millisecond) // 50 default timeouts
		if n, err := c.Signal(bg, "n", []byte("ok")); n != 2 || err != nil {
			t.Fatalf("Signal = %d, %v; want 2", n, err)
		}
		for _, ch := range []<-chan WaitResult{withDeadline, noTimeout} {
			if r := testsync.Recv(t, "waiter", ch); r.Err != nil {
				t.Fatalf("wait = %v", r.Err)
			}
		}
	})
}

func testSignalCountExact(t *testing.T, newCore NewCore) {
	t.Parallel()
	c := newCore(t, runner.CoreOptions{})
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
			} else if !errors.Is(err, runner.ErrTimeout) {
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

func testNoLostWakeup(t *testing.T, newCore NewCore) {
	t.Parallel()
	c := newCore(t, runner.CoreOptions{})
	ctx := context.Background()
	for i := range 300 {
		res := Park(t, c, ctx, "w", runner.NoTimeout, 1)
		if n, err := c.Signal(ctx, "w", []byte{byte(i)}); n != 1 || err != nil {
			t.Fatalf("round %d: Signal = %d, %v; want 1", i, n, err)
		}
		if r := testsync.Recv(t, "waiter", res); r.Err != nil || r.Val[0] != byte(i) {
			t.Fatalf("round %d: waiter got %v, %v", i, r.Val, r.Err)
		}
	}
}

func testSignalNoAliasing(t *testing.T, newCore NewCore) {
	t.Parallel()
	c := newCore(t, runner.CoreOptions{})
	ctx := context.Background()
	res := Park(t, c, ctx, "v", runner.NoTimeout, 2)
	value := []byte("original")
	if n, _ := c.Signal(ctx, "v", value); n != 2 {
		t.Fatalf("Signal woke %d, want 2", n)
	}
	copy(value, "CHANGED!")
	a := testsync.Recv(t, "waiter", res).Val
	copy(a, "mutated!")
	b := testsync.Recv(t, "waiter", res).Val
	if string(b) != "original" {
		t.Fatalf("second waiter got %q; the value was aliased", b)
	}
}

func testCloseWakesEverything(t *testing.T, newCore NewCore) {
	t.Parallel()
	c := newCore(t, runner.CoreOptions{DefaultTimeout: time.Hour})
	ctx := context.Background()
	waits := Park(t, c, ctx, "s", 0, 10)

	errs := make(chan error, 3)
	go func() { _, err := c.SignalAtLeast(ctx, "p", nil, 1); errs <- err }()
	sub, err := c.Subscribe(ctx, "t", runner.FromNow)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _, err := sub.Fetch(ctx); errs <- err }()
	go func() { errs <- c.Sleep(ctx, time.Hour) }()
	testsync.WaitFor(t, "everything parked", func() bool {
		st := c.Stats()
		return st.PendingSignals == 1 && st.Fetching == 1
	})

	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if r := testsync.Recv(t, "waiter", waits); !errors.Is(r.Err, runner.ErrClosed) {
			t.Fatalf("parked waiter after Close: %v", r.Err)
		}
	}
	for range 3 {
		if err := testsync.Recv(t, "parked op", errs); !errors.Is(err, runner.ErrClosed) {
			t.Fatalf("parked op after Close: %v", err)
		}
	}
	if st := c.Stats(); st.Waiters != 0 || st.PendingSignals != 0 || st.Fetching != 0 {
		t.Fatalf("after Close: %+v", st)
	}

	// Everything after Close fails with runner.ErrClosed.
	_, e1 := c.WaitForSignal(ctx, "s", runner.NoTimeout)
	_, e2 := c.Signal(ctx, "s", nil)
	_, e3 := c.Publish(ctx, "t", nil)
	_, e4 := c.Subscribe(ctx, "t", runner.FromOldest)
	_, e5 := sub.Fetch(ctx)
	e6 := c.Sleep(ctx, time.Second)
	for i, err := range []error{e1, e2, e3, e4, e5, e6} {
		if !errors.Is(err, runner.ErrClosed) {
			t.Errorf("op %d after Close: %v, want runner.ErrClosed", i+1, err)
		}
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func testCoreScope(t *testing.T, newCore NewCore) {
	t.Parallel()
	c := newCore(t, runner.CoreOptions{})
	ctx := context.Background()
	scope := runner.NewCoreScope(c)
	inScope := make(chan WaitResult, 1)
	go func() {
		v, err := scope.WaitForSignal(ctx, "s", runner.NoTimeout)
		inScope <- WaitResult{v, err}
	}()
	sub, err := scope.Subscribe(ctx, "t", runner.FromNow)
	if err != nil {
		t.Fatal(err)
	}
	fetched := make(chan error, 1)
	go func() { _, err := sub.Fetch(ctx); fetched <- err }()
	outside := Park(t, c, ctx, "s", runner.NoTimeout, 1)
	testsync.WaitFor(t, "both parked", func() bool {
		st := c.Stats()
		return st.Waiters == 2 && st.Fetching == 1
	})

	scope.Close()
	if r := testsync.Recv(t, "scoped waiter", inScope); !errors.Is(r.Err, runner.ErrClosed) {
		t.Fatalf("scoped waiter after scope Close: %v", r.Err)
	}
	if err := testsync.Recv(t, "scoped fetch", fetched); !errors.Is(err, runner.ErrClosed) {
		t.Fatalf("scoped fetch after scope Close: %v", err)
	}
	if _, err := scope.Signal(ctx, "s", nil); !errors.Is(err, runner.ErrClosed) {
		t.Fatalf("Signal through a closed scope: %v", err)
	}
	// The core and its other waiters go on.
	if n, err := c.Signal(ctx, "s", []byte("v")); n != 1 || err != nil {
		t.Fatalf("Signal on the core = %d, %v; want 1", n, err)
	}
	if r := testsync.Recv(t, "outside waiter", outside); r.Err != nil {
		t.Fatalf("waiter outside the scope: %v", r.Err)
	}
	testsync.WaitFor(t, "the scoped subscription closed", func() bool { return c.Stats().Subscriptions == 0 })
}

func testSubscribePositions(t *testing.T, newCore NewCore) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		from  runner.Position
		first []uint64 // first Fetch after 5 messages were published and 2 more after subscribing
	}{
		{"oldest", runner.FromOldest, SeqRange(1, 7)},
		{"zero value is oldest", runner.Position{}, SeqRange(1, 7)},
		{"now", runner.FromNow, SeqRange(6, 7)},
		{"seq", runner.FromSeq(3), SeqRange(3, 7)},
		{"seq 0", runner.FromSeq(0), SeqRange(1, 7)},
		{"next seq", runner.FromSeq(6), SeqRange(6, 7)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := newCore(t, runner.CoreOptions{})
			PublishN(t, c, "chat", 1, 5)
			sub, err := c.Subscribe(context.Background(), "chat", tc.from)
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			PublishN(t, c, "chat", 6, 7)
			if got := FetchSeqs(t, sub); !slices.Equal(got, tc.first) {
				t.Fatalf("Fetch = %v, want %v", got, tc.first)
			}
			PublishN(t, c, "chat", 8, 8)
			if got := FetchSeqs(t, sub); !slices.Equal(got, []uint64{8}) {
				t.Fatalf("second Fetch = %v, want [8]", got)
			}
		})
	}

	t.Run("beyond next", func(t *testing.T) {
		t.Parallel()
		c := newCore(t, runner.CoreOptions{})
		PublishN(t, c, "chat", 1, 2)
		_, err := c.Subscribe(context.Background(), "chat", runner.FromSeq(4))
		if !errors.Is(err, runner.ErrBadPosition) {
			t.Fatalf("Subscribe beyond next = %v, want runner.ErrBadPosition", err)
		}
	})
}

func testRetentionByCount(t *testing.T, newCore NewCore) {
	t.Parallel()
	c := newCore(t, runner.CoreOptions{RetainCount: 3})
	ctx := context.Background()
	behind, err := c.Subscribe(ctx, "t", runner.FromOldest) // at 1
	if err != nil {
		t.Fatal(err)
	}
	PublishN(t, c, "t", 1, 2)
	mid, _ := c.Subscribe(ctx, "t", runner.FromSeq(2))
	PublishN(t, c, "t", 3, 5) // retains 3, 4, 5

	late, _ := c.Subscribe(ctx, "t", runner.FromOldest)
	if got := FetchSeqs(t, late); !slices.Equal(got, SeqRange(3, 5)) {
		t.Fatalf("late subscriber from oldest got %v, want 3..5", got)
	}

	for _, tc := range []struct {
		sub  runner.Subscription
		want uint64
	}{{behind, 1}, {mid, 2}} {
		_, err := tc.sub.Fetch(ctx)
		var gap *runner.GapError
		if !errors.Is(err, runner.ErrGap) || !errors.As(err, &gap) {
			t.Fatalf("Fetch behind the window = %v, want a *runner.GapError", err)
		}
		if gap.Want != tc.want || gap.First != 3 || gap.Topic != "t" {
			t.Fatalf("gap = %+v, want Want %d First 3", gap, tc.want)
		}
		// The cursor moved to the oldest retained message.
		if got := FetchSeqs(t, tc.sub); !slices.Equal(got, SeqRange(3, 5)) {
			t.Fatalf("Fetch after the gap = %v, want 3..5", got)
		}
	}
	// Numbers are never reused.
	PublishN(t, c, "t", 6, 6)
	if got := FetchSeqs(t, late); !slices.Equal(got, []uint64{6}) {
		t.Fatalf("Fetch = %v, want [6]", got)
	}
}

// testRetentionByBytes: a topic keeps at most RetainBytes of messages
// (what a Core counts per message beyond its data may differ), dropping the
// oldest first, and a subscriber behind them gets the gap.
func testRetentionByBytes(t *testing.T, newCore NewCore) {
	t.Parallel()
	const size, bound = 1000, 10_000
	c := newCore(t, runner.CoreOptions{RetainBytes: bound})
	ctx := context.Background()
	behind, err := c.Subscribe(ctx, "t", runner.FromOldest)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 20; i++ {
		if _, err := c.Publish(ctx, "t", []byte(strings.Repeat(fmt.Sprint(i%10), size))); err != nil {
			t.Fatal(err)
		}
	}
	late, _ := c.Subscribe(ctx, "t", runner.FromOldest)
	got := fetchAnySeqs(t, late)
	if len(got) == 0 || got[len(got)-1] != 20 || len(got)*size > bound || len(got) < bound/size/2 {
		t.Fatalf("a topic bounded to %d bytes, after 20 messages of %d, retains %v: want the newest, within the bound", bound, size, got)
	}
	if !slices.Equal(got, SeqRange(got[0], 20)) {
		t.Fatalf("retained %v, want a contiguous run ending at 20", got)
	}
	_, err = behind.Fetch(ctx)
	var gap *runner.GapError
	if !errors.As(err, &gap) || gap.Want != 1 || gap.First != got[0] {
		t.Fatalf("Fetch behind the bytes bound = %v, want a gap 1..%d", err, got[0]-1)
	}
}

// testValueTooLarge: Publish, Signal and SignalAtLeast refuse a value over
// MaxValue with an error wrapping ErrTooLarge that names the size, keep
// nothing of it and wake nobody with it; a value of MaxValue bytes passes.
func testValueTooLarge(t *testing.T, newCore NewCore) {
	t.Parallel()
	const limit = 1000
	c := newCore(t, runner.CoreOptions{MaxValue: limit})
	ctx := context.Background()
	ok, big := make([]byte, limit), make([]byte, limit+1)
	if _, err := c.Publish(ctx, "t", ok); err != nil {
		t.Fatalf("Publish of %d bytes (the limit) = %v", limit, err)
	}
	if _, err := c.Signal(ctx, "s", ok); err != nil {
		t.Fatalf("Signal of %d bytes (the limit) = %v", limit, err)
	}
	parked := Park(t, c, ctx, "s", time.Hour, 1)
	for _, tc := range []struct {
		op   string
		call func() error
	}{
		{"Publish", func() error { _, err := c.Publish(ctx, "t", big); return err }},
		{"Signal", func() error { _, err := c.Signal(ctx, "s", big); return err }},
		{"SignalAtLeast", func() error { _, err := c.SignalAtLeast(ctx, "s", big, 2); return err }},
	} {
		err := tc.call()
		if !errors.Is(err, runner.ErrTooLarge) || !strings.Contains(err.Error(), fmt.Sprint(limit+1)) {
			t.Fatalf("%s of %d bytes over a limit of %d = %v, want an error wrapping ErrTooLarge naming the size", tc.op, limit+1, limit, err)
		}
	}
	if st := c.Stats(); st.Waiters != 1 || st.PendingSignals != 0 {
		t.Fatalf("after refused signals: %d waiters, %d pending, want the waiter still parked", st.Waiters, st.PendingSignals)
	}
	if n, err := c.Signal(ctx, "s", []byte("v")); n != 1 || err != nil {
		t.Fatalf("Signal = %d, %v", n, err)
	}
	if r := <-parked; r.Err != nil || string(r.Val) != "v" {
		t.Fatalf("the parked waiter got %q, %v; want the value of the signal that was not refused", r.Val, r.Err)
	}
	sub, _ := c.Subscribe(ctx, "t", runner.FromOldest)
	if got := fetchAnySeqs(t, sub); !slices.Equal(got, []uint64{1}) {
		t.Fatalf("topic holds %v after a refused Publish, want [1]", got)
	}
}

// testValueAtDefaultLimit: with the default options a value of exactly
// DefaultMaxValue bytes goes through Publish and Fetch, Signal and
// WaitForSignal, and SignalAtLeast unchanged, and one byte more is refused
// with ErrTooLarge by each of them: every Core has the same default limit.
func testValueAtDefaultLimit(t *testing.T, newCore NewCore) {
	t.Parallel()
	c := newCore(t, runner.CoreOptions{})
	ctx := context.Background()
	v := make([]byte, runner.DefaultMaxValue)
	for i := range v {
		v[i] = byte(i % 251)
	}
	if _, err := c.Publish(ctx, "t", v); err != nil {
		t.Fatalf("Publish of %d bytes (the default limit) = %v", len(v), err)
	}
	sub, err := c.Subscribe(ctx, "t", runner.FromOldest)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if msgs := fetchOnce(t, sub); len(msgs) != 1 || !bytes.Equal(msgs[0].Data, v) {
		t.Fatalf("Fetch after a Publish of %d bytes returned %d messages, or other data", len(v), len(msgs))
	}
	for _, tc := range []struct {
		op   string
		call func(value []byte) (int, error)
	}{
		{"Signal", func(value []byte) (int, error) { return c.Signal(ctx, "s", value) }},
		{"SignalAtLeast", func(value []byte) (int, error) { return c.SignalAtLeast(ctx, "s", value, 1) }},
	} {
		parked := Park(t, c, ctx, "s", time.Hour, 1)
		if n, err := tc.call(v); n != 1 || err != nil {
			t.Fatalf("%s of %d bytes (the default limit) = %d, %v; want 1, nil", tc.op, len(v), n, err)
		}
		if r := testsync.Recv(t, "the woken waiter", parked); r.Err != nil || !bytes.Equal(r.Val, v) {
			t.Fatalf("the waiter woken by %s of %d bytes got %d bytes, %v", tc.op, len(v), len(r.Val), r.Err)
		}
	}
	over := append(v, 0)
	for _, tc := range []struct {
		op   string
		call func() error
	}{
		{"Publish", func() error { _, err := c.Publish(ctx, "t", over); return err }},
		{"Signal", func() error { _, err := c.Signal(ctx, "s", over); return err }},
		{"SignalAtLeast", func() error { _, err := c.SignalAtLeast(ctx, "s", over, 1); return err }},
	} {
		if err := tc.call(); !errors.Is(err, runner.ErrTooLarge) {
			t.Fatalf("%s of %d bytes (one over the default limit) = %v, want ErrTooLarge", tc.op, len(over), err)
		}
	}
}

// testLongNames: topics and signals whose names are MaxNameSize bytes
// long work as short ones, and two such topics differing only in their
// last byte are two topics.
func testLongNames(t *testing.T, newCore NewCore) {
	t.Parallel()
	c := newCore(t, runner.CoreOptions{})
	ctx := context.Background()
	long := strings.Repeat("n", runner.MaxNameSize-1)
	a, b := long+"a", long+"b"
	PublishN(t, c, a, 1, 1)
	PublishN(t, c, b, 1, 2)
	for _, tc := range []struct {
		topic string
		want  []uint64
	}{{a, SeqRange(1, 1)}, {b, SeqRange(1, 2)}} {
		sub, err := c.Subscribe(ctx, tc.topic, runner.FromOldest)
		if err != nil {
			t.Fatalf("Subscribe to a topic of %d bytes: %v", len(tc.topic), err)
		}
		if got := FetchSeqs(t, sub); !slices.Equal(got, tc.want) {
			t.Fatalf("the topic of %d bytes ending %q holds %v, want %v", len(tc.topic), tc.topic[len(tc.topic)-1:], got, tc.want)
		}
		sub.Close()
	}
	parked := Park(t, c, ctx, a, time.Hour, 1)
	if n, err := c.Signal(ctx, a, []byte("v")); n != 1 || err != nil {
		t.Fatalf("Signal on a name of %d bytes = %d, %v; want 1, nil", len(a), n, err)
	}
	if r := testsync.Recv(t, "the woken waiter", parked); r.Err != nil || string(r.Val) != "v" {
		t.Fatalf("the waiter on a name of %d bytes got %q, %v", len(a), r.Val, r.Err)
	}
}

func testPubSubNoAliasing(t *testing.T, newCore NewCore) {
	t.Parallel()
	c := newCore(t, runner.CoreOptions{})
	ctx := context.Background()
	a, _ := c.Subscribe(ctx, "t", runner.FromOldest)
	b, _ := c.Subscribe(ctx, "t", runner.FromOldest)
	msg := []byte("original")
	if _, err := c.Publish(ctx, "t", msg); err != nil {
		t.Fatal(err)
	}
	copy(msg, "CHANGED!")
	ma, _ := a.Fetch(ctx)
	copy(ma[0].Data, "mutated!")
	ma[0].Seq = 99
	mb, _ := b.Fetch(ctx)
	late, _ := c.Subscribe(ctx, "t", runner.FromOldest)
	ml, _ := late.Fetch(ctx)
	for _, m := range [][]runner.Message{mb, ml} {
		if len(m) != 1 || string(m[0].Data) != "original" || m[0].Seq != 1 {
			t.Fatalf("got %+v; a message was aliased", m)
		}
	}
}

func testFetchBlocksAndWakes(t *testing.T, newCore NewCore) {
	t.Parallel()
	c := newCore(t, runner.CoreOptions{})
	ctx := context.Background()
	const subs = 50
	got := make(chan []runner.Message, subs)
	for range subs {
		sub, err := c.Subscribe(ctx, "t", runner.FromNow)
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			m, err := sub.Fetch(ctx)
			if err != nil {
				t.Error(err)
			}
			got <- m
		}()
	}
	testsync.WaitFor(t, "fetchers parked", func() bool { return c.Stats().Fetching == subs })
	if _, err := c.Publish(ctx, "other", []byte("x")); err != nil {
		t.Fatal(err)
	}
	PublishN(t, c, "t", 1, 1)
	for range subs {
		m := testsync.Recv(t, "a fetch", got)
		if len(m) != 1 || m[0].Seq != 1 {
			t.Fatalf("woken fetch got %+v", m)
		}
	}
}

func testFetchEnds(t *testing.T, newCore NewCore) {
	t.Parallel()
	bg := context.Background()
	for _, tc := range []struct {
		name string
		opts runner.CoreOptions
		// end makes the parked Fetch return.
		end  func(sub runner.Subscription, cancelFetch, cancelSub context.CancelFunc)
		want []error
	}{
		{"fetch context cancelled", runner.CoreOptions{}, func(_ runner.Subscription, cf, _ context.CancelFunc) { cf() }, []error{context.Canceled}},
		{"subscription closed", runner.CoreOptions{}, func(s runner.Subscription, _, _ context.CancelFunc) { s.Close() }, []error{runner.ErrClosed}},
		{"subscribe context cancelled", runner.CoreOptions{}, func(_ runner.Subscription, _, cs context.CancelFunc) { cs() }, []error{runner.ErrClosed}},
		{"default timeout", runner.CoreOptions{DefaultTimeout: time.Millisecond}, func(runner.Subscription, context.CancelFunc, context.CancelFunc) {}, []error{runner.ErrTimeout}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := newCore(t, tc.opts)
			subCtx, cancelSub := context.WithCancel(bg)
			defer cancelSub()
			sub, err := c.Subscribe(subCtx, "t", runner.FromNow)
			if err != nil {
				t.Fatal(err)
			}
			fetchCtx, cancelFetch := context.WithCancel(bg)
			defer cancelFetch()
			done := make(chan error, 1)
			go func() { _, err := sub.Fetch(fetchCtx); done <- err }()
			if tc.opts.DefaultTimeout == 0 {
				testsync.WaitFor(t, "fetch parked", func() bool { return c.Stats().Fetching == 1 })
			}
			tc.end(sub, cancelFetch, cancelSub)
			err = testsync.Recv(t, "Fetch", done)
			for _, want := range tc.want {
				if !errors.Is(err, want) {
					t.Errorf("Fetch = %v, want %v", err, want)
				}
			}
			if err != nil && !strings.Contains(err.Error(), `"t"`) {
				t.Errorf("error %q does not name the topic", err)
			}
		})
	}
}

func testConcurrentFetchOneSubscription(t *testing.T, newCore NewCore) {
	t.Parallel()
	c := newCore(t, runner.CoreOptions{RetainCount: -1})
	ctx := context.Background()
	sub, _ := c.Subscribe(ctx, "t", runner.FromOldest)
	const total = 500
	var mu sync.Mutex
	seen := map[uint64]int{}
	var wg sync.WaitGroup
	fctx, cancel := context.WithCancel(ctx)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				msgs, err := sub.Fetch(fctx)
				if err != nil {
					return
				}
				mu.Lock()
				for _, m := range msgs {
					seen[m.Seq]++
				}
				mu.Unlock()
			}
		}()
	}
	PublishN(t, c, "t", 1, total)
	testsync.WaitFor(t, "all messages fetched", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen) == total
	})
	cancel()
	wg.Wait()
	for seq, n := range seen {
		if n != 1 {
			t.Fatalf("message %d fetched %d times", seq, n)
		}
	}
}

package runner_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"testing"

	"github.com/paster-dev/paster/runner"
	"github.com/paster-dev/paster/runner/coretest"
)

// TestLocalCoreContract runs the Core contract suite against the in-memory
// Core.
func TestLocalCoreContract(t *testing.T) {
	t.Parallel()
	coretest.Run(t, func(t testing.TB, opts runner.CoreOptions) coretest.Core {
		c := runner.NewCore(opts)
		t.Cleanup(func() { c.Close() })
		return c
	})
}

// clock is a clock the test moves by hand.
type clock struct {
	base time.Time
	off  atomic.Int64
}

func newClock(base time.Time) *clock { return &clock{base: base} }

func (c *clock) Now() time.Time { return c.base.Add(time.Duration(c.off.Load())) }

func (c *clock) Advance(d time.Duration) { c.off.Add(int64(d)) }

// TestRetentionByAge is the in-memory Core's own: it moves the Core's clock,
// which a Core on a real message store cannot offer.
func TestRetentionByAge(t *testing.T) {
	t.Parallel()
	clock := newClock(time.Unix(1_000_000, 0))
	c := runner.NewCore(runner.CoreOptions{RetainAge: time.Minute, RetainCount: -1, Now: clock.Now})
	t.Cleanup(func() { c.Close() })
	ctx := context.Background()
	sub, _ := c.Subscribe(ctx, "t", runner.FromOldest)
	coretest.PublishN(t, c, "t", 1, 2)
	clock.Advance(40 * time.Second)
	coretest.PublishN(t, c, "t", 3, 4)

	late, _ := c.Subscribe(ctx, "t", runner.FromOldest)
	if got := coretest.FetchSeqs(t, late); !slices.Equal(got, coretest.SeqRange(1, 4)) {
		t.Fatalf("within the age all is retained: got %v", got)
	}
	clock.Advance(30 * time.Second) // 1, 2 are 70 s old; 3, 4 are 30 s old
	if st := c.Stats(); st.Retained != 4 {
		t.Fatalf("pruning is lazy; retained %d", st.Retained)
	}
	_, err := sub.Fetch(ctx)
	var gap *runner.GapError
	if !errors.As(err, &gap) || gap.Want != 1 || gap.First != 3 {
		t.Fatalf("Fetch after aging = %v, want a gap 1..2", err)
	}
	if got := coretest.FetchSeqs(t, sub); !slices.Equal(got, coretest.SeqRange(3, 4)) {
		t.Fatalf("after the gap: %v", got)
	}
	clock.Advance(time.Hour)
	late2, _ := c.Subscribe(ctx, "t", runner.FromOldest)
	coretest.PublishN(t, c, "t", 5, 5)
	if got := coretest.FetchSeqs(t, late2); !slices.Equal(got, []uint64{5}) {
		t.Fatalf("all aged out, then 5 published: got %v", got)
	}
	msgs, _ := c.Subscribe(ctx, "t", runner.FromSeq(5))
	m, _ := msgs.Fetch(ctx)
	if len(m) != 1 || !m[0].Time.Equal(clock.Now()) {
		t.Fatalf("message time %v, want the core clock's %v", m, clock.Now())
	}
}

// TestWaitForSignalFuncContract runs the Core contract suite against the
// in-memory Core with every WaitForSignal made through WaitForSignalFunc,
// on the Core itself and through a CoreScope over it: a wait without a
// goroutine ends as WaitForSignal's does (signalled, timed out, cancelled,
// closed, pending signals), and its done runs exactly once.
func TestWaitForSignalFuncContract(t *testing.T) {
	t.Parallel()
	for _, scoped := range []bool{false, true} {
		t.Run(fmt.Sprint("scoped=", scoped), func(t *testing.T) {
			t.Parallel()
			coretest.Run(t, func(t testing.TB, opts runner.CoreOptions) coretest.Core {
				c := runner.NewCore(opts)
				t.Cleanup(func() { c.Close() })
				var fw runner.SignalFuncWaiter = c
				if scoped {
					fw = runner.NewCoreScope(c)
				}
				return funcCore{c, fw}
			})
		})
	}
}

// funcCore is a LocalCore whose WaitForSignal goes through fw's
// WaitForSignalFunc.
type funcCore struct {
	*runner.LocalCore
	fw runner.SignalFuncWaiter
}

func (c funcCore) WaitForSignal(ctx context.Context, name string, timeout time.Duration) ([]byte, error) {
	done := make(chan coretest.WaitResult, 1)
	var called atomic.Bool
	c.fw.WaitForSignalFunc(ctx, name, timeout, func(v []byte, err error) {
		if called.Swap(true) {
			panic("WaitForSignalFunc called done twice")
		}
		done <- coretest.WaitResult{Val: bytes.Clone(v), Err: err}
	})
	r := <-done
	return r.Val, r.Err
}

// TestWaitForSignalFuncScopeClose: closing a CoreScope ends the
// WaitForSignalFunc waits made through it with ErrClosed, and only
// those; a wait through it afterwards fails at once.
func TestWaitForSignalFuncScopeClose(t *testing.T) {
	t.Parallel()
	c := runner.NewCore(runner.CoreOptions{})
	t.Cleanup(func() { c.Close() })
	scope := runner.NewCoreScope(c)
	const n = 50
	results := make(chan error, 2*n)
	for range n {
		scope.WaitForSignalFunc(context.Background(), "s", runner.NoTimeout, func(_ []byte, err error) { results <- err })
		c.WaitForSignalFunc(context.Background(), "s", runner.NoTimeout, func(_ []byte, err error) { results <- err })
	}
	if w := c.Stats().Waiters; w != 2*n {
		t.Fatalf("%d waiters, want %d", w, 2*n)
	}
	scope.Close()
	for range n {
		if err := <-results; !errors.Is(err, runner.ErrClosed) {
			t.Fatalf("a wait through the closed scope ended with %v, want ErrClosed", err)
		}
	}
	if w := c.Stats().Waiters; w != n {
		t.Fatalf("%d waiters after the scope closed, want %d", w, n)
	}
	if woken, err := c.Signal(context.Background(), "s", []byte("v")); err != nil || woken != n {
		t.Fatalf("Signal woke %d (%v), want %d", woken, err, n)
	}
	for range n {
		if err := <-results; err != nil {
			t.Fatalf("a wait on the Core: %v", err)
		}
	}
	scope.WaitForSignalFunc(context.Background(), "s", runner.NoTimeout, func(_ []byte, err error) { results <- err })
	if err := <-results; !errors.Is(err, runner.ErrClosed) {
		t.Fatalf("a wait through the scope after Close: %v, want ErrClosed", err)
	}
}

// TestRetainTotalBytes is the in-memory Core's own bound over all topics
// (a Core on a message store keeps topics there, not in memory): many large
// publishes over many topics keep the retained bytes within
// RetainTotalBytes, dropping the oldest message of any topic first; a
// subscriber on a topic emptied so gets the gap, and an emptied topic with
// no subscription is forgotten (its numbers start again at 1).
func TestRetainTotalBytes(t *testing.T) {
	t.Parallel()
	const size, total = 10_000, 100_000
	c := runner.NewCore(runner.CoreOptions{RetainTotalBytes: total})
	t.Cleanup(func() { c.Close() })
	ctx := context.Background()
	watch, err := c.Subscribe(ctx, "t0", runner.FromOldest)
	if err != nil {
		t.Fatal(err)
	}
	value := make([]byte, size)
	var lastSeq uint64
	for i := range 200 {
		seq, err := c.Publish(ctx, fmt.Sprint("t", i%50), value)
		if err != nil {
			t.Fatal(err)
		}
		lastSeq = seq
		if st := c.Stats(); st.RetainedBytes > total || st.RetainedBytes < int64(st.Retained)*size {
			t.Fatalf("after %d publishes of %d bytes: %d messages in %d bytes, want at most %d", i+1, size, st.Retained, st.RetainedBytes, total)
		}
	}
	st := c.Stats()
	if st.Retained < total/size/2 {
		t.Fatalf("retains %d messages of %d bytes under a bound of %d: too few", st.Retained, size, total)
	}
	// Topics that lost their messages to the bound and have no subscriber
	// are forgotten; t0, subscribed, is kept and its subscriber sees the gap.
	if st.Topics > st.Retained+1 {
		t.Fatalf("%d topics kept for %d retained messages", st.Topics, st.Retained)
	}
	_, err = watch.Fetch(ctx)
	var gap *runner.GapError
	if !errors.As(err, &gap) || gap.Want != 1 || gap.First != 5 {
		t.Fatalf("Fetch on t0, all 4 of its messages dropped = %v, want a gap 1..4", err)
	}
	// The newest message survives.
	last, _ := c.Subscribe(ctx, "t49", runner.FromOldest)
	if msgs, err := last.Fetch(ctx); err != nil || len(msgs) != 1 || msgs[0].Seq != lastSeq {
		t.Fatalf("t49 after the flood: %d messages, %v; want its last one, %d", len(msgs), err, lastSeq)
	}
}

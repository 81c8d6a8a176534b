package runner

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func publishN(t testing.TB, c Core, topic string, from, to int) {
	t.Helper()
	for i := from; i <= to; i++ {
		seq, err := c.Publish(context.Background(), topic, []byte(fmt.Sprint("m", i)))
		if err != nil || seq != uint64(i) {
			t.Fatalf("Publish m%d = %d, %v; want seq %d", i, seq, err, i)
		}
	}
}

// fetchSeqs fetches once and returns the sequence numbers, checking that
// each message's data matches its number.
func fetchSeqs(t testing.TB, sub Subscription) []uint64 {
	t.Helper()
	msgs, err := sub.Fetch(context.Background())
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	var seqs []uint64
	for _, m := range msgs {
		if string(m.Data) != fmt.Sprint("m", m.Seq) {
			t.Fatalf("message %d carries %q", m.Seq, m.Data)
		}
		seqs = append(seqs, m.Seq)
	}
	return seqs
}

func seqRange(from, to uint64) []uint64 {
	var s []uint64
	for i := from; i <= to; i++ {
		s = append(s, i)
	}
	return s
}

func TestSubscribePositions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		from  Position
		first []uint64 // first Fetch after 5 messages were published and 2 more after subscribing
	}{
		{"oldest", FromOldest, seqRange(1, 7)},
		{"zero value is oldest", Position{}, seqRange(1, 7)},
		{"now", FromNow, seqRange(6, 7)},
		{"seq", FromSeq(3), seqRange(3, 7)},
		{"seq 0", FromSeq(0), seqRange(1, 7)},
		{"next seq", FromSeq(6), seqRange(6, 7)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := newTestCore(t, CoreOptions{})
			publishN(t, c, "chat", 1, 5)
			sub, err := c.Subscribe(context.Background(), "chat", tc.from)
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close()
			publishN(t, c, "chat", 6, 7)
			if got := fetchSeqs(t, sub); !slices.Equal(got, tc.first) {
				t.Fatalf("Fetch = %v, want %v", got, tc.first)
			}
			publishN(t, c, "chat", 8, 8)
			if got := fetchSeqs(t, sub); !slices.Equal(got, []uint64{8}) {
				t.Fatalf("second Fetch = %v, want [8]", got)
			}
		})
	}

	t.Run("beyond next", func(t *testing.T) {
		t.Parallel()
		c := newTestCore(t, CoreOptions{})
		publishN(t, c, "chat", 1, 2)
		_, err := c.Subscribe(context.Background(), "chat", FromSeq(4))
		if !errors.Is(err, ErrBadPosition) {
			t.Fatalf("Subscribe beyond next = %v, want ErrBadPosition", err)
		}
	})
}

func TestPositionText(t *testing.T) {
	t.Parallel()
	for _, p := range []Position{FromOldest, FromNow, FromSeq(1), FromSeq(1 << 60)} {
		b, err := p.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var q Position
		if err := q.UnmarshalText(b); err != nil || q != p {
			t.Errorf("%v -> %q -> %v, %v", p, b, q, err)
		}
	}
	for _, bad := range []string{"-1", "later", "1.5"} {
		if _, err := ParsePosition(bad); !errors.Is(err, ErrBadPosition) {
			t.Errorf("ParsePosition(%q) = %v, want ErrBadPosition", bad, err)
		}
	}
}

func TestRetentionByCount(t *testing.T) {
	t.Parallel()
	c := newTestCore(t, CoreOptions{RetainCount: 3})
	ctx := context.Background()
	behind, err := c.Subscribe(ctx, "t", FromOldest) // at 1
	if err != nil {
		t.Fatal(err)
	}
	publishN(t, c, "t", 1, 2)
	mid, _ := c.Subscribe(ctx, "t", FromSeq(2))
	publishN(t, c, "t", 3, 5) // retains 3, 4, 5

	if st := c.Stats(); st.Retained != 3 {
		t.Fatalf("retained %d, want 3", st.Retained)
	}
	late, _ := c.Subscribe(ctx, "t", FromOldest)
	if got := fetchSeqs(t, late); !slices.Equal(got, seqRange(3, 5)) {
		t.Fatalf("late subscriber from oldest got %v, want 3..5", got)
	}

	for _, tc := range []struct {
		sub  Subscription
		want uint64
	}{{behind, 1}, {mid, 2}} {
		_, err := tc.sub.Fetch(ctx)
		var gap *GapError
		if !errors.Is(err, ErrGap) || !errors.As(err, &gap) {
			t.Fatalf("Fetch behind the window = %v, want a *GapError", err)
		}
		if gap.Want != tc.want || gap.First != 3 || gap.Topic != "t" {
			t.Fatalf("gap = %+v, want Want %d First 3", gap, tc.want)
		}
		// The cursor moved to the oldest retained message.
		if got := fetchSeqs(t, tc.sub); !slices.Equal(got, seqRange(3, 5)) {
			t.Fatalf("Fetch after the gap = %v, want 3..5", got)
		}
	}
	// Numbers are never reused.
	publishN(t, c, "t", 6, 6)
	if got := fetchSeqs(t, late); !slices.Equal(got, []uint64{6}) {
		t.Fatalf("Fetch = %v, want [6]", got)
	}
}

func TestRetentionByAge(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{now: time.Unix(1_000_000, 0)}
	c := newTestCore(t, CoreOptions{RetainAge: time.Minute, RetainCount: -1, Now: clock.Now})
	ctx := context.Background()
	sub, _ := c.Subscribe(ctx, "t", FromOldest)
	publishN(t, c, "t", 1, 2)
	clock.Advance(40 * time.Second)
	publishN(t, c, "t", 3, 4)

	late, _ := c.Subscribe(ctx, "t", FromOldest)
	if got := fetchSeqs(t, late); !slices.Equal(got, seqRange(1, 4)) {
		t.Fatalf("within the age all is retained: got %v", got)
	}
	clock.Advance(30 * time.Second) // 1, 2 are 70 s old; 3, 4 are 30 s old
	if st := c.Stats(); st.Retained != 4 {
		t.Fatalf("pruning is lazy; retained %d", st.Retained)
	}
	_, err := sub.Fetch(ctx)
	var gap *GapError
	if !errors.As(err, &gap) || gap.Want != 1 || gap.First != 3 {
		t.Fatalf("Fetch after aging = %v, want a gap 1..2", err)
	}
	if got := fetchSeqs(t, sub); !slices.Equal(got, seqRange(3, 4)) {
		t.Fatalf("after the gap: %v", got)
	}
	clock.Advance(time.Hour)
	late2, _ := c.Subscribe(ctx, "t", FromOldest)
	publishN(t, c, "t", 5, 5)
	if got := fetchSeqs(t, late2); !slices.Equal(got, []uint64{5}) {
		t.Fatalf("all aged out, then 5 published: got %v", got)
	}
	msgs, _ := c.Subscribe(ctx, "t", FromSeq(5))
	m, _ := msgs.Fetch(ctx)
	if len(m) != 1 || !m[0].Time.Equal(clock.Now()) {
		t.Fatalf("message time %v, want the core clock's %v", m, clock.Now())
	}
}

func TestPubSubNoAliasing(t *testing.T) {
	t.Parallel()
	c := newTestCore(t, CoreOptions{})
	ctx := context.Background()
	a, _ := c.Subscribe(ctx, "t", FromOldest)
	b, _ := c.Subscribe(ctx, "t", FromOldest)
	msg := []byte("original")
	if _, err := c.Publish(ctx, "t", msg); err != nil {
		t.Fatal(err)
	}
	copy(msg, "CHANGED!")
	ma, _ := a.Fetch(ctx)
	copy(ma[0].Data, "mutated!")
	ma[0].Seq = 99
	mb, _ := b.Fetch(ctx)
	late, _ := c.Subscribe(ctx, "t", FromOldest)
	ml, _ := late.Fetch(ctx)
	for _, m := range [][]Message{mb, ml} {
		if len(m) != 1 || string(m[0].Data) != "original" || m[0].Seq != 1 {
			t.Fatalf("got %+v; a message was aliased", m)
		}
	}
}

func TestFetchBlocksAndWakes(t *testing.T) {
	t.Parallel()
	c := newTestCore(t, CoreOptions{})
	ctx := context.Background()
	const subs = 50
	got := make(chan []Message, subs)
	for range subs {
		sub, err := c.Subscribe(ctx, "t", FromNow)
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
	waitFor(t, "fetchers parked", func() bool { return c.Stats().Fetching == subs })
	if _, err := c.Publish(ctx, "other", []byte("x")); err != nil {
		t.Fatal(err)
	}
	publishN(t, c, "t", 1, 1)
	for range subs {
		m := recv(t, "a fetch", got)
		if len(m) != 1 || m[0].Seq != 1 {
			t.Fatalf("woken fetch got %+v", m)
		}
	}
}

func TestFetchEnds(t *testing.T) {
	t.Parallel()
	bg := context.Background()
	for _, tc := range []struct {
		name string
		opts CoreOptions
		// end makes the parked Fetch return.
		end  func(sub Subscription, cancelFetch, cancelSub context.CancelFunc)
		want []error
	}{
		{"fetch context cancelled", CoreOptions{}, func(_ Subscription, cf, _ context.CancelFunc) { cf() }, []error{context.Canceled}},
		{"subscription closed", CoreOptions{}, func(s Subscription, _, _ context.CancelFunc) { s.Close() }, []error{ErrClosed}},
		{"subscribe context cancelled", CoreOptions{}, func(_ Subscription, _, cs context.CancelFunc) { cs() }, []error{ErrClosed}},
		{"default timeout", CoreOptions{DefaultTimeout: time.Millisecond}, func(Subscription, context.CancelFunc, context.CancelFunc) {}, []error{ErrTimeout}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := newTestCore(t, tc.opts)
			subCtx, cancelSub := context.WithCancel(bg)
			defer cancelSub()
			sub, err := c.Subscribe(subCtx, "t", FromNow)
			if err != nil {
				t.Fatal(err)
			}
			fetchCtx, cancelFetch := context.WithCancel(bg)
			defer cancelFetch()
			done := make(chan error, 1)
			go func() { _, err := sub.Fetch(fetchCtx); done <- err }()
			if tc.opts.DefaultTimeout == 0 {
				waitFor(t, "fetch parked", func() bool { return c.Stats().Fetching == 1 })
			}
			tc.end(sub, cancelFetch, cancelSub)
			err = recv(t, "Fetch", done)
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

// TestConcurrentFetchOneSubscription: concurrent Fetch calls on one
// subscription never get the same message twice, and together get all.
func TestConcurrentFetchOneSubscription(t *testing.T) {
	t.Parallel()
	c := newTestCore(t, CoreOptions{RetainCount: -1})
	ctx := context.Background()
	sub, _ := c.Subscribe(ctx, "t", FromOldest)
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
	publishN(t, c, "t", 1, total)
	waitFor(t, "all messages fetched", func() bool {
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

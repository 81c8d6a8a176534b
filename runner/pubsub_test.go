package runner

import (
	"context"
	"errors"
	"fmt"
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

// TestRetainOrderBounded: the publish-order queue behind RetainTotalBytes
// stays within a small multiple of the retained messages, whether the
// total bound drops messages from its head or topics' own retention leaves
// stale entries in it.
func TestRetainOrderBounded(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opts CoreOptions
	}{
		{"dropped by the total", CoreOptions{RetainTotalBytes: 20 * (100 + MessageOverhead + TopicOverhead)}},
		{"dropped by count", CoreOptions{RetainCount: 10}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c := NewCore(tc.opts)
			defer c.Close()
			value := make([]byte, 100)
			for i := range 20_000 {
				if _, err := c.Publish(context.Background(), fmt.Sprint("t", i%7), value); err != nil {
					t.Fatal(err)
				}
			}
			c.mu.Lock()
			n, retained := len(c.order.q), c.retained
			c.mu.Unlock()
			if n > 2*retained+1024 {
				t.Fatalf("the order queue holds %d entries for %d retained messages", n, retained)
			}
		})
	}
}

package runner

import (
	"errors"
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

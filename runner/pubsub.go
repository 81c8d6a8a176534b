package runner

import (
	"context"
	"fmt"
	"strconv"
	"time"
)

// Message is one message of a topic, as Fetch returns it.
type Message struct {
	Seq  uint64    // the topic's sequence number, from 1, never reused
	Time time.Time // when it was published, by the core's clock
	Data []byte    // the caller's own copy
}

// Subscription is a cursor into a topic, made by Core.Subscribe.
type Subscription interface {
	// Fetch returns the messages after the cursor, oldest first, and moves
	// the cursor past them. With none it blocks until one is published, ctx
	// ends, the core's default timeout passes (when ctx has no deadline;
	// ErrTimeout), or the subscription or its core is closed (ErrClosed).
	//
	// If messages the cursor had not reached were dropped by retention,
	// Fetch returns a *GapError (errors.Is(err, ErrGap)) naming the lost
	// range, and moves the cursor to the oldest retained message, so the
	// next Fetch resumes there. Concurrent Fetch calls on one subscription
	// each get different messages.
	Fetch(ctx context.Context) ([]Message, error)

	// Close ends the subscription; a blocked Fetch returns ErrClosed.
	// Close is idempotent and returns nil.
	Close() error
}

// GapError is the error Fetch returns when a subscriber fell behind the
// topic's retention window: messages Want through First-1 are gone.
type GapError struct {
	Topic string
	Want  uint64 // the sequence number the subscriber expected next
	First uint64 // the oldest sequence number still retained (or the next one to be published)
}

func (e *GapError) Error() string {
	return fmt.Sprintf("runner: fetch from %q: messages %d to %d: %v", e.Topic, e.Want, e.First-1, ErrGap)
}

// Unwrap makes errors.Is(err, ErrGap) true.
func (e *GapError) Unwrap() error { return ErrGap }

// Position is where a subscription starts: FromOldest (the zero value),
// FromNow or FromSeq(n). Its text form, for crossing processes, is
// "oldest", "now" or the decimal sequence number.
type Position struct {
	kind posKind
	seq  uint64
}

type posKind uint8

const (
	posOldest posKind = iota
	posNow
	posSeq
)

var (
	// FromOldest starts at the oldest message the topic retains (cogen's
	// behaviour): a late subscriber sees recent history.
	FromOldest = Position{kind: posOldest}
	// FromNow starts with the next message published.
	FromNow = Position{kind: posNow}
)

// FromSeq starts at sequence number seq (0 is taken as 1): a client that has
// seen message N resumes with FromSeq(N+1). If seq is no longer retained the
// first Fetch reports the gap; if it is beyond the topic's next number,
// Subscribe fails with ErrBadPosition.
func FromSeq(seq uint64) Position { return Position{kind: posSeq, seq: seq} }

// String returns the text form.
func (p Position) String() string {
	switch p.kind {
	case posNow:
		return "now"
	case posSeq:
		return strconv.FormatUint(p.seq, 10)
	}
	return "oldest"
}

// MarshalText returns the text form.
func (p Position) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText parses the text form; anything else is an error wrapping
// ErrBadPosition.
func (p *Position) UnmarshalText(b []byte) error {
	q, err := ParsePosition(string(b))
	if err != nil {
		return err
	}
	*p = q
	return nil
}

// ParsePosition parses "oldest", "now" or a decimal sequence number.
func ParsePosition(s string) (Position, error) {
	switch s {
	case "oldest", "":
		return FromOldest, nil
	case "now":
		return FromNow, nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return Position{}, fmt.Errorf("runner: position %q (want oldest, now or a sequence number): %w", s, ErrBadPosition)
	}
	return FromSeq(n), nil
}

// topic is a retained, contiguous log: msgs[i].Seq == msgs[0].Seq+i.
type topic struct {
	msgs   []Message
	next   uint64        // the number the next Publish gets
	notify chan struct{} // closed by Publish; made by a Fetch that parks
}

// first returns the oldest retained number, or next when none is retained.
func (t *topic) first() uint64 {
	if len(t.msgs) > 0 {
		return t.msgs[0].Seq
	}
	return t.next
}

// prune drops what retention no longer allows.
func (t *topic) prune(now time.Time, count int, age time.Duration) {
	drop := 0
	if count > 0 && len(t.msgs) > count {
		drop = len(t.msgs) - count
	}
	if age > 0 {
		cutoff := now.Add(-age)
		for drop < len(t.msgs) && !t.msgs[drop].Time.After(cutoff) {
			drop++
		}
	}
	if drop == 0 {
		return
	}
	clear(t.msgs[:drop])
	t.msgs = t.msgs[drop:]
	if len(t.msgs) == 0 {
		t.msgs = nil
	}
}

func (c *LocalCore) topicLocked(name string) *topic {
	t := c.topics[name]
	if t == nil {
		t = &topic{next: 1}
		c.topics[name] = t
	}
	return t
}

func (c *LocalCore) pruneLocked(t *topic) {
	t.prune(c.now(), c.opts.RetainCount, c.opts.RetainAge)
}

// Publish appends a copy of msg to topic. See Core.
func (c *LocalCore) Publish(ctx context.Context, topic string, msg []byte) (uint64, error) {
	if err := c.check(ctx); err != nil {
		return 0, fmt.Errorf("runner: publish to %q: %w", topic, err)
	}
	data := clone(msg)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, fmt.Errorf("runner: publish to %q: %w", topic, ErrClosed)
	}
	t := c.topicLocked(topic)
	seq := t.next
	t.next++
	t.msgs = append(t.msgs, Message{Seq: seq, Time: c.now(), Data: data})
	c.pruneLocked(t)
	if t.notify != nil {
		close(t.notify)
		t.notify = nil
	}
	return seq, nil
}

// Subscribe opens a subscription to topic. See Core.
func (c *LocalCore) Subscribe(ctx context.Context, topic string, from Position) (Subscription, error) {
	if err := c.check(ctx); err != nil {
		return nil, fmt.Errorf("runner: subscribe to %q: %w", topic, err)
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, fmt.Errorf("runner: subscribe to %q: %w", topic, ErrClosed)
	}
	t := c.topicLocked(topic)
	c.pruneLocked(t)
	s := &localSub{c: c, name: topic, t: t, done: make(chan struct{})}
	switch from.kind {
	case posOldest:
		s.next = t.first()
	case posNow:
		s.next = t.next
	default:
		s.next = max(from.seq, 1)
		if s.next > t.next {
			c.mu.Unlock()
			return nil, fmt.Errorf("runner: subscribe to %q from %d: the next message will be %d: %w", topic, from.seq, t.next, ErrBadPosition)
		}
	}
	c.stats.Subscriptions++
	c.mu.Unlock()
	s.stop = context.AfterFunc(ctx, s.close)
	return s, nil
}

// localSub is a LocalCore's Subscription. Its fields after stop are guarded
// by the core's mutex.
type localSub struct {
	c    *LocalCore
	name string
	t    *topic
	done chan struct{} // closed by close
	stop func() bool   // stops the AfterFunc on Subscribe's ctx

	next   uint64
	closed bool
}

// Fetch returns the messages after the cursor. See Subscription.
func (s *localSub) Fetch(ctx context.Context) ([]Message, error) {
	c := s.c
	if err := c.check(ctx); err != nil {
		return nil, fmt.Errorf("runner: fetch from %q: %w", s.name, err)
	}
	var dl deadline
	defer func() { dl.stop() }()
	for {
		c.mu.Lock()
		if s.closed || c.closed {
			c.mu.Unlock()
			return nil, fmt.Errorf("runner: fetch from %q: %w", s.name, ErrClosed)
		}
		t := s.t
		c.pruneLocked(t)
		first := t.first()
		if s.next < first {
			gap := &GapError{Topic: s.name, Want: s.next, First: first}
			s.next = first
			c.mu.Unlock()
			return nil, gap
		}
		if s.next < t.next {
			out := make([]Message, t.next-s.next)
			copy(out, t.msgs[s.next-first:])
			s.next = t.next
			c.mu.Unlock()
			for i := range out {
				out[i].Data = clone(out[i].Data)
			}
			return out, nil
		}
		if t.notify == nil {
			t.notify = make(chan struct{})
		}
		notify := t.notify
		c.stats.Fetching++
		c.mu.Unlock()

		if dl.t == nil {
			dl = newDeadline(c.timeoutFor(ctx, 0))
		}
		var err error
		select {
		case <-notify:
		case <-ctx.Done():
			err = ctxErr(ctx)
		case <-c.done:
			err = ErrClosed
		case <-s.done:
			err = ErrClosed
		case <-dl.C:
			err = dl.err()
		}
		c.mu.Lock()
		c.stats.Fetching--
		c.mu.Unlock()
		if err != nil {
			return nil, fmt.Errorf("runner: fetch from %q: %w", s.name, err)
		}
	}
}

// Close ends the subscription. See Subscription.
func (s *localSub) Close() error {
	s.close()
	s.stop()
	return nil
}

func (s *localSub) close() {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	s.c.stats.Subscriptions--
	close(s.done)
}

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
	name   string
	msgs   []Message
	next   uint64        // the number the next Publish gets
	notify chan struct{} // closed by Publish; made by a Fetch that parks
	bytes  int64         // msgs' sizes (msgSize)
	subs   int           // open subscriptions
}

// msgSize is what a retained message counts towards RetainBytes and
// RetainTotalBytes.
func msgSize(m Message) int64 { return int64(len(m.Data)) + MessageOverhead }

// topicSize is what a topic itself counts towards RetainTotalBytes.
func topicSize(name string) int64 { return int64(len(name)) + TopicOverhead }

// first returns the oldest retained number, or next when none is retained.
func (t *topic) first() uint64 {
	if len(t.msgs) > 0 {
		return t.msgs[0].Seq
	}
	return t.next
}

// dropLocked drops t's oldest n messages.
func (c *LocalCore) dropLocked(t *topic, n int) {
	var freed int64
	for _, m := range t.msgs[:n] {
		freed += msgSize(m)
	}
	clear(t.msgs[:n])
	t.msgs = t.msgs[n:]
	if len(t.msgs) == 0 {
		t.msgs = nil
	}
	t.bytes -= freed
	c.total -= freed
	c.retained -= n
}

// retainOrder lists retained messages in publish order, oldest from head:
// evictLocked drops from there. Entries of messages already dropped by a
// topic's own retention stay until they reach the head or compactLocked
// removes them.
type retainOrder struct {
	q    []retainEntry
	head int
}

type retainEntry struct {
	t   *topic
	seq uint64
}

func (o *retainOrder) push(e retainEntry) { o.q = append(o.q, e) }

func (o *retainOrder) len() int { return len(o.q) - o.head }

func (o *retainOrder) pop() retainEntry {
	e := o.q[o.head]
	o.q[o.head] = retainEntry{}
	o.head++
	if o.head >= 64 && o.head >= len(o.q)/2 {
		// Move the live entries to the front, so that appends do not
		// grow the array under a dead prefix.
		n := copy(o.q, o.q[o.head:])
		clear(o.q[n:])
		o.q, o.head = o.q[:n], 0
	}
	return e
}

func (c *LocalCore) topicLocked(name string) *topic {
	t := c.topics[name]
	if t == nil {
		t = &topic{name: name, next: 1}
		c.topics[name] = t
		c.total += topicSize(name)
	}
	return t
}

// forgetLocked forgets t when it holds nothing: no message and no
// subscription. Its numbers then start again at 1.
func (c *LocalCore) forgetLocked(t *topic) {
	if len(t.msgs) > 0 || t.subs > 0 || c.topics[t.name] != t {
		return
	}
	delete(c.topics, t.name)
	c.total -= topicSize(t.name)
}

// pruneLocked drops what t's own retention (count, age, bytes) no longer
// allows, oldest first.
func (c *LocalCore) pruneLocked(t *topic) {
	drop := 0
	if n := c.opts.RetainCount; n > 0 && len(t.msgs) > n {
		drop = len(t.msgs) - n
	}
	if age := c.opts.RetainAge; age > 0 {
		cutoff := c.now().Add(-age)
		for drop < len(t.msgs) && !t.msgs[drop].Time.After(cutoff) {
			drop++
		}
	}
	if limit := c.opts.RetainBytes; limit > 0 {
		bytes := t.bytes
		for i := range drop {
			bytes -= msgSize(t.msgs[i])
		}
		for drop < len(t.msgs) && bytes > limit {
			bytes -= msgSize(t.msgs[drop])
			drop++
		}
	}
	if drop > 0 {
		c.dropLocked(t, drop)
	}
}

// evictLocked drops the oldest messages of all topics until the total is
// within RetainTotalBytes, forgetting the topics it leaves holding
// nothing, and keeps order's stale entries from outgrowing the retained
// messages.
func (c *LocalCore) evictLocked() {
	limit := c.opts.RetainTotalBytes
	for limit > 0 && c.total > limit && c.order.len() > 0 {
		e := c.order.pop()
		if t := e.t; c.topics[t.name] == t && len(t.msgs) > 0 && t.msgs[0].Seq == e.seq {
			c.dropLocked(t, 1)
		}
		c.forgetLocked(e.t)
	}
	if n := c.order.len(); n > 1024 && n > 2*c.retained {
		c.compactLocked()
	}
}

// compactLocked removes order's entries of messages no longer retained,
// forgetting their topics when they hold nothing.
func (c *LocalCore) compactLocked() {
	live := make([]retainEntry, 0, c.order.len()/2)
	for _, e := range c.order.q[c.order.head:] {
		t := e.t
		if c.topics[t.name] == t && len(t.msgs) > 0 && e.seq >= t.msgs[0].Seq {
			live = append(live, e)
			continue
		}
		c.forgetLocked(t)
	}
	c.order = retainOrder{q: live}
}

// Publish appends a copy of msg to topic. See Core.
func (c *LocalCore) Publish(ctx context.Context, topic string, msg []byte) (uint64, error) {
	if err := c.opts.CheckSize("runner: publish to", topic, msg); err != nil {
		return 0, err
	}
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
	m := Message{Seq: seq, Time: c.now(), Data: data}
	t.msgs = append(t.msgs, m)
	t.bytes += msgSize(m)
	c.total += msgSize(m)
	c.retained++
	c.order.push(retainEntry{t: t, seq: seq})
	c.pruneLocked(t)
	if t.notify != nil {
		close(t.notify)
		t.notify = nil
	}
	c.evictLocked()
	return seq, nil
}

// Subscribe opens a subscription to topic. See Core.
func (c *LocalCore) Subscribe(ctx context.Context, topic string, from Position) (Subscription, error) {
	if err := c.opts.CheckSize("runner: subscribe to", topic, nil); err != nil {
		return nil, err
	}
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
			c.forgetLocked(t)
			c.mu.Unlock()
			return nil, fmt.Errorf("runner: subscribe to %q from %d: the next message will be %d: %w", topic, from.seq, t.next, ErrBadPosition)
		}
	}
	t.subs++
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
	s.t.subs--
	s.c.forgetLocked(s.t)
	close(s.done)
}

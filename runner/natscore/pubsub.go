package natscore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/paster-dev/paster/runner"
)

// opTimeout bounds one JetStream request, so that an operation started just
// before the connection dropped ends with ErrUnavailable instead of hanging.
const opTimeout = 5 * time.Second

// streamCacheSize is how many topics' stream handles a node keeps, the
// most recently used: an app can use any number of topics (names its
// clients choose), and a handle is a few KiB.
const streamCacheSize = 1024

// topicNotify wakes this node's parked fetches on a topic. It is fed by an
// ordered JetStream consumer (one per topic per node, not per subscriber),
// which delivers only messages the stream has stored, so a woken fetch always
// finds the new message. It lives while a subscription on the topic is open
// on this node (watch, unwatch), so that the node holds consumers only for
// the topics it reads, not for every topic it ever used.
type topicNotify struct {
	start sync.Mutex // held by wakeChan, so that one Fetch starts the consumer

	// Guarded by Core.mu:
	refs int                      // open subscriptions on the topic
	cc   jetstream.ConsumeContext // nil until a Fetch needs it
	ch   chan struct{}            // closed at the next message, then replaced
}

// stream returns topic's stream, creating it on first use with the
// retention of Options.Core. The node keeps the handles of the
// streamCacheSize topics used last; another is looked up (and its
// configuration applied) again. Streams are never deleted: they live on
// the NATS server, within its limits (JetStream's max_streams,
// max_file_store, and each topic's retention).
func (c *Core) stream(ctx context.Context, topic string) (jetstream.Stream, error) {
	if s, ok := c.streams.Get(topic); ok {
		return s, nil
	}
	cfg := jetstream.StreamConfig{
		Name:     c.streamName(topic),
		Subjects: []string{c.topicSubject(topic)},
		Storage:  jetstream.FileStorage,
		Replicas: c.opts.Replicas,
		Discard:  jetstream.DiscardOld,
		MaxMsgs:  -1,
	}
	if n := c.opts.Core.RetainCount; n > 0 {
		cfg.MaxMsgs = int64(n)
	}
	if a := c.opts.Core.RetainAge; a > 0 {
		cfg.MaxAge = a
	}
	if b := c.opts.Core.RetainBytes; b > 0 {
		cfg.MaxBytes = b
	}
	octx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	s, err := c.js.CreateOrUpdateStream(octx, cfg)
	if err != nil {
		return nil, err
	}
	c.streams.Add(topic, s)
	return s, nil
}

// watch registers an open subscription on topic and returns the topic's
// notifier, which lives until the last of them is unwatched.
func (c *Core) watch(topic string) *topicNotify {
	c.mu.Lock()
	defer c.mu.Unlock()
	tn := c.notify[topic]
	if tn == nil {
		tn = &topicNotify{ch: make(chan struct{})}
		c.notify[topic] = tn
	}
	tn.refs++
	return tn
}

// unwatch ends a subscription's registration on topic; the last one
// stops the topic's consumer and forgets the topic.
func (c *Core) unwatch(topic string, tn *topicNotify) {
	c.mu.Lock()
	tn.refs--
	var cc jetstream.ConsumeContext
	if tn.refs == 0 {
		delete(c.notify, topic)
		cc, tn.cc = tn.cc, nil
	}
	c.mu.Unlock()
	if cc != nil {
		cc.Stop()
	}
}

// wakeChan returns the channel closed at topic's next stored message,
// starting the topic's consumer on first use. It fails with ErrClosed when
// the Core closed or no subscription on the topic is open any more.
func (c *Core) wakeChan(ctx context.Context, topic string, tn *topicNotify) (<-chan struct{}, error) {
	tn.start.Lock()
	defer tn.start.Unlock()
	c.mu.Lock()
	switch {
	case tn.cc != nil:
		defer c.mu.Unlock()
		return tn.ch, nil
	case tn.refs == 0 || c.closed:
		c.mu.Unlock()
		return nil, runner.ErrClosed
	}
	c.mu.Unlock()
	octx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	cons, err := c.js.OrderedConsumer(octx, c.streamName(topic), jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverNewPolicy,
		HeadersOnly:   true,
	})
	if err != nil {
		return nil, err
	}
	cc, err := cons.Consume(func(jetstream.Msg) {
		c.mu.Lock()
		close(tn.ch)
		tn.ch = make(chan struct{})
		c.mu.Unlock()
	})
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if tn.refs == 0 || c.closed {
		c.mu.Unlock()
		cc.Stop()
		return nil, runner.ErrClosed
	}
	tn.cc = cc
	defer c.mu.Unlock()
	return tn.ch, nil
}

// bounds returns the oldest retained sequence number (next when none) and
// the next one to be published.
func bounds(st jetstream.StreamState) (first, next uint64) {
	next = st.LastSeq + 1
	first = st.FirstSeq
	if st.Msgs == 0 || first == 0 {
		first = next
	}
	return first, next
}

// Publish appends msg to topic's stream and returns its sequence number once
// JetStream has stored it. See runner.Core.
func (c *Core) Publish(ctx context.Context, topic string, msg []byte) (uint64, error) {
	if err := c.opts.Core.CheckSize("natscore: publish to", topic, msg); err != nil {
		return 0, err
	}
	if err := c.check(ctx); err != nil {
		return 0, fmt.Errorf("natscore: publish to %q: %w", topic, err)
	}
	if err := c.unavailable(); err != nil {
		return 0, fmt.Errorf("natscore: publish to %q: %w", topic, err)
	}
	if _, err := c.stream(ctx, topic); err != nil {
		return 0, c.opError(ctx, err, "publish to %q", topic)
	}
	octx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	ack, err := c.js.PublishMsg(octx, &nats.Msg{Subject: c.topicSubject(topic), Data: msg},
		jetstream.WithExpectStream(c.streamName(topic)))
	if err != nil {
		return 0, c.opError(ctx, err, "publish to %q", topic)
	}
	return ack.Sequence, nil
}

// opError is the error of a NATS request made for ctx: ctx's own error when
// ctx ended, ErrClosed when the core closed, else err (ErrUnavailable when
// it says the connection is lost).
func (c *Core) opError(ctx context.Context, err error, format string, args ...any) error {
	if cerr := c.check(ctx); cerr != nil {
		return fmt.Errorf("natscore: %s: %w", fmt.Sprintf(format, args...), cerr)
	}
	return c.errorf(err, format, args...)
}

// Subscribe opens a cursor into topic's stream. See runner.Core.
func (c *Core) Subscribe(ctx context.Context, topic string, from runner.Position) (runner.Subscription, error) {
	if err := c.opts.Core.CheckSize("natscore: subscribe to", topic, nil); err != nil {
		return nil, err
	}
	if err := c.check(ctx); err != nil {
		return nil, fmt.Errorf("natscore: subscribe to %q: %w", topic, err)
	}
	if err := c.unavailable(); err != nil {
		return nil, fmt.Errorf("natscore: subscribe to %q: %w", topic, err)
	}
	st, err := c.stream(ctx, topic)
	if err != nil {
		return nil, c.opError(ctx, err, "subscribe to %q", topic)
	}
	octx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	info, err := st.Info(octx)
	if err != nil {
		return nil, c.opError(ctx, err, "subscribe to %q", topic)
	}
	first, next := bounds(info.State)
	s := &natsSub{c: c, topic: topic, st: st, done: make(chan struct{}), turn: make(chan struct{}, 1)}
	switch pos, _ := from.MarshalText(); string(pos) {
	case "oldest":
		s.next = first
	case "now":
		s.next = next
	default:
		n, _ := strconv.ParseUint(string(pos), 10, 64)
		s.next = max(n, 1)
		if s.next > next {
			return nil, fmt.Errorf("natscore: subscribe to %q from %d: the next message will be %d: %w", topic, n, next, runner.ErrBadPosition)
		}
	}
	c.subscriptions.Add(1)
	s.tn = c.watch(topic)
	s.stop = context.AfterFunc(ctx, s.close)
	return s, nil
}

// natsSub is a Core's Subscription: a cursor into a stream, read with direct
// gets. Concurrent Fetch calls take turns, so each gets different messages.
type natsSub struct {
	c     *Core
	topic string
	st    jetstream.Stream
	tn    *topicNotify
	done  chan struct{} // closed by close
	turn  chan struct{} // a token held by the Fetch reading
	stop  func() bool
	once  sync.Once

	next uint64 // guarded by turn
}

// Fetch returns the messages after the cursor. See runner.Subscription.
// With NATS down it fails with runner.ErrUnavailable.
func (s *natsSub) Fetch(ctx context.Context) ([]runner.Message, error) {
	c := s.c
	if err := c.check(ctx); err != nil {
		return nil, fmt.Errorf("natscore: fetch from %q: %w", s.topic, err)
	}
	if _, ok := ctx.Deadline(); !ok && c.opts.Core.DefaultTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.opts.Core.DefaultTimeout)
		defer cancel()
	}
	fail := func(err error) ([]runner.Message, error) {
		return nil, fmt.Errorf("natscore: fetch from %q: %w", s.topic, err)
	}
	select {
	case s.turn <- struct{}{}:
	case <-ctx.Done():
		return fail(runner.ContextError(ctx))
	case <-s.done:
		return fail(runner.ErrClosed)
	case <-c.done:
		return fail(runner.ErrClosed)
	}
	defer func() { <-s.turn }()
	var retry time.Duration
	for {
		select {
		case <-s.done:
			return fail(runner.ErrClosed)
		default:
		}
		if err := c.check(ctx); err != nil {
			return fail(err)
		}
		if err := c.unavailable(); err != nil {
			return fail(err)
		}
		wake, err := c.wakeChan(ctx, s.topic, s.tn)
		if err != nil {
			return nil, c.opError(ctx, err, "fetch from %q", s.topic)
		}
		msgs, err := s.read(ctx)
		if electing(err) {
			// The stream has no leader for a moment (a NATS server of the
			// cluster went away): a parked Fetch waits it out, as it
			// waits for messages, until its context ends.
			if werr := s.pause(ctx, &retry); werr != nil {
				return fail(werr)
			}
			continue
		}
		retry = 0
		if err != nil || len(msgs) > 0 {
			return msgs, err
		}
		c.fetching.Add(1)
		select {
		case <-wake:
		case <-ctx.Done():
			err = runner.ContextError(ctx)
		case <-c.done:
			err = runner.ErrClosed
		case <-s.done:
			err = runner.ErrClosed
		}
		c.fetching.Add(-1)
		if err != nil {
			return fail(err)
		}
	}
}

// electing reports whether err is JetStream's "temporarily unavailable"
// (503): the stream is choosing a leader.
func electing(err error) bool {
	var ae *jetstream.APIError
	return errors.As(err, &ae) && ae.Code == 503
}

// pause waits *retry (25ms doubling to 1s) before a Fetch asks again, or
// returns why it should not.
func (s *natsSub) pause(ctx context.Context, retry *time.Duration) error {
	*retry = min(max(2**retry, 25*time.Millisecond), time.Second)
	t := time.NewTimer(*retry)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return runner.ContextError(ctx)
	case <-s.c.done:
		return runner.ErrClosed
	case <-s.done:
		return runner.ErrClosed
	}
}

// read returns the messages from the cursor to the end of the stream (none
// when there are none), or the gap when the cursor fell out of retention.
func (s *natsSub) read(ctx context.Context) ([]runner.Message, error) {
	c := s.c
	octx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	info, err := s.st.Info(octx)
	if err != nil {
		return nil, c.opError(ctx, err, "fetch from %q", s.topic)
	}
	first, next := bounds(info.State)
	if s.next < first {
		gap := &runner.GapError{Topic: s.topic, Want: s.next, First: first}
		s.next = first
		return nil, gap
	}
	var out []runner.Message
	for seq := s.next; seq < next; seq++ {
		m, err := s.st.GetMsg(octx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			// Dropped by retention while we read: report the gap
			// next time round, keeping what we have.
			if len(out) > 0 {
				break
			}
			return s.read(ctx)
		}
		if err != nil {
			return nil, c.opError(ctx, err, "fetch from %q", s.topic)
		}
		out = append(out, runner.Message{Seq: m.Sequence, Time: m.Time, Data: m.Data})
	}
	if len(out) > 0 {
		s.next = out[len(out)-1].Seq + 1
	}
	return out, nil
}

// Close ends the subscription. See runner.Subscription.
func (s *natsSub) Close() error {
	s.close()
	s.stop()
	return nil
}

func (s *natsSub) close() {
	s.once.Do(func() {
		close(s.done)
		s.c.subscriptions.Add(-1)
		s.c.unwatch(s.topic, s.tn)
	})
}

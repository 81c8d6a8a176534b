package runner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Errors that callers of a Core test with errors.Is. Every error a Core
// returns wraps one of these or a context error, and says which operation and
// which name or topic it was about.
var (
	// ErrTimeout: a wait reached its timeout (its own, the core's default, or
	// the deadline of its context; in the last case the error also wraps
	// context.DeadlineExceeded). cogen raised OperationTimeout here.
	ErrTimeout = errors.New("timed out")

	// ErrClosed: the Core (or the CoreScope, or the Subscription) was closed,
	// before or while the operation waited. Parked waits return it at once
	// when their core closes, so a server shutting down can answer them.
	ErrClosed = errors.New("closed")

	// ErrGap: a subscriber fell behind the topic's retention window and
	// messages it had not fetched were dropped. The error is a *GapError
	// saying which sequence numbers were lost.
	ErrGap = errors.New("messages dropped before they were fetched")

	// ErrNoCore: the context carries no Core (see CoreFrom).
	ErrNoCore = errors.New("no core in context")

	// ErrBadPosition: Subscribe was given a position after the topic's next
	// sequence number (often a client that saw a topic before its server
	// restarted).
	ErrBadPosition = errors.New("bad subscription position")

	// ErrUnavailable: a Core spread over several machines lost the
	// connection that joins them; operations that need the other machines
	// fail at once with it instead of hanging. Waits parked on this machine
	// stay parked and are still woken by Signals sent here.
	ErrUnavailable = errors.New("core unavailable")

	// ErrTooLarge: a value given to Publish, Signal or SignalAtLeast is
	// larger than the Core's MaxValue (core_max_value), or a signal or
	// topic name is longer than MaxNameSize. Nothing of the call was kept
	// and nobody was woken.
	ErrTooLarge = errors.New("too large")

	// ErrNodesMissing: a Signal over several machines did not hear from
	// every live machine in time; the count it returned is what answered.
	ErrNodesMissing = errors.New("nodes did not answer")
)

// NoTimeout, given as a timeout, means "no timeout, not even the core's
// default": the wait ends only with its context or its core. This is
// cogen's timeout=-1; any negative duration means the same.
const NoTimeout time.Duration = -1

// Core is the set of asynchronous operations a request handler or a
// coroutine can wait on, shared by everything the runner serves: sleeping,
// named signals and publish/subscribe topics. Handlers and coroutines get it
// with CoreFrom(ctx). Names, values and messages are strings and bytes
// because the same interface is served to plugin processes.
//
// Every blocking operation ends when its ctx ends (returning an error that
// wraps ctx.Err(), and ErrTimeout too when the deadline passed) or when the
// core is closed (ErrClosed). Values are copied in both directions: a caller
// may change a slice it passed or got back without affecting anyone else.
type Core interface {
	// Sleep waits for d. It returns nil at once when d <= 0.
	Sleep(ctx context.Context, d time.Duration) error

	// WaitForSignal parks until a Signal or SignalAtLeast on name, and
	// returns the value it carried. timeout > 0 bounds the wait and ends it
	// with an error wrapping ErrTimeout; timeout == 0 uses the core's default
	// timeout when ctx has no deadline; timeout < 0 (NoTimeout) means no
	// timeout. A waiter that registered before a Signal always receives it.
	WaitForSignal(ctx context.Context, name string, timeout time.Duration) ([]byte, error)

	// Signal wakes every waiter parked on name with value and returns how
	// many it woke. Signals are not sticky: with no waiter the signal is
	// lost and Signal returns 0. It fails only when ctx is done, the core
	// is closed, or value is over the Core's MaxValue (ErrTooLarge, and
	// nobody is woken).
	Signal(ctx context.Context, name string, value []byte) (woken int, err error)

	// SignalAtLeast wakes every waiter parked on name and, if fewer than min
	// were parked, stays pending: waiters arriving on name while it is
	// pending receive value at once without parking, until min waiters in
	// all received it. It returns how many received value. The wait is
	// bounded by ctx, or by the core's default timeout when ctx has no
	// deadline; on timeout it returns the count so far with an error
	// wrapping ErrTimeout. Several pending signallers on one name are served
	// in the order they started, one arriving waiter to the oldest.
	SignalAtLeast(ctx context.Context, name string, value []byte, min int) (woken int, err error)

	// Publish appends msg to topic and returns its sequence number. Numbers
	// start at 1 for each topic and are never reused or renumbered while
	// the topic retains a message or has a subscription; an in-memory
	// Core forgets a topic left with neither (see RetainTotalBytes), and
	// its numbers then start again at 1, as after a restart. A msg over
	// the Core's MaxValue is refused with an error wrapping ErrTooLarge.
	Publish(ctx context.Context, topic string, msg []byte) (seq uint64, err error)

	// Subscribe opens a subscription to topic starting at from. The
	// subscription is closed by its Close or when ctx ends, whichever comes
	// first, so a handler may subscribe with its request's context and
	// leak nothing. FromSeq beyond the topic's next number gives
	// ErrBadPosition.
	Subscribe(ctx context.Context, topic string, from Position) (Subscription, error)
}

// ManagedCore is a Core its owner observes and closes: the in-memory
// LocalCore and the Cores core factories make (paster serve asserts what a
// factory made to be one).
type ManagedCore interface {
	Core
	// Stats counts what the Core holds on this machine now.
	Stats() CoreStats
	// Close ends every parked wait with ErrClosed and releases what the
	// Core holds; it is idempotent.
	Close() error
}

// SignalFuncWaiter is implemented by a Core that parks a WaitForSignal
// without a goroutine: the plugin host answers a plugin's WaitForSignal so,
// and so holds, for a request parked in a plugin, no goroutine of its own
// in the wait, nor wakes one when the signal comes.
type SignalFuncWaiter interface {
	// WaitForSignalFunc is WaitForSignal that returns at once: done gets
	// what WaitForSignal would return, exactly once, in the goroutine
	// that signals, that of ctx's ending or of the timeout, or in the
	// caller's before WaitForSignalFunc returns. Unlike WaitForSignal's,
	// the value is shared by every waiter of the signal: done must not
	// change it, nor keep it after it returns.
	WaitForSignalFunc(ctx context.Context, name string, timeout time.Duration, done func(value []byte, err error))
}

// CoreStarter is implemented by a ManagedCore whose factory leaves to Start
// what binds a socket (egg:paster#nats with embedded = true runs a
// nats-server): the factory only validates and prepares, as
// entrypoints.CoreFactory asks. paster serve calls Start once before it
// uses the Core; paster check does not, so a check binds nothing. After a
// Start error the Core is closed and not used; Close releases a Core
// started or not.
type CoreStarter interface {
	Start() error
}

type coreKey struct{}

// WithCore returns a copy of ctx carrying core, for CoreFrom.
func WithCore(ctx context.Context, core Core) context.Context {
	return context.WithValue(ctx, coreKey{}, core)
}

// CoreFrom returns the Core carried by ctx: in a request handler served by a
// Runner and in a coroutine run by a Sched, the runner's Core. It never
// returns nil: without a Core in ctx it returns one whose every operation
// fails with ErrNoCore, so that code run under a plain net/http server gets
// an error instead of a nil-pointer panic. Use HasCore to tell beforehand.
func CoreFrom(ctx context.Context) Core {
	if c, ok := ctx.Value(coreKey{}).(Core); ok && c != nil {
		return c
	}
	return noCore{}
}

// HasCore reports whether ctx carries a Core.
func HasCore(ctx context.Context) bool {
	c, ok := ctx.Value(coreKey{}).(Core)
	return ok && c != nil
}

// noCore is CoreFrom's answer when ctx has no Core.
type noCore struct{}

func (noCore) Sleep(context.Context, time.Duration) error {
	return fmt.Errorf("runner: sleep: %w", ErrNoCore)
}

func (noCore) WaitForSignal(_ context.Context, name string, _ time.Duration) ([]byte, error) {
	return nil, fmt.Errorf("runner: wait for signal %q: %w", name, ErrNoCore)
}

func (noCore) Signal(_ context.Context, name string, _ []byte) (int, error) {
	return 0, fmt.Errorf("runner: signal %q: %w", name, ErrNoCore)
}

func (noCore) SignalAtLeast(_ context.Context, name string, _ []byte, _ int) (int, error) {
	return 0, fmt.Errorf("runner: signal %q: %w", name, ErrNoCore)
}

func (noCore) Publish(_ context.Context, topic string, _ []byte) (uint64, error) {
	return 0, fmt.Errorf("runner: publish to %q: %w", topic, ErrNoCore)
}

func (noCore) Subscribe(_ context.Context, topic string, _ Position) (Subscription, error) {
	return nil, fmt.Errorf("runner: subscribe to %q: %w", topic, ErrNoCore)
}

// Default retention of a topic when CoreOptions leaves it zero.
const (
	DefaultRetainCount = 1000
	DefaultRetainAge   = 10 * time.Minute
	// DefaultRetainBytes is what one topic keeps at most.
	DefaultRetainBytes = 64 << 20
	// DefaultRetainTotalBytes is what all topics of an in-memory Core keep
	// at most together.
	DefaultRetainTotalBytes = 256 << 20
)

// DefaultMaxValue is the largest value Publish, Signal and SignalAtLeast
// accept when CoreOptions leaves MaxValue zero: 1 MiB, NATS's default
// largest message too.
const DefaultMaxValue = 1 << 20

// MaxNameSize is the longest signal or topic name, in bytes, a Core
// accepts; a longer one is refused with an error wrapping ErrTooLarge.
const MaxNameSize = 1024

// What the in-memory Core counts, besides the data, for each retained
// message and each topic it keeps, towards RetainBytes and
// RetainTotalBytes: about what it holds for them in memory.
const (
	MessageOverhead = 64
	TopicOverhead   = 256
)

// CoreOptions configures NewCore. The zero value is usable.
type CoreOptions struct {
	// DefaultTimeout bounds waits that have no timeout of their own and
	// whose context has no deadline (WaitForSignal with timeout 0,
	// SignalAtLeast, Fetch). Zero or negative means none: such waits end
	// only with their context or the core. The server section's
	// sched_default_timeout.
	DefaultTimeout time.Duration

	// RetainCount is how many messages a topic keeps; 0 means
	// DefaultRetainCount and a negative value no limit by count.
	RetainCount int

	// RetainAge is how long a topic keeps a message; 0 means
	// DefaultRetainAge and a negative value no limit by age.
	RetainAge time.Duration

	// MaxValue is the largest value, in bytes, that Publish, Signal and
	// SignalAtLeast accept; a larger one is refused with an error wrapping
	// ErrTooLarge. 0 means DefaultMaxValue and a negative value no limit.
	// The server section's core_max_value.
	MaxValue int

	// RetainBytes bounds the bytes a topic keeps, counting each message's
	// data and a per-message overhead (MessageOverhead in memory; NATS
	// counts its own); the oldest messages are dropped first, as by
	// RetainCount. 0 means DefaultRetainBytes and a negative value no
	// limit. The server section's pubsub_retain_bytes.
	RetainBytes int64

	// RetainTotalBytes bounds the bytes all topics of an in-memory Core
	// keep together (each topic's messages as for RetainBytes, plus its
	// name and TopicOverhead): past it the oldest message of any topic is
	// dropped first, and a topic left with no message and no subscription
	// is forgotten. 0 means DefaultRetainTotalBytes and a negative value
	// no limit. The NATS Core keeps topics in JetStream, not in memory,
	// and does not apply it. The server section's pubsub_retain_total_bytes.
	RetainTotalBytes int64

	// Logger receives the core's debug and warning messages; nil means none.
	Logger hclog.Logger

	// Now is the clock for message times and age retention; nil means
	// time.Now. Tests set it to control retention.
	Now func() time.Time
}

// CoreStats counts what a LocalCore holds at one moment.
type CoreStats struct {
	Waiters        int // WaitForSignal calls parked
	PendingSignals int // SignalAtLeast calls waiting for more recipients
	Subscriptions  int // open subscriptions
	Fetching       int // Fetch calls parked waiting for messages
	Topics         int // topics held on this machine: with a message or a subscription (in memory), or a handle kept (NATS)
	Retained       int // messages retained over all topics
	// RetainedBytes is what RetainTotalBytes bounds: the retained
	// messages' data and overheads, and the topics' names and overheads
	// (an in-memory Core only).
	RetainedBytes int64

	// A Core spread over several machines (Distributed) also reports
	// whether its connection is up, how many other machines it knows
	// alive, how often it reconnected and how many Signals missed an
	// answer from a machine it knew alive.
	Distributed  bool
	Connected    bool
	Peers        int
	Reconnects   int64
	GatherMisses int64
	// CrossNode is how long the Signals sent here took to hear from every
	// other live node (the cross-node round trip, the other nodes' wake-ups
	// included); a Signal that missed a node counts in GatherMisses instead.
	CrossNode Histogram
}

// Histogram is a snapshot of durations counted in buckets, for metrics.
type Histogram struct {
	// Bounds are the buckets' upper bounds in seconds, ascending; Counts[i]
	// counts the durations of at most Bounds[i] (cumulative, as Prometheus
	// has them). Count counts them all and Sum is their total in seconds.
	Bounds []float64
	Counts []uint64
	Count  uint64
	Sum    float64
}

// LocalCore is the in-process Core: everything lives in memory behind one
// mutex, and waiters park on channels, not goroutines of the core's own (a
// parked wait costs its caller's goroutine and a few words). A LocalCore
// must be made with NewCore and is safe for concurrent use.
type LocalCore struct {
	opts CoreOptions
	log  hclog.Logger
	now  func() time.Time
	done chan struct{} // closed by Close

	mu      sync.Mutex
	closed  bool
	signals map[string]*signalState
	topics  map[string]*topic
	stats   CoreStats // Waiters, PendingSignals, Subscriptions, Fetching
	// total is what RetainTotalBytes bounds (CoreStats.RetainedBytes),
	// retained the number of messages retained; order lists them in
	// publish order, for dropping the oldest of all topics first (see
	// evictLocked).
	total    int64
	retained int
	order    retainOrder
}

// NewCore returns an open LocalCore configured by opts.
func NewCore(opts CoreOptions) *LocalCore {
	if opts.RetainCount == 0 {
		opts.RetainCount = DefaultRetainCount
	}
	if opts.RetainAge == 0 {
		opts.RetainAge = DefaultRetainAge
	}
	if opts.DefaultTimeout < 0 {
		opts.DefaultTimeout = 0
	}
	if opts.MaxValue == 0 {
		opts.MaxValue = DefaultMaxValue
	}
	if opts.RetainBytes == 0 {
		opts.RetainBytes = DefaultRetainBytes
	}
	if opts.RetainTotalBytes == 0 {
		opts.RetainTotalBytes = DefaultRetainTotalBytes
	}
	c := &LocalCore{
		opts:    opts,
		log:     opts.Logger,
		now:     opts.Now,
		done:    make(chan struct{}),
		signals: make(map[string]*signalState),
		topics:  make(map[string]*topic),
	}
	if c.log == nil {
		c.log = hclog.NewNullLogger()
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c
}

// Close closes the core: every parked wait (WaitForSignal, SignalAtLeast,
// Fetch, Sleep) returns an error wrapping ErrClosed at once, and every later
// operation fails the same way. Close is idempotent and always returns nil.
func (c *LocalCore) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	st := c.stats
	close(c.done)
	funcs := c.closeFuncsLocked()
	c.mu.Unlock()
	for _, w := range funcs {
		w.stop()
		w.done(nil, fmt.Errorf("runner: wait for signal %q: %w", w.name, ErrClosed))
	}
	c.log.Debug("core closed", "waiters", st.Waiters, "pending_signals", st.PendingSignals,
		"subscriptions", st.Subscriptions, "fetching", st.Fetching)
	return nil
}

// Stats returns what the core holds now. After Close, the wait counts fall to
// zero as parked calls return.
func (c *LocalCore) Stats() CoreStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.stats
	st.Topics = len(c.topics)
	st.Retained = c.retained
	st.RetainedBytes = c.total
	return st
}

// Options returns the options in effect (defaults filled in).
func (c *LocalCore) Options() CoreOptions { return c.opts }

// Sleep waits for d, for ctx, or for the core to close. See Core.
func (c *LocalCore) Sleep(ctx context.Context, d time.Duration) error {
	if err := c.check(ctx); err != nil {
		return fmt.Errorf("runner: sleep: %w", err)
	}
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("runner: sleep: %w", ctxErr(ctx))
	case <-c.done:
		return fmt.Errorf("runner: sleep: %w", ErrClosed)
	}
}

// CheckSize returns nil when name and value are within the limits of a Core
// configured by o (defaults filled in, as LocalCore.Options returns them):
// name at most MaxNameSize bytes, value at most MaxValue. Otherwise it
// returns an error wrapping ErrTooLarge that starts with op (such as
// "runner: publish to") and names the name (cut short when it is the one
// too long), the size and the limit. Every Core checks its calls with it.
func (o CoreOptions) CheckSize(op, name string, value []byte) error {
	if len(name) > MaxNameSize {
		return fmt.Errorf("%s %q...: a name of %d bytes is over the limit of %d bytes: %w",
			op, name[:32], len(name), MaxNameSize, ErrTooLarge)
	}
	if o.MaxValue > 0 && len(value) > o.MaxValue {
		return fmt.Errorf("%s %q: a value of %d bytes is over the core's limit of %d bytes (core_max_value): %w",
			op, name, len(value), o.MaxValue, ErrTooLarge)
	}
	return nil
}

// check returns the error for an operation started on a done ctx or a closed
// core, or nil.
func (c *LocalCore) check(ctx context.Context) error {
	if ctx.Err() != nil {
		return ctxErr(ctx)
	}
	select {
	case <-c.done:
		return ErrClosed
	default:
		return nil
	}
}

// timeoutFor returns how long a wait may last by the core's rules (0 means
// unbounded): its own timeout when positive, none when negative, and the
// default timeout when zero and ctx has no deadline.
func (c *LocalCore) timeoutFor(ctx context.Context, timeout time.Duration) time.Duration {
	switch {
	case timeout > 0:
		return timeout
	case timeout < 0:
		return 0
	}
	if _, ok := ctx.Deadline(); ok {
		return 0
	}
	return c.opts.DefaultTimeout
}

// deadline is an optional timer: C is nil (never ready) when d is 0.
type deadline struct {
	t *time.Timer
	C <-chan time.Time
	d time.Duration
}

func newDeadline(d time.Duration) deadline {
	if d <= 0 {
		return deadline{}
	}
	t := time.NewTimer(d)
	return deadline{t: t, C: t.C, d: d}
}

func (dl deadline) stop() {
	if dl.t != nil {
		dl.t.Stop()
	}
}

func (dl deadline) err() error {
	return fmt.Errorf("%w after %v", ErrTimeout, dl.d)
}

// ctxErr is the error for a wait ended by ctx: it wraps ctx.Err(), and
// ErrTimeout as well when the deadline passed.
func ctxErr(ctx context.Context) error {
	err := ctx.Err()
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w", ErrTimeout, err)
	}
	if cause := context.Cause(ctx); cause != nil && cause != err {
		return fmt.Errorf("%w: %w", err, cause)
	}
	return err
}

// ContextError is the error for a wait ended by ctx, as Core
// implementations return it: it wraps ctx.Err(), ErrTimeout as well when the
// deadline passed, and the context's cause when it has one.
func ContextError(ctx context.Context) error { return ctxErr(ctx) }

// clone copies b; nil stays nil.
func clone(b []byte) []byte { return bytes.Clone(b) }

// Package natscore is a runner.Core spread over several machines (nodes)
// joined by NATS, with the in-memory Core's semantics.
//
// Waiters stay in each node's own runner.LocalCore: a parked request costs
// what it costs in memory, and no NATS subscription is made per waiter.
// Signal is a scatter/gather: the caller wakes its own waiters, publishes
// the signal to every other node on one subject, and sums the counts they
// answer, waiting at most the gather timeout for nodes it knows are alive.
// Nodes know each other by heartbeats on a subject (and a join handshake when
// a node starts, so a node is known to the others before its New returns).
// Topics are JetStream streams, one per topic, so sequence numbers are the
// streams' own: dense from 1, the same on every node, persisted.
//
// When the NATS connection is lost, operations that need other nodes fail at
// once with an error wrapping runner.ErrUnavailable; waits parked here stay
// parked and Signals sent here still wake them. nats.go reconnects and
// everything works again without a restart.
package natscore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/paster-dev/paster/runner"
)

// Defaults of Options.
const (
	DefaultSubjectPrefix = "paster"
	DefaultGatherTimeout = 250 * time.Millisecond
	DefaultHeartbeat     = time.Second
)

// Options configures New.
type Options struct {
	// URL is one or more NATS server URLs, comma-separated. With
	// Embedded it may be empty (this node's own server) or list the other
	// nodes' servers, tried after this node's own.
	URL string
	// Embedded, when set, has Start start a nats-server inside the
	// process, or share the one another Core of the process started with
	// the same settings; Close shuts it down once no Core uses it.
	Embedded *Embedded
	// Name names this node in logs and errors; default hostname:pid.
	Name string
	// SubjectPrefix starts every subject and stream name this Core uses, so
	// several paster clusters can share one NATS; default "paster". It must
	// be a valid NATS subject token and stream name (letters, digits, - _),
	// at most MaxSubjectPrefix bytes; a longer one fails Start.
	SubjectPrefix string
	// GatherTimeout bounds how long Signal waits for other nodes' answers;
	// default 250ms.
	GatherTimeout time.Duration
	// Heartbeat is how often a node says it is alive; a node not heard for
	// three heartbeats is no longer waited for. Default 1s.
	Heartbeat time.Duration
	// Replicas is how many JetStream servers keep each topic; default 1.
	Replicas int
	// Core configures the local part (DefaultTimeout, Logger), the
	// largest value (MaxValue) and topic retention (RetainCount,
	// RetainAge, RetainBytes, as runner.CoreOptions says; RetainBytes
	// is the stream's MaxBytes, which counts what JetStream stores of a
	// message: its data, subject and headers). Now is not used: message
	// times and retention are the NATS server's. RetainTotalBytes is
	// not used: topics are JetStream streams, kept by the NATS server
	// (on disk, within its own limits such as max_file_store), not in
	// this process's memory.
	//
	// A value travels in one NATS message with natscore's headers, and
	// the NATS server's max_payload bounds the two together. An
	// embedded server is started with a max_payload that carries
	// MaxValue (at least DefaultMaxValue) and the headers. Against
	// another server, Start compares: a MaxValue set (above 0) that the
	// server cannot carry fails Start with an error naming core_max_value
	// and the server's max_payload; MaxValue 0 (the default) or negative
	// (no limit) becomes what the server carries, at most
	// runner.DefaultMaxValue, or MaxValueLimit when negative (MaxValue
	// says which). Either way every value up to MaxValue goes through and
	// a larger one is refused with runner.ErrTooLarge. A MaxValue over
	// MaxValueLimit fails Start. Every node and every NATS server of a
	// cluster should have the same limits: a stream's leader refuses a
	// message over its own server's max_payload (also ErrTooLarge).
	Core runner.CoreOptions
	// NATS are extra nats.go options (credentials, TLS, reconnect waits).
	NATS []nats.Option
}

// MaxValueLimit is the largest Options.Core.MaxValue (core_max_value) a
// NATS Core takes: 16 MiB. Fetch reads a message in one JetStream
// response, base64 encoded, which must stay well within nats.go's 64 MiB
// of pending bytes per subscription; nats-server itself advises against a
// max_payload over 8 MiB.
const MaxValueLimit = 16 << 20

// ErrServerMaxPayload is wrapped by Start's error when the NATS server's
// max_payload cannot carry a value of core_max_value bytes.
var ErrServerMaxPayload = errors.New("the NATS server's max_payload is too small for core_max_value")

// embeddedHeaderRoom is what an embedded nats-server's max_payload has
// beyond the largest value, for natscore's headers (headerRoom).
const embeddedHeaderRoom = 64 << 10

// Core is a runner.Core over NATS. Make it with New; it is safe for
// concurrent use.
type Core struct {
	// opts are the options with defaults filled in; Start settles
	// opts.Core.MaxValue, the limit Publish, Signal and SignalAtLeast
	// check, against the NATS server's max_payload (fitMaxValue).
	opts   Options
	log    hclog.Logger
	local  *runner.LocalCore
	nc     *nats.Conn
	srv    *server.Server // the embedded nats-server, or nil
	js     jetstream.JetStream
	id     string // unique per Core: Name plus a random suffix
	prefix string
	done   chan struct{}
	// ncClosed is closed by the connection's ClosedHandler, the last of
	// its callbacks: Close waits for it, so that nothing of the
	// connection logs after Close returns.
	ncClosed chan struct{}
	// maxValueSet is whether Options.Core.MaxValue was set (above 0).
	maxValueSet bool

	mu      sync.Mutex
	started bool
	closed  bool
	peers   map[string]time.Time                 // node id -> when last heard
	streams *lru.Cache[string, jetstream.Stream] // the topics used last; itself safe for concurrent use
	notify  map[string]*topicNotify
	sals    map[string]*sal // this node's part in other nodes' SignalAtLeast, by id
	nsubs   []*nats.Subscription

	subscriptions atomic.Int64
	fetching      atomic.Int64
	reconnects    atomic.Int64
	gatherMisses  atomic.Int64
	crossNode     latency
}

// closeCallbacksTimeout bounds how long Close waits for the connection's
// last callbacks.
const closeCallbacksTimeout = 5 * time.Second

// Header keys of the messages between nodes.
const (
	hdrOp    = "Paster-Op"
	hdrFrom  = "Paster-From"
	hdrName  = "Paster-Name"
	hdrCount = "Paster-Count"
	hdrID    = "Paster-Id"
	hdrFinal = "Paster-Final"
)

// New prepares a Core (Prepare) and starts it (Start): it connects to NATS
// and joins the other nodes with the same subject prefix. It fails, naming
// the URL, when NATS cannot be reached or has no JetStream; it never
// retries at start.
func New(opts Options) (*Core, error) {
	c := Prepare(opts)
	if err := c.Start(); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Prepare returns a Core for opts, with the defaults filled in, that has
// not started: it binds nothing and connects to nothing until Start, so a
// configuration can be checked without side effects. Close releases it,
// started or not; any other method needs Start first.
func Prepare(opts Options) *Core {
	if opts.SubjectPrefix == "" {
		opts.SubjectPrefix = DefaultSubjectPrefix
	}
	if opts.GatherTimeout <= 0 {
		opts.GatherTimeout = DefaultGatherTimeout
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = DefaultHeartbeat
	}
	if opts.Replicas <= 0 {
		opts.Replicas = 1
	}
	if opts.Name == "" {
		host, _ := os.Hostname()
		opts.Name = host + ":" + strconv.Itoa(os.Getpid())
	}
	c := &Core{
		opts:     opts,
		log:      opts.Core.Logger,
		local:    runner.NewCore(opts.Core),
		id:       opts.Name + "." + nuid.Next(),
		prefix:   opts.SubjectPrefix,
		done:     make(chan struct{}),
		ncClosed: make(chan struct{}),
		peers:    make(map[string]time.Time),
		notify:   make(map[string]*topicNotify),
		sals:     make(map[string]*sal),
	}
	c.streams, _ = lru.New[string, jetstream.Stream](streamCacheSize) // fails only for a size <= 0
	if c.log == nil {
		c.log = hclog.NewNullLogger()
	}
	c.maxValueSet = opts.Core.MaxValue > 0
	c.opts.Core = c.local.Options()
	return c
}

// Start starts the embedded nats-server, if the Core has one, connects to
// NATS and joins the other nodes. It fails, naming the URL (or the embedded
// server's address), when NATS cannot be reached or has no JetStream; the
// Core must then be closed. A second Start does nothing; Start after Close
// returns runner.ErrClosed. Start and Close must not run concurrently. It
// implements runner.CoreStarter.
func (c *Core) Start() error {
	c.mu.Lock()
	closed, started := c.closed, c.started
	c.started = true
	c.mu.Unlock()
	switch {
	case closed:
		return fmt.Errorf("natscore: start: %w", runner.ErrClosed)
	case started:
		return nil
	}
	opts := c.opts
	if err := prefixError(opts.SubjectPrefix); err != nil {
		return fmt.Errorf("natscore: %w", err)
	}
	if err := maxValueError(opts.Core.MaxValue); err != nil {
		return fmt.Errorf("natscore: %w", err)
	}
	nopts := append([]nats.Option{
		nats.Name("paster " + opts.Name),
		nats.NoEcho(),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			select {
			case <-c.done: // Close ends the connection: not a loss
			default:
				c.log.Warn("nats disconnected", "node", opts.Name, "error", err)
			}
		}),
	}, opts.NATS...)
	nopts = append(nopts, nats.ClosedHandler(func(*nats.Conn) { close(c.ncClosed) }))
	var err error
	if opts.Embedded != nil {
		payload := int32(max(opts.Core.MaxValue, runner.DefaultMaxValue) + embeddedHeaderRoom)
		if c.srv, err = acquireEmbedded(*opts.Embedded, opts.Name, payload, c.log); err != nil {
			return err
		}
		opts.URL = strings.Trim(c.srv.ClientURL()+","+opts.URL, ",")
		c.opts.URL = opts.URL
	}
	nc, err := nats.Connect(opts.URL, nopts...)
	if err != nil {
		return fmt.Errorf("natscore: connect to %s: %w", opts.URL, err)
	}
	c.nc = nc
	if err := c.fitMaxValue(); err != nil {
		return err
	}
	// Set once the largest value is settled, which the handler reads (set
	// as an option, it could run during fitMaxValue).
	nc.SetReconnectHandler(func(nc *nats.Conn) {
		c.reconnects.Add(1)
		c.log.Info("nats reconnected", "node", opts.Name)
		if need, mp := int64(c.opts.Core.MaxValue)+c.headerRoom(), nc.MaxPayload(); mp < need {
			c.log.Error("the NATS server reconnected to cannot carry the largest values: give every server of the cluster the same max_payload",
				"node", opts.Name, "server", nc.ConnectedUrlRedacted(), "max_payload", mp, "needed", need)
		}
		c.heartbeat("hb")
	})
	if c.js, err = jetstream.New(nc); err != nil {
		return fmt.Errorf("natscore: jetstream on %s: %w", opts.URL, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if c.srv != nil {
		err = c.waitJetStream()
	} else {
		_, err = c.js.AccountInfo(ctx)
	}
	if err != nil {
		return fmt.Errorf("natscore: %s has no usable JetStream: %w", opts.URL, err)
	}
	for subj, h := range map[string]nats.MsgHandler{
		c.subject("node"): c.onNode,
		c.subject("sig"):  c.onSignal,
		c.subject("sal"):  c.onSignalAtLeast,
	} {
		s, err := nc.Subscribe(subj, h)
		if err != nil {
			return fmt.Errorf("natscore: subscribe to %s on %s: %w", subj, opts.URL, err)
		}
		// As many signals of the largest size may wait for the handler
		// as of NATS's default size before any is dropped.
		s.SetPendingLimits(nats.DefaultSubPendingMsgsLimit, int(max(nats.DefaultSubPendingBytesLimit, 64*nc.MaxPayload())))
		c.nsubs = append(c.nsubs, s)
	}
	// Heartbeats start before the join, which takes a gather timeout:
	// the others forget a node not heard from for three heartbeats.
	go c.heartbeats()
	return c.join()
}

// prefixError says why a subject_prefix is too long, or returns nil.
func prefixError(p string) error {
	if len(p) > MaxSubjectPrefix {
		return fmt.Errorf("subject_prefix is %d bytes: at most %d (a topic's stream name must fit in %d)", len(p), MaxSubjectPrefix, maxStreamName)
	}
	return nil
}

// maxValueError says why a core_max_value is over MaxValueLimit, or
// returns nil.
func maxValueError(mv int) error {
	if mv > MaxValueLimit {
		return fmt.Errorf("core_max_value of %d bytes is over the largest value a NATS core carries, %d bytes (16m)", mv, MaxValueLimit)
	}
	return nil
}

// headerRoom is the most natscore's headers take in a message beside its
// value: a signal's name (at most runner.MaxNameSize bytes) or a topic's
// stream name (at most maxStreamName), this node's id, and the header keys
// and numbers.
func (c *Core) headerRoom() int64 {
	return runner.MaxNameSize + maxStreamName + int64(len(c.id)) + 256
}

// fitMaxValue settles the largest value against the connected server's
// max_payload: a MaxValue set must fit in it (with the headers), else the
// error names core_max_value and the server's limit; an unset or negative
// one becomes what fits, at most DefaultMaxValue (MaxValueLimit when
// negative).
func (c *Core) fitMaxValue() error {
	mp, room := c.nc.MaxPayload(), c.headerRoom()
	mv := int64(c.opts.Core.MaxValue)
	if c.maxValueSet {
		if mv+room > mp {
			return fmt.Errorf("natscore: core_max_value of %d bytes needs a max_payload of at least %d bytes (with natscore's headers), and the NATS server %s has max_payload %d: raise max_payload in its configuration, or lower core_max_value: %w",
				mv, mv+room, c.nc.ConnectedUrlRedacted(), mp, ErrServerMaxPayload)
		}
		return nil
	}
	if mv < 0 {
		mv = MaxValueLimit
	}
	fit := min(mv, mp-room)
	if fit <= 0 {
		return fmt.Errorf("natscore: the NATS server %s has max_payload %d, which leaves no room for a value beside natscore's headers (%d bytes): raise max_payload in its configuration",
			c.nc.ConnectedUrlRedacted(), mp, room)
	}
	if fit < mv {
		c.log.Info("the largest value is what the NATS server's max_payload carries (set core_max_value to require more)",
			"node", c.opts.Name, "server", c.nc.ConnectedUrlRedacted(), "max_payload", mp, "core_max_value", fit)
	}
	c.opts.Core.MaxValue = int(fit)
	return nil
}

// MaxValue returns the largest value Publish, Signal and SignalAtLeast
// accept once Start has settled it (see Options.Core): core_max_value when
// set, else what the NATS server's max_payload carries, at most
// runner.DefaultMaxValue (MaxValueLimit with no limit).
func (c *Core) MaxValue() int { return c.opts.Core.MaxValue }

func (c *Core) subject(parts ...string) string {
	s := c.prefix
	for _, p := range parts {
		s += "." + p
	}
	return s
}

// join announces this node and waits one gather timeout for the others to
// answer, so that they all know it (and it knows them) before New returns.
func (c *Core) join() error {
	inbox := c.nc.NewRespInbox()
	ch := make(chan *nats.Msg, 64)
	sub, err := c.nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return fmt.Errorf("natscore: join: %w", err)
	}
	defer sub.Unsubscribe()
	m := nats.NewMsg(c.subject("node"))
	m.Reply = inbox
	m.Header.Set(hdrOp, "join")
	m.Header.Set(hdrFrom, c.id)
	if err := c.nc.PublishMsg(m); err != nil {
		return fmt.Errorf("natscore: join: %w", err)
	}
	if err := c.nc.Flush(); err != nil {
		return fmt.Errorf("natscore: join: %w", err)
	}
	t := time.NewTimer(c.opts.GatherTimeout)
	defer t.Stop()
	for {
		select {
		case r := <-ch:
			c.seen(r.Header.Get(hdrFrom))
		case <-t.C:
			return nil
		}
	}
}

// onNode handles heartbeats, joins and leaves of the other nodes.
func (c *Core) onNode(m *nats.Msg) {
	from := m.Header.Get(hdrFrom)
	if from == "" || from == c.id {
		return
	}
	switch m.Header.Get(hdrOp) {
	case "leave":
		c.mu.Lock()
		delete(c.peers, from)
		c.mu.Unlock()
		c.stopSals(from)
	case "join":
		c.seen(from)
		r := nats.NewMsg(m.Reply)
		r.Header.Set(hdrFrom, c.id)
		c.nc.PublishMsg(r)
	default:
		c.seen(from)
	}
}

func (c *Core) seen(id string) {
	if id == "" || id == c.id {
		return
	}
	c.mu.Lock()
	c.peers[id] = time.Now()
	c.mu.Unlock()
}

func (c *Core) heartbeat(op string) {
	m := nats.NewMsg(c.subject("node"))
	m.Header.Set(hdrOp, op)
	m.Header.Set(hdrFrom, c.id)
	c.nc.PublishMsg(m)
}

func (c *Core) heartbeats() {
	t := time.NewTicker(c.opts.Heartbeat)
	defer t.Stop()
	for {
		select {
		case <-c.done:
			return
		case <-t.C:
			c.heartbeat("hb")
			c.livePeers() // forgets the nodes that stopped beating
		}
	}
}

// livePeers returns the nodes heard from within three heartbeats. A node
// not heard from any more is forgotten, and this node stops taking part in
// its SignalAtLeast calls, so that a signaller that died does not stay
// pending here.
func (c *Core) livePeers() map[string]bool {
	cutoff := time.Now().Add(-3 * c.opts.Heartbeat)
	c.mu.Lock()
	out := make(map[string]bool, len(c.peers))
	var gone []string
	for id, at := range c.peers {
		if at.Before(cutoff) {
			delete(c.peers, id)
			gone = append(gone, id)
			continue
		}
		out[id] = true
	}
	c.mu.Unlock()
	for _, id := range gone {
		c.stopSals(id)
	}
	return out
}

// Peers returns how many other nodes this one knows to be alive.
func (c *Core) Peers() int { return len(c.livePeers()) }

// Connected reports whether the NATS connection is up.
func (c *Core) Connected() bool { return c.nc != nil && c.nc.Status() == nats.CONNECTED }

// Stats returns this node's counts: its own parked waiters and pending
// signals, its open subscriptions and parked fetches, and as Topics the
// topics whose stream handles it keeps (the 1,024 used last at most; the
// streams themselves are on the NATS server).
func (c *Core) Stats() runner.CoreStats {
	st := c.local.Stats()
	st.Subscriptions = int(c.subscriptions.Load())
	st.Fetching = int(c.fetching.Load())
	st.Topics = c.streams.Len()
	st.Retained = 0
	st.Distributed, st.Connected, st.Peers = true, c.Connected(), c.Peers()
	st.Reconnects, st.GatherMisses = c.reconnects.Load(), c.gatherMisses.Load()
	st.CrossNode = c.crossNode.snapshot()
	return st
}

// Close leaves the cluster and closes the connection: parked waits here
// return ErrClosed, as with the in-memory Core. The embedded nats-server is
// shut down, and waited for, if no other Core uses it. Idempotent; returns
// nil.
func (c *Core) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	close(c.done)
	var ccs []jetstream.ConsumeContext
	for _, tn := range c.notify {
		if tn.cc != nil {
			ccs = append(ccs, tn.cc)
			tn.cc = nil
		}
	}
	c.mu.Unlock()
	for _, cc := range ccs {
		cc.Stop()
	}
	c.local.Close()
	if c.Connected() {
		c.heartbeat("leave")
		c.nc.Flush()
	}
	if c.nc != nil {
		c.nc.Close()
		select {
		case <-c.ncClosed:
		case <-time.After(closeCallbacksTimeout):
		}
	}
	if c.srv != nil {
		releaseEmbedded(c.srv)
	}
	return nil
}

// unavailable returns the error for an operation that needs NATS when the
// connection is down, or nil.
func (c *Core) unavailable() error {
	if st := c.nc.Status(); st != nats.CONNECTED {
		return fmt.Errorf("nats connection %s: %w", st, runner.ErrUnavailable)
	}
	return nil
}

// check is the error for an operation started on a done ctx or closed core.
func (c *Core) check(ctx context.Context) error {
	if ctx.Err() != nil {
		return runner.ContextError(ctx)
	}
	select {
	case <-c.done:
		return runner.ErrClosed
	default:
		return nil
	}
}

// Sleep is the local Core's Sleep.
func (c *Core) Sleep(ctx context.Context, d time.Duration) error { return c.local.Sleep(ctx, d) }

// WaitForSignal parks here, in memory, until a Signal on name from any node.
// See runner.Core.
func (c *Core) WaitForSignal(ctx context.Context, name string, timeout time.Duration) ([]byte, error) {
	return c.local.WaitForSignal(ctx, name, timeout)
}

// Signal wakes every waiter on name on every live node and returns how many
// it woke in all. Waiters here are woken even when NATS is down; then the
// count is theirs and the error wraps runner.ErrUnavailable. When a live
// node does not answer within the gather timeout the count is what answered
// and the error wraps runner.ErrNodesMissing.
func (c *Core) Signal(ctx context.Context, name string, value []byte) (int, error) {
	if err := c.opts.Core.CheckSize("natscore: signal", name, value); err != nil {
		return 0, err
	}
	if err := c.check(ctx); err != nil {
		return 0, fmt.Errorf("natscore: signal %q: %w", name, err)
	}
	n, err := c.local.Signal(ctx, name, value)
	if err != nil {
		return n, err
	}
	if err := c.unavailable(); err != nil {
		return n, fmt.Errorf("natscore: signal %q: woke %d on this node: %w", name, n, err)
	}
	m := nats.NewMsg(c.subject("sig"))
	m.Header.Set(hdrName, name)
	m.Data = value
	others, err := c.gather(ctx, m, nil)
	n += others
	if err != nil {
		return n, fmt.Errorf("natscore: signal %q: woke %d: %w", name, n, err)
	}
	return n, nil
}

// gather publishes m to every node with a private reply subject and sums the
// counts the live nodes answer, until all answered, the gather timeout, or
// ctx. each, when not nil, is told every answer. The time until all
// answered is counted in crossNode.
func (c *Core) gather(ctx context.Context, m *nats.Msg, each func(from string, n int)) (int, error) {
	m.Header.Set(hdrFrom, c.id)
	peers := c.livePeers()
	if len(peers) == 0 {
		// Nobody to wait for, but a node not known (yet, or any more)
		// still wakes its waiters: no lost wake-up.
		if err := c.nc.PublishMsg(m); err != nil {
			return 0, sendError(err)
		}
		return 0, nil
	}
	inbox := c.nc.NewRespInbox()
	ch := make(chan *nats.Msg, len(peers)+8)
	sub, err := c.nc.ChanSubscribe(inbox, ch)
	if err != nil {
		return 0, fmt.Errorf("%w: %w", runner.ErrUnavailable, err)
	}
	defer sub.Unsubscribe()
	m.Reply = inbox
	start := time.Now()
	if err := c.nc.PublishMsg(m); err != nil {
		return 0, sendError(err)
	}
	t := time.NewTimer(c.opts.GatherTimeout)
	defer t.Stop()
	sum, missing := 0, len(peers)
	answered := map[string]bool{}
	for missing > 0 {
		select {
		case r := <-ch:
			from := r.Header.Get(hdrFrom)
			if answered[from] {
				continue
			}
			answered[from] = true
			n, _ := strconv.Atoi(r.Header.Get(hdrCount))
			sum += n
			if each != nil {
				each(from, n)
			}
			if peers[from] {
				missing--
			}
		case <-t.C:
			c.gatherMisses.Add(1)
			return sum, fmt.Errorf("%d of %d other nodes: %w", missing, len(peers), runner.ErrNodesMissing)
		case <-ctx.Done():
			return sum, runner.ContextError(ctx)
		case <-c.done:
			return sum, runner.ErrClosed
		}
	}
	c.crossNode.observe(time.Since(start))
	return sum, nil
}

// sendError is the error of a message to the other nodes that could not be
// sent: ErrTooLarge when it is over the NATS server's max_payload (a
// server reconnected to has a smaller one than the server at Start), else
// ErrUnavailable.
func sendError(err error) error {
	if errors.Is(err, nats.ErrMaxPayload) {
		return fmt.Errorf("over the NATS server's max_payload: %w: %w", runner.ErrTooLarge, err)
	}
	return fmt.Errorf("%w: %w", runner.ErrUnavailable, err)
}

// onSignal wakes this node's waiters for another node's Signal and answers
// how many.
func (c *Core) onSignal(m *nats.Msg) {
	n, _ := c.local.Signal(context.Background(), m.Header.Get(hdrName), m.Data)
	c.answer(m.Reply, "", n, false)
}

func (c *Core) answer(subject, id string, n int, final bool) {
	if subject == "" {
		return
	}
	r := nats.NewMsg(subject)
	r.Header.Set(hdrFrom, c.id)
	r.Header.Set(hdrCount, strconv.Itoa(n))
	if id != "" {
		r.Header.Set(hdrID, id)
	}
	if final {
		r.Header.Set(hdrFinal, "1")
	}
	c.nc.PublishMsg(r)
}

// streamName and topicSubject encode a topic (any string) into NATS names.
func (c *Core) streamName(topic string) string {
	return c.prefix + "_topic_" + c.topicKey(topic)
}

func (c *Core) topicSubject(topic string) string {
	return c.subject("topic", c.topicKey(topic))
}

// maxStreamName is the longest stream name JetStream takes.
const maxStreamName = 255

// MaxSubjectPrefix is the longest Options.SubjectPrefix (subject_prefix):
// with it, the longest stream name of a topic (the prefix, "_topic_" and
// the hashed form of topicKey, 65 bytes) is maxStreamName.
const MaxSubjectPrefix = maxStreamName - len("_topic_") - 1 - 2*sha256.Size

// topicKey encodes a topic into a NATS name token: its bytes hex encoded,
// or, when that would make the stream name longer than JetStream takes,
// "h" and its SHA-256 hex encoded. A topic gets the second form only when
// the first could never name a stream, so no topic's stream changed names.
func (c *Core) topicKey(topic string) string {
	if len(c.prefix)+len("_topic_")+hex.EncodedLen(len(topic)) <= maxStreamName {
		return hex.EncodeToString([]byte(topic))
	}
	sum := sha256.Sum256([]byte(topic))
	return "h" + hex.EncodeToString(sum[:])
}

// errorf wraps err for op, turning a lost connection into ErrUnavailable.
func (c *Core) errorf(err error, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	switch {
	case errors.Is(err, runner.ErrUnavailable), errors.Is(err, runner.ErrClosed),
		errors.Is(err, runner.ErrTimeout), errors.Is(err, context.Canceled):
		return fmt.Errorf("natscore: %s: %w", msg, err)
	case errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrDisconnected),
		errors.Is(err, nats.ErrNoResponders), errors.Is(err, nats.ErrTimeout),
		errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, nats.ErrConnectionReconnecting):
		return fmt.Errorf("natscore: %s: %w: %w", msg, runner.ErrUnavailable, err)
	}
	if errors.Is(err, nats.ErrMaxPayload) || errors.Is(err, jetstream.ErrStreamMessageExceedsMaximum) {
		return fmt.Errorf("natscore: %s: over the NATS server's max_payload: %w: %w", msg, runner.ErrTooLarge, err)
	}
	return fmt.Errorf("natscore: %s: %w", msg, err)
}

// crossNodeBounds are the upper bounds, in seconds, of the cross-node
// latency histogram: a Signal's round trip on a LAN is well under a
// millisecond to a few, and gather_timeout ends the slowest.
var crossNodeBounds = [...]float64{0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}

// latency counts durations in crossNodeBounds' buckets. It is a few
// atomics rather than a prometheus.Histogram because the Core reports plain
// runner.CoreStats, which keep the runner package free of a metrics
// library; observe turns the snapshot into a Prometheus histogram.
type latency struct {
	buckets [len(crossNodeBounds) + 1]atomic.Uint64 // per bucket, not cumulative; the last is +Inf
	count   atomic.Uint64
	nanos   atomic.Int64
}

// observe counts d. The count goes up before the bucket, so that a
// snapshot, which reads the buckets first, never has more in them than
// in its count.
func (l *latency) observe(d time.Duration) {
	l.count.Add(1)
	l.nanos.Add(int64(d))
	i, _ := slices.BinarySearch(crossNodeBounds[:], d.Seconds())
	l.buckets[i].Add(1)
}

func (l *latency) snapshot() runner.Histogram {
	h := runner.Histogram{Bounds: crossNodeBounds[:], Counts: make([]uint64, len(crossNodeBounds))}
	var cum uint64
	for i := range crossNodeBounds {
		cum += l.buckets[i].Load()
		h.Counts[i] = cum
	}
	h.Count = l.count.Load()
	h.Sum = time.Duration(l.nanos.Load()).Seconds()
	return h
}

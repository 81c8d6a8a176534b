package natscore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/paster-dev/paster/internal/testsync"
	"github.com/paster-dev/paster/runner"
	"github.com/paster-dev/paster/runner/coretest"
)

// testServer is a real nats-server with JetStream, run inside the test
// process on a random loopback port.
type testServer struct {
	t     testing.TB
	opts  server.Options
	srv   *server.Server
	store string
}

func startServer(t testing.TB) *testServer {
	t.Helper()
	return startServerWith(t, func(*server.Options) {})
}

// startServerWith is startServer with options changed by mod.
func startServerWith(t testing.TB, mod func(*server.Options)) *testServer {
	t.Helper()
	ts := &testServer{t: t, store: t.TempDir()}
	ts.opts = server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: ts.store, NoLog: true, NoSigs: true}
	mod(&ts.opts)
	ts.start()
	t.Cleanup(ts.stop)
	return ts
}

// start starts the server; after the first start it reuses the same port and
// store, as a restarted server would.
func (ts *testServer) start() {
	ts.t.Helper()
	o := ts.opts
	s, err := server.NewServer(&o)
	if err != nil {
		ts.t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(20 * time.Second) {
		ts.t.Fatal("nats-server not ready")
	}
	ts.srv = s
	ts.opts.Port = s.Addr().(*net.TCPAddr).Port
}

func (ts *testServer) stop() {
	if ts.srv != nil {
		ts.srv.Shutdown()
		ts.srv.WaitForShutdown()
		ts.srv = nil
	}
}

func (ts *testServer) url() string { return fmt.Sprintf("nats://127.0.0.1:%d", ts.opts.Port) }

var prefixes atomic.Int64

// newPrefix returns a subject prefix no other test uses, so tests sharing a
// server do not see each other's nodes or topics.
func newPrefix() string { return fmt.Sprintf("t%d", prefixes.Add(1)) }

// newNode starts a Core on ts with prefix, closed at cleanup.
func newNode(t testing.TB, ts *testServer, prefix, name string, opts runner.CoreOptions) *Core {
	t.Helper()
	c, err := New(Options{
		URL: ts.url(), Name: name, SubjectPrefix: prefix, Core: opts,
		// A gather timeout well above a loaded machine's wake of 1,000 waiters
		// (TestSignalAcrossNodes missed at 100 ms under load average 23).
		GatherTimeout: time.Second, Heartbeat: 100 * time.Millisecond,
		NATS: []nats.Option{nats.ReconnectWait(20 * time.Millisecond)},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestNATSCoreContract runs the Core contract suite, unchanged, against a
// NATS Core (one node per Core) on an embedded nats-server, started as
// paster starts it (so with a max_payload for core_max_value) and shared by
// the Cores, as a reload shares it.
func TestNATSCoreContract(t *testing.T) {
	t.Parallel()
	emb := &Embedded{Listen: "127.0.0.1:0", StoreDir: t.TempDir()}
	newCore := func(t testing.TB, opts runner.CoreOptions) coretest.Core {
		t.Helper()
		c, err := New(Options{
			Embedded: emb, Name: "solo", SubjectPrefix: newPrefix(), Core: opts,
			GatherTimeout: time.Second, Heartbeat: 100 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	newCore(t, runner.CoreOptions{}) // holds the server between subtests
	coretest.Run(t, newCore)
}

// cluster starts n nodes sharing a prefix on ts and waits until each knows
// the others.
func cluster(t *testing.T, ts *testServer, n int) []*Core {
	t.Helper()
	prefix := newPrefix()
	var nodes []*Core
	for i := range n {
		nodes = append(nodes, newNode(t, ts, prefix, fmt.Sprint("node", i), runner.CoreOptions{}))
	}
	for _, c := range nodes {
		testsync.WaitFor(t, "nodes know each other", func() bool { return c.Peers() == n-1 })
	}
	return nodes
}

// soloCluster is cluster on a nats-server of its own.
func soloCluster(t *testing.T, n int) []*Core {
	t.Helper()
	return cluster(t, startServer(t), n)
}

// TestSignalAcrossNodes: one Signal wakes the waiters of every node and
// counts them all; a node with none answers 0.
func TestSignalAcrossNodes(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name  string
		split []int // waiters on nodes 1.., the signal is sent from node 0
	}{
		{"one on another node", []int{1, 0}},
		{"split", []int{3, 5}},
		{"a thousand over two nodes", []int{500, 500}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nodes := cluster(t, ts, len(tc.split)+1)
			var results []<-chan coretest.WaitResult
			want := 0
			for i, n := range tc.split {
				results = append(results, coretest.Park(t, nodes[i+1], ctx, "abc", runner.NoTimeout, n))
				want += n
			}
			n, err := nodes[0].Signal(ctx, "abc", []byte("hello"))
			if err != nil || n != want {
				t.Fatalf("Signal = %d, %v; want %d, nil", n, err, want)
			}
			for i, ch := range results {
				for range tc.split[i] {
					if r := testsync.Recv(t, "a woken waiter", ch); r.Err != nil || string(r.Val) != "hello" {
						t.Fatalf("waiter got %q, %v", r.Val, r.Err)
					}
				}
			}
			if n, err := nodes[0].Signal(ctx, "abc", nil); n != 0 || err != nil {
				t.Fatalf("second Signal = %d, %v; want 0 (not sticky)", n, err)
			}
		})
	}
}

// TestJoinLongerThanHeartbeats: a node whose join takes longer than the
// three heartbeats after which a silent node is forgotten (a gather timeout
// of six heartbeats) is still known to the others when its New returns: a
// Signal sent there at once counts the new node's waiter, and the waiter
// receives it.
func TestJoinLongerThanHeartbeats(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	ctx := context.Background()
	opts := func(name string) Options {
		return Options{URL: ts.url(), Name: name, SubjectPrefix: newPrefix(), GatherTimeout: 1500 * time.Millisecond, Heartbeat: 250 * time.Millisecond}
	}
	oa := opts("a")
	a, err := New(oa)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	ob := opts("b")
	ob.SubjectPrefix = oa.SubjectPrefix
	b, err := New(ob)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	res := coretest.Park(t, b, ctx, "s", runner.NoTimeout, 1)
	if n, err := a.Signal(ctx, "s", []byte("v")); n != 1 || err != nil {
		t.Fatalf("Signal on a right after b joined = %d, %v; want 1 (b's waiter)", n, err)
	}
	testsync.Recv(t, "b's waiter", res)
}

// TestSignalAtLeastAcrossNodes: a pending SignalAtLeast is served by waiters
// arriving on any node, and its count is exact.
func TestSignalAtLeastAcrossNodes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	nodes := soloCluster(t, 3)
	early := coretest.Park(t, nodes[1], ctx, "go", runner.NoTimeout, 1)
	type res struct {
		n   int
		err error
	}
	done := make(chan res, 1)
	go func() {
		n, err := nodes[0].SignalAtLeast(ctx, "go", []byte("v"), 4)
		done <- res{n, err}
	}()
	if r := testsync.Recv(t, "the early waiter", early); string(r.Val) != "v" {
		t.Fatalf("early waiter got %q, %v", r.Val, r.Err)
	}
	// Late waiters, one on each node, take the value without a Signal.
	for _, c := range []*Core{nodes[2], nodes[1], nodes[0]} {
		testsync.WaitFor(t, "pending on the node", func() bool { return c.Stats().PendingSignals > 0 })
		v, err := c.WaitForSignal(ctx, "go", 20*time.Second)
		if err != nil || string(v) != "v" {
			t.Fatalf("late waiter got %q, %v", v, err)
		}
	}
	r := testsync.Recv(t, "SignalAtLeast", done)
	if r.err != nil || r.n != 4 {
		t.Fatalf("SignalAtLeast = %d, %v; want 4, nil", r.n, r.err)
	}
	for i, c := range nodes {
		testsync.WaitFor(t, fmt.Sprint("node ", i, " not pending"), func() bool { return c.Stats().PendingSignals == 0 })
	}
}

// TestPubSubAcrossNodes: every node sees the same topic log with the same
// sequence numbers, and a long poll on one node is woken by a publish on
// another.
func TestPubSubAcrossNodes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	nodes := soloCluster(t, 2)
	a, b := nodes[0], nodes[1]
	coretest.PublishN(t, a, "chat", 1, 2)
	coretest.PublishN(t, b, "chat", 3, 3)
	sub, err := b.Subscribe(ctx, "chat", runner.FromOldest)
	if err != nil {
		t.Fatal(err)
	}
	if got := coretest.FetchSeqs(t, sub); !slices.Equal(got, coretest.SeqRange(1, 3)) {
		t.Fatalf("Fetch on b = %v, want 1..3", got)
	}
	polled := make(chan []runner.Message, 1)
	go func() { m, _ := sub.Fetch(ctx); polled <- m }()
	testsync.WaitFor(t, "long poll parked on b", func() bool { return b.Stats().Fetching == 1 })
	coretest.PublishN(t, a, "chat", 4, 4)
	if m := testsync.Recv(t, "the long poll", polled); len(m) != 1 || m[0].Seq != 4 || string(m[0].Data) != "m4" {
		t.Fatalf("long poll on b got %+v, want m4 as 4", m)
	}
}

// TestNodeMissing: a node that died without leaving is waited for until the
// gather timeout, and the Signal says so with ErrNodesMissing, counting the
// nodes that answered.
func TestNodeMissing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	nodes := soloCluster(t, 3)
	res := coretest.Park(t, nodes[1], ctx, "x", runner.NoTimeout, 2)
	nodes[2].nc.Close() // dies: no leave message
	n, err := nodes[0].Signal(ctx, "x", []byte("v"))
	if n != 2 || !errors.Is(err, runner.ErrNodesMissing) || !strings.Contains(err.Error(), "1 of 2 other nodes") {
		t.Fatalf("Signal = %d, %v; want 2 and ErrNodesMissing naming 1 of 2 nodes", n, err)
	}
	for range 2 {
		testsync.Recv(t, "waiter", res)
	}
	if got := nodes[0].Stats().GatherMisses; got != 1 {
		t.Fatalf("gather misses %d, want 1", got)
	}
}

// TestCrossNodeLatency: each Signal that heard from every other live node
// counts its round trip in Stats().CrossNode (the histogram behind
// paster_core_cross_node_duration_seconds); one that missed a node is a
// gather miss, not a latency, and a Signal with no other node is neither.
func TestCrossNodeLatency(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	nodes := soloCluster(t, 3)
	for range 2 {
		if _, err := nodes[0].Signal(ctx, "x", nil); err != nil {
			t.Fatal(err)
		}
	}
	h := nodes[0].Stats().CrossNode
	if h.Count != 2 || h.Sum <= 0 || len(h.Counts) != len(h.Bounds) || h.Counts[len(h.Counts)-1] > h.Count {
		t.Fatalf("after two Signals heard by every node: %+v", h)
	}
	nodes[2].nc.Close() // dies: no leave message
	if _, err := nodes[0].Signal(ctx, "x", nil); !errors.Is(err, runner.ErrNodesMissing) {
		t.Fatalf("Signal with a node gone: %v", err)
	}
	if h := nodes[0].Stats().CrossNode; h.Count != 2 {
		t.Errorf("a Signal that missed a node counted as a latency: %+v", h)
	}
}

// TestServerLost kills the nats-server with waiters parked on two nodes:
// cross-node operations fail at once with ErrUnavailable, local Signals
// still wake local waiters, and after the server is back (same store) the
// nodes find each other again, cross-node Signals work and the topic goes on
// from where it was.
func TestServerLost(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	ctx := context.Background()
	nodes := cluster(t, ts, 2)
	a, b := nodes[0], nodes[1]
	coretest.PublishN(t, a, "log", 1, 3)
	onA := coretest.Park(t, a, ctx, "s", runner.NoTimeout, 1)
	// A long poll parked on a across the outage.
	poll, err := a.Subscribe(ctx, "log", runner.FromNow)
	if err != nil {
		t.Fatal(err)
	}
	polled := make(chan []runner.Message, 1)
	go func() { m, _ := poll.Fetch(ctx); polled <- m }()
	testsync.WaitFor(t, "the long poll parked", func() bool { return a.Stats().Fetching == 1 })
	onB := coretest.Park(t, b, ctx, "s", runner.NoTimeout, 1)

	ts.stop()
	testsync.WaitFor(t, "both nodes disconnected", func() bool { return !a.Connected() && !b.Connected() })
	n, err := b.Signal(ctx, "s", []byte("local"))
	if n != 1 || !errors.Is(err, runner.ErrUnavailable) {
		t.Fatalf("Signal without NATS = %d, %v; want 1 (the local waiter) and ErrUnavailable", n, err)
	}
	if r := testsync.Recv(t, "b's waiter", onB); string(r.Val) != "local" {
		t.Fatalf("b's waiter got %q, %v", r.Val, r.Err)
	}
	if _, err := a.Publish(ctx, "log", []byte("m4")); !errors.Is(err, runner.ErrUnavailable) {
		t.Fatalf("Publish without NATS = %v, want ErrUnavailable", err)
	}
	if _, err := a.Subscribe(ctx, "log", runner.FromOldest); !errors.Is(err, runner.ErrUnavailable) {
		t.Fatalf("Subscribe without NATS = %v, want ErrUnavailable", err)
	}
	if st := a.Stats(); st.Waiters != 1 {
		t.Fatalf("a's waiter did not stay parked: %+v", st)
	}

	ts.start()
	testsync.WaitFor(t, "both nodes reconnected", func() bool { return a.Connected() && b.Connected() })
	back := time.Now()
	testsync.WaitFor(t, "heartbeats after reconnection", func() bool { return heardSince(a, back) && heardSince(b, back) })
	if n, err := b.Signal(ctx, "s", []byte("remote")); n != 1 || err != nil {
		t.Fatalf("Signal after reconnection = %d, %v; want 1 (a's waiter)", n, err)
	}
	if r := testsync.Recv(t, "a's waiter", onA); string(r.Val) != "remote" {
		t.Fatalf("a's waiter got %q, %v", r.Val, r.Err)
	}
	coretest.PublishN(t, b, "log", 4, 4)
	if m := testsync.Recv(t, "the long poll parked across the outage", polled); len(m) != 1 || m[0].Seq != 4 {
		t.Fatalf("the long poll got %+v, want message 4", m)
	}
	sub, err := a.Subscribe(ctx, "log", runner.FromOldest)
	if err != nil {
		t.Fatal(err)
	}
	if got := coretest.FetchSeqs(t, sub); !slices.Equal(got, coretest.SeqRange(1, 4)) {
		t.Fatalf("after the restart the topic holds %v, want 1..4", got)
	}
	if a.Stats().Reconnects < 1 {
		t.Fatalf("reconnects not counted: %+v", a.Stats())
	}
}

// heardSince reports whether c heard from another node since t.
func heardSince(c *Core, t time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, at := range c.peers {
		if at.After(t) {
			return true
		}
	}
	return false
}

// TestNewFailsWithoutServer: no NATS at start is an error naming the URL.
func TestNewFailsWithoutServer(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "nats://" + l.Addr().String()
	l.Close()
	_, err = New(Options{URL: url})
	if err == nil || !strings.Contains(err.Error(), url) {
		t.Fatalf("New without a server = %v; want an error naming %s", err, url)
	}
}

// TestSignalAtLeastOriginDies: a node whose SignalAtLeast is pending dies
// without leaving; once it is no longer heard from, the other nodes stop
// serving its value to arriving waiters, which park as usual.
func TestSignalAtLeastOriginDies(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	nodes := soloCluster(t, 2)
	a, b := nodes[0], nodes[1]
	go a.SignalAtLeast(ctx, "p", []byte("v"), 5)
	testsync.WaitFor(t, "pending on b", func() bool { return b.Stats().PendingSignals == 1 })
	a.nc.Close() // dies: no leave message
	testsync.WaitFor(t, "b no longer pending", func() bool { return b.Stats().PendingSignals == 0 })
	res := coretest.Park(t, b, ctx, "p", runner.NoTimeout, 1)
	if n, err := b.Signal(ctx, "p", []byte("w")); n != 1 || err != nil {
		t.Fatalf("Signal on b = %d, %v; want 1", n, err)
	}
	if r := testsync.Recv(t, "b's waiter", res); string(r.Val) != "w" {
		t.Fatalf("b's waiter got %q, %v; want w (not the dead node's value)", r.Val, r.Err)
	}
}

// TestCloseQuiet: closing a Core is not a lost connection: it logs no
// "nats disconnected" warning (paster check, which closes the Core it
// made, printed one now and then), and nothing of the connection logs
// after Close returns.
func TestCloseQuiet(t *testing.T) {
	t.Parallel()
	ts := startServer(t)
	var logs testsync.Buffer
	c, err := New(Options{
		URL: ts.url(), Name: "quiet", SubjectPrefix: newPrefix(),
		Core: runner.CoreOptions{Logger: hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Info})},
	})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if s := logs.String(); strings.Contains(s, "disconnected") {
		t.Fatalf("Close logged:\n%s", s)
	}
}

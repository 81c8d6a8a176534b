package natscore

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/paster-dev/paster/internal/testsync"
	"github.com/paster-dev/paster/runner"
	"github.com/paster-dev/paster/runner/coretest"
)

// startCluster starts a NATS cluster of n servers with JetStream, routed to
// each other on loopback, and returns them.
func startCluster(t *testing.T, n int) []*testServer {
	t.Helper()
	var routes []string
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
		routes = append(routes, "nats://"+l.Addr().String())
		l.Close()
	}
	var out []*testServer
	for i := range n {
		ts := &testServer{t: t, store: t.TempDir()}
		ts.opts = server.Options{
			ServerName: fmt.Sprint("s", i), Host: "127.0.0.1", Port: -1,
			JetStream: true, StoreDir: ts.store, NoLog: true, NoSigs: true,
			Cluster: server.ClusterOpts{Name: "paster", Host: "127.0.0.1", Port: ports[i]},
			Routes:  server.RoutesFromStr(strings.Join(routes, ",")),
		}
		ts.start()
		t.Cleanup(ts.stop)
		out = append(out, ts)
	}
	return out
}

// TestCluster3: three paster nodes, each on its own server of a 3-server
// NATS cluster, with topics replicated on all three. Signals cross servers,
// every node reads the same log, and when one server dies its node
// reconnects to another and the log goes on without a lost message.
func TestCluster3(t *testing.T) {
	t.Parallel()
	servers := startCluster(t, 3)
	var urls []string
	for _, ts := range servers {
		urls = append(urls, ts.url())
	}
	prefix := newPrefix()
	ctx := context.Background()
	var nodes []*Core
	for i, ts := range servers {
		// Each node starts on its own server, the others listed for
		// failover; New fails until the cluster has a JetStream leader.
		url := strings.Join(append([]string{ts.url()}, slices.Delete(slices.Clone(urls), i, i+1)...), ",")
		var c *Core
		testsync.WaitFor(t, "JetStream cluster ready", func() bool {
			var err error
			c, err = New(Options{
				URL: url, Name: fmt.Sprint("node", i), SubjectPrefix: prefix, Replicas: 3,
				GatherTimeout: 2 * time.Second, Heartbeat: 100 * time.Millisecond,
				NATS: []nats.Option{nats.DontRandomize(), nats.ReconnectWait(20 * time.Millisecond)},
			})
			return err == nil
		})
		t.Cleanup(func() { c.Close() })
		nodes = append(nodes, c)
	}
	for _, c := range nodes {
		testsync.WaitFor(t, "nodes know each other", func() bool { return c.Peers() == 2 })
	}

	w1 := coretest.Park(t, nodes[1], ctx, "s", runner.NoTimeout, 2)
	w2 := coretest.Park(t, nodes[2], ctx, "s", runner.NoTimeout, 3)
	if n, err := nodes[0].Signal(ctx, "s", []byte("v")); n != 5 || err != nil {
		t.Fatalf("Signal across servers = %d, %v; want 5", n, err)
	}
	for range 2 {
		testsync.Recv(t, "waiter on node 1", w1)
	}
	for range 3 {
		testsync.Recv(t, "waiter on node 2", w2)
	}

	coretest.PublishN(t, nodes[0], "log", 1, 2)
	coretest.PublishN(t, nodes[1], "log", 3, 3)
	sub, err := nodes[2].Subscribe(ctx, "log", runner.FromOldest)
	if err != nil {
		t.Fatal(err)
	}
	if got := coretest.FetchSeqs(t, sub); !slices.Equal(got, coretest.SeqRange(1, 3)) {
		t.Fatalf("node 2 read %v, want 1..3", got)
	}

	servers[2].stop()
	testsync.WaitFor(t, "node 2 reconnected to another server", func() bool {
		return nodes[2].Connected() && nodes[2].nc.ConnectedUrl() != servers[2].url()
	})
	// Publishing needs the stream to have a leader again (two of three
	// servers are a quorum): wait until it answers, then the numbers go on.
	testsync.WaitFor(t, "the stream led again", func() bool {
		octx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		st, err := nodes[0].js.Stream(octx, nodes[0].streamName("log"))
		if err != nil {
			return false
		}
		_, err = st.Info(octx)
		return err == nil
	})
	coretest.PublishN(t, nodes[0], "log", 4, 4)
	if got := coretest.FetchSeqs(t, sub); !slices.Equal(got, []uint64{4}) {
		t.Fatalf("node 2 read %v after the failover, want [4]", got)
	}
}

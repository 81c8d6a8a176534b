package scenario

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
)

// TestCluster: two paster serve processes share a nats-server (started in
// this test process, JetStream on, store in a temporary directory) through
// the NATS core. A request parked on A is woken by a signal sent on B, which
// counts it; a chat post on B reaches a long poll on A with the sequence
// number B got.
func TestCluster(t *testing.T) {
	t.Parallel()
	ns, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(bounded) {
		t.Fatal("nats-server not ready")
	}
	vars := []string{"nats_url=" + ns.ClientURL(), "prefix=cluster"}
	a := serve(t, "cluster.ini", false, vars...)
	b := serve(t, "cluster.ini", false, vars...)

	t.Run("waiter on A, signal on B", func(t *testing.T) {
		w := startWait(t, a.url("/wait/"), waitingLine)
		// min=1: the first line is written before the wait parks, so
		// the signal stays pending until the waiter on A took it.
		if _, body := get(t, b.url("/wait/signal?message=across&min=1")); body != "Signalled 1 waiter(s)\n" {
			t.Fatalf("signal on B answered %q", body)
		}
		rest, err := w.rest()
		if err != nil || rest != "Someone signaled me with this message: across\n" {
			t.Fatalf("waiter on A ended with %q, %v", rest, err)
		}
		// Plain Signal (no min) counts the waiters of both nodes,
		// once each is parked, as A's and B's metrics say.
		var ws []*waiter
		for _, n := range []*server{a, a, b} {
			ws = append(ws, startWait(t, n.url("/wait/"), waitingLine))
		}
		waitParked(t, a, 2)
		waitParked(t, b, 1)
		if _, body := get(t, b.url("/wait/signal?message=all")); body != "Signalled 3 waiter(s)\n" {
			t.Fatalf("signal on B answered %q, want 3 (two on A, one on B)", body)
		}
		for _, w := range ws {
			if rest, err := w.rest(); err != nil || rest != "Someone signaled me with this message: all\n" {
				t.Fatalf("waiter ended with %q, %v", rest, err)
			}
		}
		// B's /metrics shows its connection, its peer, and the round
		// trip of the Signal it sent to A.
		_, metrics := get(t, b.url("/metrics"))
		for _, want := range []string{"paster_core_connected 1\n", "paster_core_peers 1\n", "paster_core_reconnects_total 0\n",
			"paster_core_gather_misses_total 0\n", "paster_core_cross_node_duration_seconds_count 1\n"} {
			if !strings.Contains(metrics, want) {
				t.Errorf("/metrics on B lacks %q", want)
			}
		}
		// Not sticky, on either node.
		if _, body := get(t, a.url("/wait/signal?message=lost")); body != "Signalled 0 waiter(s)\n" {
			t.Fatalf("signal without waiters answered %q", body)
		}
	})

	t.Run("chat post on B seen by a long poll on A", func(t *testing.T) {
		poll := make(chan string, 1)
		go func() {
			resp, err := client.Get(a.url("/chat/poll?since=0"))
			if err != nil {
				poll <- err.Error()
				return
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			poll <- string(body)
		}()
		// The poll may or may not be parked yet: since=0 returns the
		// message either way.
		resp, err := client.PostForm(b.url("/chat/post"), url.Values{"nick": {"bob"}, "text": {"hello from B"}})
		if err != nil {
			t.Fatal(err)
		}
		var posted struct{ Seq uint64 }
		json.NewDecoder(resp.Body).Decode(&posted)
		resp.Body.Close()
		if posted.Seq != 1 {
			t.Fatalf("post on B got seq %d, want 1", posted.Seq)
		}
		var got struct {
			Messages []struct {
				Seq  uint64
				Text string
			}
		}
		select {
		case body := <-poll:
			if err := json.Unmarshal([]byte(body), &got); err != nil || len(got.Messages) != 1 {
				t.Fatalf("long poll on A answered %q", body)
			}
		case <-time.After(bounded):
			t.Fatal("the long poll on A was not answered")
		}
		if m := got.Messages[0]; m.Seq != posted.Seq || m.Text != "hello from B" {
			t.Fatalf("A saw %+v, B posted seq %d", m, posted.Seq)
		}
		// Both nodes read the same log.
		_, body := get(t, b.url("/chat/poll?since=0"))
		if want := fmt.Sprintf(`"seq":%d`, posted.Seq); !strings.Contains(body, want) || !strings.Contains(body, "hello from B") {
			t.Fatalf("poll on B answered %s", body)
		}
	})
}

// waitParked polls s's /metrics until n requests wait for a signal there.
func waitParked(t *testing.T, s *server, n int) {
	t.Helper()
	want := fmt.Sprintf("paster_core_parked{kind=\"waiters\"} %d\n", n)
	deadline := time.Now().Add(bounded)
	for {
		_, body := get(t, s.url("/metrics"))
		if strings.Contains(body, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never showed %q:\n%s", s.addr, want, body)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestClusterExample serves the repository's cluster.ini as its comment
// says, on free ports and a temporary store: node a with NATS inside, node
// b joining it, a waiter on a woken by a signal on b.
func TestClusterExample(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	text, err := os.ReadFile("../cluster.ini")
	if err != nil {
		t.Fatal(err)
	}
	// The store goes to the temporary directory, not the checkout.
	ini := filepath.Join(dir, "cluster.ini")
	if err := os.WriteFile(ini, text, 0o644); err != nil {
		t.Fatal(err)
	}
	vars := []string{"a_port=" + freePort(t), "b_port=" + freePort(t), "nats_port=" + freePort(t)}
	a := start(t, "paster", false, append([]string{"serve", ini, "--server-name", "a"}, vars...)...)
	b := start(t, "paster", false, append([]string{"serve", ini, "--server-name", "b"}, vars...)...)
	w := startWait(t, a.url("/wait/"), waitingLine)
	waitParked(t, a, 1)
	if _, body := get(t, b.url("/wait/signal?message=hi")); body != "Signalled 1 waiter(s)\n" {
		t.Fatalf("signal on b answered %q", body)
	}
	if rest, err := w.rest(); err != nil || rest != "Someone signaled me with this message: hi\n" {
		t.Fatalf("waiter on a ended with %q, %v", rest, err)
	}
	if code, body := get(t, b.url("/health/ready")); code != 200 {
		t.Fatalf("b not ready: %d %s", code, body)
	}
}

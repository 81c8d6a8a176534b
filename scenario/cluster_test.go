package scenario

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestCluster: two paster serve processes share a nats-server (started in
// this test process, JetStream on, store in a temporary directory) through
// the NATS core. A request parked on A is woken by a signal sent on B, which
// counts it; 1000 waiters split over both nodes are woken by one signal
// that counts 1000; a SignalAtLeast on B stays pending on A, where late
// waiters receive its value, and counts exactly; a chat post on B reaches a
// long poll on A with the sequence number B got.
func TestCluster(t *testing.T) {
	t.Parallel()
	ns := startNATS(t, -1, t.TempDir())
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

	t.Run("1000 waiters over both nodes, one signal", func(t *testing.T) {
		const each = 500
		ws := make([]*waiter, 2*each)
		errs := make(chan error, len(ws))
		for i := range ws {
			n := a
			if i%2 == 1 {
				n = b
			}
			go func() {
				w, err := openWait(n.url("/wait/"), waitingLine)
				ws[i] = w
				errs <- err
			}()
		}
		for range ws {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		waitParked(t, a, each)
		waitParked(t, b, each)
		if _, body := get(t, a.url("/wait/signal?message=thousand")); body != "Signalled 1000 waiter(s)\n" {
			t.Fatalf("signal on A answered %q, want 1000 (500 on each node)", body)
		}
		for _, w := range ws {
			if rest, err := w.rest(); err != nil || rest != "Someone signaled me with this message: thousand\n" {
				t.Fatalf("a waiter ended with %q, %v", rest, err)
			}
		}
	})

	t.Run("SignalAtLeast across nodes", func(t *testing.T) {
		// One waiter parked on A; B signals with min=3 and stays
		// pending on both nodes; two waiters arriving on A then receive
		// the value without parking, and B counts exactly 3.
		first := startWait(t, a.url("/wait/"), waitingLine)
		waitParked(t, a, 1)
		signal := getLater(b.url("/wait/signal?message=least&min=3"))
		pending := "paster_core_parked{kind=\"pending_signals\"} 1\n"
		waitMetric(t, b, pending)
		waitMetric(t, a, pending)
		if rest, err := first.rest(); err != nil || rest != "Someone signaled me with this message: least\n" {
			t.Fatalf("the waiter parked before ended with %q, %v", rest, err)
		}
		for range 2 {
			w := startWait(t, a.url("/wait/"), waitingLine)
			if rest, err := w.rest(); err != nil || rest != "Someone signaled me with this message: least\n" {
				t.Fatalf("a late waiter on A ended with %q, %v", rest, err)
			}
		}
		select {
		case body := <-signal:
			if body != "Signalled 3 waiter(s)\n" {
				t.Fatalf("SignalAtLeast on B answered %q, want 3", body)
			}
		case <-time.After(bounded):
			t.Fatal("SignalAtLeast on B did not return")
		}
		// No longer pending anywhere: the next waiter parks.
		waitMetric(t, a, "paster_core_parked{kind=\"pending_signals\"} 0\n")
		parkAndSignal(t, a, b, "after")
	})

	t.Run("chat post on B seen by a long poll on A", func(t *testing.T) {
		poll := getLater(a.url("/chat/poll?since=0"))
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

// parkAndSignal parks a request on at (which has no other waiter), signals
// message from from, and checks that the signal counted 1 and the request
// received message.
func parkAndSignal(t *testing.T, at, from *server, message string) {
	t.Helper()
	w := startWait(t, at.url("/wait/"), waitingLine)
	waitParked(t, at, 1)
	if _, body := get(t, from.url("/wait/signal?message="+message)); body != "Signalled 1 waiter(s)\n" {
		t.Fatalf("signal on %s answered %q, want 1 (the waiter on %s)", from.addr, body, at.addr)
	}
	if rest, err := w.rest(); err != nil || rest != "Someone signaled me with this message: "+message+"\n" {
		t.Fatalf("the waiter on %s ended with %q, %v", at.addr, rest, err)
	}
}

// waitParked polls s's /metrics until n requests wait for a signal there.
func waitParked(t *testing.T, s *server, n int) {
	t.Helper()
	waitMetric(t, s, fmt.Sprintf("paster_core_parked{kind=\"waiters\"} %d\n", n))
}

// waitMetric polls s's /metrics until it shows the line want.
func waitMetric(t *testing.T, s *server, want string) {
	t.Helper()
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
// b joining it, a waiter on a woken by a signal on b; then a reloads with a
// core change and keeps its nats-server.
func TestClusterExample(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	text, err := os.ReadFile("../cluster.ini")
	if err != nil {
		t.Fatal(err)
	}
	// The store goes to the temporary directory, not the checkout, and
	// the ports of its [DEFAULT] become free ones (a_port=N on the command
	// line would not change what %(a_port)s means: PasteDeploy's rule).
	for _, k := range []string{"a_port = 8081", "b_port = 8082", "nats_port = 4222"} {
		name, _, _ := strings.Cut(k, " =")
		if !bytes.Contains(text, []byte("\n"+k+"\n")) {
			t.Fatalf("cluster.ini has no line %q", k)
		}
		text = bytes.Replace(text, []byte("\n"+k+"\n"), []byte("\n"+name+" = "+freePort(t)+"\n"), 1)
	}
	ini := filepath.Join(dir, "cluster.ini")
	if err := os.WriteFile(ini, text, 0o644); err != nil {
		t.Fatal(err)
	}
	a := start(t, "paster", false, "serve", ini, "--server-name", "a")
	b := start(t, "paster", false, "serve", ini, "--server-name", "b")
	parkAndSignal(t, a, b, "hi")
	if code, body := get(t, b.url("/health/ready")); code != 200 {
		t.Fatalf("b not ready: %d %s", code, body)
	}

	// A reload of a that changes its core section (not the embedded
	// server's keys) makes a new Core on the same nats-server, which the
	// old Core holds until it has drained: the reload succeeds, and both
	// ways still work.
	changed := strings.Replace(string(text), "gather_timeout = 250ms", "gather_timeout = 300ms", 1)
	if changed == string(text) {
		t.Fatal("cluster.ini has no gather_timeout = 250ms")
	}
	if err := os.WriteFile(ini, []byte(changed), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := a.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	a.waitLog(regexp.MustCompile(`\b(reloaded: generation=2|reload failed)\b`))
	if failed := a.log.all(regexp.MustCompile(`reload failed.*`)); len(failed) > 0 {
		t.Fatalf("a's reload: %s", failed[0][0])
	}
	a.waitLog(regexp.MustCompile(`generation drained: generation=1\b`))
	parkAndSignal(t, a, b, "after")
	parkAndSignal(t, b, a, "back")
}

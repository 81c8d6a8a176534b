package scenario

import (
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

	natsserver "github.com/nats-io/nats-server/v2/server"
)

// startNATS starts a nats-server in the test process with JetStream on, on
// port (-1: any free port) and keeping its streams in store; it is shut down
// when the test ends.
func startNATS(t *testing.T, port int, store string) *natsserver.Server {
	t.Helper()
	ns, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: store, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(bounded) {
		t.Fatal("nats-server not ready")
	}
	return ns
}

// waitStatus polls path on s until it answers code.
func waitStatus(t *testing.T, s *server, path string, code int) {
	t.Helper()
	deadline := time.Now().Add(bounded)
	for {
		got, body := get(t, s.url(path))
		if got == code {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s%s answered %d, never %d: %s", s.addr, path, got, code, body)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// post posts a chat message on s and returns the status and body.
func post(t *testing.T, s *server, text string) (int, string) {
	t.Helper()
	resp, err := client.PostForm(s.url("/chat/post"), url.Values{"nick": {"n"}, "text": {text}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	return resp.StatusCode, readAll(t, resp.Body)
}

// postSeq posts a chat message on s and returns its sequence number.
func postSeq(t *testing.T, s *server, text string) uint64 {
	t.Helper()
	code, body := post(t, s, text)
	var posted struct{ Seq uint64 }
	if err := json.Unmarshal([]byte(body), &posted); code != 200 || err != nil {
		t.Fatalf("post %q on %s: %d %s", text, s.addr, code, body)
	}
	return posted.Seq
}

// TestClusterNATSLost kills the nats-server two paster serve processes share
// while a request is parked on A, and starts it again on the same port and
// store. While it is down both nodes report not ready, a signal and a chat
// post fail at once with the Core's ErrUnavailable (not after a gather
// timeout), and a signal on A still wakes A's parked request. Once it is
// back, without restarting either node, both are ready again, count the
// reconnection, a signal on B wakes a request on A, and the chat log goes on
// from where it was: no message lost, sequence numbers dense.
func TestClusterNATSLost(t *testing.T) {
	t.Parallel()
	port, store := 0, t.TempDir()
	fmt.Sscan(freePort(t), &port)
	ns := startNATS(t, port, store)
	vars := []string{"nats_url=" + ns.ClientURL(), "prefix=lost"}
	a := serve(t, "cluster.ini", false, vars...)
	b := serve(t, "cluster.ini", false, vars...)
	for _, n := range []*server{a, b} {
		waitMetric(t, n, "paster_core_peers 1\n")
	}
	if s1, s2 := postSeq(t, b, "one"), postSeq(t, a, "two"); s1 != 1 || s2 != 2 {
		t.Fatalf("posts before the loss got seqs %d, %d; want 1, 2", s1, s2)
	}
	parked := startWait(t, a.url("/wait/"), waitingLine)
	waitParked(t, a, 1)

	ns.Shutdown()
	ns.WaitForShutdown()
	for _, n := range []*server{a, b} {
		waitStatus(t, n, "/health/ready", 503)
	}
	if code, body := get(t, b.url("/wait/signal?message=lost")); code != 503 || !strings.Contains(body, "woke 0 on this node") || !strings.Contains(body, "core unavailable") {
		t.Fatalf("signal on B without NATS answered %d %q; want 503 naming core unavailable", code, body)
	}
	if code, body := post(t, b, "lost"); code != 503 || !strings.Contains(body, "core unavailable") {
		t.Fatalf("post on B without NATS answered %d %q; want 503 naming core unavailable", code, body)
	}
	// The request parked on A is still parked, and A's own signal wakes
	// it (the count is A's; the error says the others were not asked).
	waitParked(t, a, 1)
	if code, body := get(t, a.url("/wait/signal?message=local")); code != 503 || !strings.Contains(body, "woke 1 on this node") {
		t.Fatalf("signal on A without NATS answered %d %q; want its local waiter woken", code, body)
	}
	if rest, err := parked.rest(); err != nil || rest != "Someone signaled me with this message: local\n" {
		t.Fatalf("the request parked on A ended with %q, %v", rest, err)
	}

	startNATS(t, port, store)
	for _, n := range []*server{a, b} {
		waitStatus(t, n, "/health/ready", 200)
		waitMetric(t, n, "paster_core_reconnects_total 1\n")
		waitMetric(t, n, "paster_core_peers 1\n")
	}
	parkAndSignal(t, a, b, "back")
	if seq := postSeq(t, b, "three"); seq != 3 {
		t.Fatalf("post after the restart got seq %d, want 3", seq)
	}
	_, body := get(t, a.url("/chat/poll?since=0"))
	var got struct {
		Messages []struct {
			Seq  uint64
			Text string
		}
	}
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatalf("poll on A: %v: %s", err, body)
	}
	var seen []string
	for _, m := range got.Messages {
		seen = append(seen, fmt.Sprintf("%d:%s", m.Seq, m.Text))
	}
	if s := strings.Join(seen, " "); s != "1:one 2:two 3:three" {
		t.Fatalf("A's chat log after the restart: %s; want 1:one 2:two 3:three", s)
	}
}

// TestClusterReload reloads node A (SIGHUP) while requests are parked on
// it. A reload that leaves the core section alone keeps A's Core: the
// request parked before it is woken by a signal from B, which counts it. A
// reload that changes the core section (gather_timeout) gives the new
// generation a new Core, while the old generation drains with its own: a
// request parked before it (on the old Core, which still answers the other
// nodes) and one parked after it (on the new Core) are both woken by one
// signal from B, which counts 2; then the old generation drains, its Core
// leaves, and B knows one node again.
func TestClusterReload(t *testing.T) {
	t.Parallel()
	ns := startNATS(t, -1, t.TempDir())
	dir := t.TempDir()
	text, err := os.ReadFile(filepath.Join("testdata", "cluster.ini"))
	if err != nil {
		t.Fatal(err)
	}
	ini := filepath.Join(dir, "cluster.ini")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(ini, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A fixed port: a reload that changes the core restarts A's server,
	// which must find its socket again (port 0 would be a new one).
	text = []byte(strings.Replace(string(text), "port = 0", "port = "+freePort(t), 1))
	write(string(text))
	vars := []string{"nats_url=" + ns.ClientURL(), "prefix=reload"}
	a := start(t, "paster", false, append([]string{"serve", "--log-level", "debug", ini}, vars...)...)
	b := serve(t, "cluster.ini", false, vars...)
	for _, n := range []*server{a, b} {
		waitMetric(t, n, "paster_core_peers 1\n")
	}
	reload := func(gen int, from, to string) {
		t.Helper()
		if !strings.Contains(string(text), from) {
			t.Fatalf("cluster.ini has no %q", from)
		}
		text = []byte(strings.Replace(string(text), from, to, 1))
		write(string(text))
		if err := a.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		a.waitLog(regexp.MustCompile(fmt.Sprintf(`\breloaded: generation=%d\b`, gen)))
	}

	t.Run("without a core change", func(t *testing.T) {
		w := startWait(t, a.url("/wait/"), waitingLine)
		waitParked(t, a, 1)
		reload(2, "poll_timeout = 60", "poll_timeout = 59")
		if _, body := get(t, b.url("/wait/signal?message=kept")); body != "Signalled 1 waiter(s)\n" {
			t.Fatalf("signal on B after the reload answered %q, want 1", body)
		}
		if rest, err := w.rest(); err != nil || rest != "Someone signaled me with this message: kept\n" {
			t.Fatalf("the request parked before the reload ended with %q, %v", rest, err)
		}
		if n := len(a.log.all(regexp.MustCompile(`core's configuration changed`))); n != 0 {
			t.Fatalf("A logged %d core change(s)", n)
		}
	})

	t.Run("with a core change", func(t *testing.T) {
		before := startWait(t, a.url("/wait/"), waitingLine)
		waitParked(t, a, 1)
		reload(3, "gather_timeout = 5s", "gather_timeout = 4s")
		a.waitLog(regexp.MustCompile(`core's configuration changed.*generation=3`))
		// B knows A's two Cores until the old one leaves.
		waitMetric(t, b, "paster_core_peers 2\n")
		after := startWait(t, a.url("/wait/"), waitingLine)
		waitParked(t, a, 1) // on the new Core; /metrics shows the current one
		if _, body := get(t, b.url("/wait/signal?message=both")); body != "Signalled 2 waiter(s)\n" {
			t.Fatalf("signal on B answered %q, want 2 (one on each of A's Cores)", body)
		}
		for _, w := range []*waiter{before, after} {
			if rest, err := w.rest(); err != nil || rest != "Someone signaled me with this message: both\n" {
				t.Fatalf("a request parked on A ended with %q, %v", rest, err)
			}
		}
		a.waitLog(regexp.MustCompile(`generation drained: generation=2\b`))
		waitMetric(t, b, "paster_core_peers 1\n")
		parkAndSignal(t, a, b, "new")
	})
}

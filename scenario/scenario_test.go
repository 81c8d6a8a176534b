package scenario

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

const waitingLine = "I'm waiting for some signal<br>\n"

// TestScenarios runs the acceptance scenarios of issue 4 against one paster
// process serving testdata/scenario.ini. The subtests use distinct signal
// names and topics, so they could run in any order.
func TestScenarios(t *testing.T) {
	s := serve(t, "scenario.ini", false)

	t.Run("wait_app signalled", func(t *testing.T) {
		w := startWait(t, s.url("/wait/"), waitingLine)
		// The first line arrived while the request waits; only now is
		// the signal sent.
		_, body := get(t, s.url("/wait/signal?message="+url.QueryEscape("<hi & bye>")+"&min=1"))
		if body != "Signalled 1 waiter(s)\n" {
			t.Fatalf("signal answered %q", body)
		}
		rest, err := w.rest()
		if err != nil {
			t.Fatal(err)
		}
		if want := "Someone signaled me with this message: &lt;hi &amp; bye&gt;\n"; rest != want {
			t.Fatalf("wait page ended with %q, want %q", rest, want)
		}
	})

	t.Run("wait_app times out", func(t *testing.T) {
		w := startWait(t, s.url("/short/"), waitingLine)
		rest, err := w.rest()
		if err != nil {
			t.Fatal(err)
		}
		if rest != "Your time is up !\n" {
			t.Fatalf("wait page ended with %q", rest)
		}
	})

	t.Run("signal from another plugin", func(t *testing.T) {
		// No waiter: the signal is lost, and says so.
		if _, body := get(t, s.url("/b-other/signal?message=lost")); body != "Signalled 0 waiter(s)\n" {
			t.Fatalf("signal without waiters answered %q", body)
		}
		w1 := startWait(t, s.url("/b/"), waitingLine)
		w2 := startWait(t, s.url("/b/"), waitingLine)
		// Sent from paster-plugin-scentest; the waiters are parked in
		// paster-plugin-waitapp. min=2 makes the count deterministic.
		if _, body := get(t, s.url("/b-other/signal?message=from-scentest&min=2")); body != "Signalled 2 waiter(s)\n" {
			t.Fatalf("signal answered %q", body)
		}
		for _, w := range []*waiter{w1, w2} {
			rest, err := w.rest()
			if err != nil || rest != "Someone signaled me with this message: from-scentest\n" {
				t.Fatalf("waiter got %q (%v)", rest, err)
			}
		}
	})

	t.Run("1000 waiters one signal", func(t *testing.T) {
		const n = 1000
		waiters := make([]*waiter, n)
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range waiters {
			wg.Add(1)
			go func() {
				defer wg.Done()
				w, err := openWait(s.url("/many/"), waitingLine)
				if err != nil {
					errs <- err
					return
				}
				waiters[i] = w
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		if _, body := get(t, s.url(fmt.Sprintf("/many/signal?message=all&min=%d", n))); body != fmt.Sprintf("Signalled %d waiter(s)\n", n) {
			t.Fatalf("signal answered %q", body)
		}
		var bad []string
		var mu sync.Mutex
		for _, w := range waiters {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rest, err := w.rest()
				if err != nil || rest != "Someone signaled me with this message: all\n" {
					mu.Lock()
					bad = append(bad, fmt.Sprintf("%q (%v)", rest, err))
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if len(bad) > 0 {
			t.Fatalf("%d of %d waiters were not signalled, e.g. %s", len(bad), n, bad[0])
		}
	})

	t.Run("pubsub across plugins", func(t *testing.T) { testPubSub(t, s) })

	t.Run("upload in chunks", func(t *testing.T) {
		body := strings.Repeat("0123456789abcdef", 10000) // 160,000 bytes, many chunks
		resp, err := client.Post(s.url("/upload/"), "application/octet-stream", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		got := readAll(t, resp.Body)
		sum := sha256.Sum256([]byte(body))
		if resp.StatusCode != 200 || !strings.Contains(got, "160000") || !strings.Contains(got, hex.EncodeToString(sum[:])) {
			t.Fatalf("upload answered %d %q, want the size 160000 and sha256 %x", resp.StatusCode, got, sum)
		}
	})

	t.Run("stalled upload times out", func(t *testing.T) {
		c, err := net.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(bounded))
		// Promise 100,000 bytes, send 10,000 and stall.
		fmt.Fprintf(c, "POST /upload-stall/ HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n%s", strings.Repeat("x", 10000))
		br := bufio.NewReader(c)
		status, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(status, "HTTP/1.1 408 ") {
			t.Fatalf("status line %q, want 408", status)
		}
	})

	t.Run("panicking coroutine restarted with backoff", func(t *testing.T) {
		// max_restarts = 3: three restarts, each after a backoff, then the
		// crash-loop limit.
		s.waitLog(regexp.MustCompile(`panicky: coroutine failed; crash-loop limit reached, not restarting:.*panic.*consecutive_failures=4`))
		restarts := s.log.all(regexp.MustCompile(`panicky: coroutine failed; restarting:.*panicky coroutine panics, run ([0-9]+).*consecutive_failures=([0-9]+)`))
		if len(restarts) != 3 {
			t.Fatalf("%d restarts logged, want 3", len(restarts))
		}
		for i, m := range restarts {
			if m[1] != fmt.Sprint(i+1) || m[2] != fmt.Sprint(i+1) {
				t.Fatalf("restart %d: run %s, consecutive_failures %s", i+1, m[1], m[2])
			}
		}
		// The plugin itself went on serving.
		if code, _ := get(t, s.url("/ps/publish?topic=after-panic&data=x")); code != 200 {
			t.Fatalf("after the panics the plugin answers %d", code)
		}
	})
}

// testPubSub: the chat plugin publishes, the scentest plugin subscribes
// (from now, from the oldest retained message, from a dropped one), and the
// other way round; the server keeps 3 messages per topic.
func testPubSub(t *testing.T, s *server) {
	post := func(text string) uint64 {
		t.Helper()
		resp, err := client.PostForm(s.url("/chat/post"), url.Values{"nick": {"ann"}, "text": {text}})
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var r struct{ Seq uint64 }
		if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
			t.Fatal(err)
		}
		return r.Seq
	}
	type fetched struct {
		Seqs     []uint64
		Data     []string
		GapWant  uint64 `json:"gap_want"`
		GapFirst uint64 `json:"gap_first"`
		Error    string
	}
	fetch := func(from string) *waiter {
		t.Helper()
		return startWait(t, s.url("/ps/fetch?topic=chat&from="+from), "subscribed\n")
	}
	result := func(w *waiter) fetched {
		t.Helper()
		rest, err := w.rest()
		if err != nil {
			t.Fatal(err)
		}
		var f fetched
		if err := json.Unmarshal([]byte(rest), &f); err != nil {
			t.Fatalf("fetch answered %q: %v", rest, err)
		}
		return f
	}
	texts := func(f fetched) []string {
		var out []string
		for _, d := range f.Data {
			var m struct{ Text string }
			json.Unmarshal([]byte(d), &m)
			out = append(out, m.Text)
		}
		return out
	}

	// A subscriber from now, subscribed before the first message.
	now := fetch("now")
	if seq := post("m1"); seq != 1 {
		t.Fatalf("first post got seq %d", seq)
	}
	if f := result(now); fmt.Sprint(f.Seqs, texts(f)) != "[1] [m1]" {
		t.Fatalf("subscriber from now got %+v", f)
	}
	for i := 2; i <= 5; i++ {
		if seq := post(fmt.Sprintf("m%d", i)); seq != uint64(i) {
			t.Fatalf("post %d got seq %d", i, seq)
		}
	}
	// Late subscribers: from the oldest retained (3 are kept) and from a
	// message already dropped.
	if f := result(fetch("oldest")); fmt.Sprint(f.Seqs, texts(f)) != "[3 4 5] [m3 m4 m5]" {
		t.Fatalf("late subscriber from oldest got %+v", f)
	}
	if f := result(fetch("1")); f.GapWant != 1 || f.GapFirst != 3 {
		t.Fatalf("subscriber from a dropped message got %+v, want a gap from 1 to 3", f)
	}
	// The chat app sees the gap the same way.
	_, body := get(t, s.url("/chat/poll?since=0"))
	var poll struct {
		Messages []struct{ Seq uint64 }
		Next     uint64
		Gap      string
	}
	if err := json.Unmarshal([]byte(body), &poll); err != nil {
		t.Fatalf("poll answered %q", body)
	}
	if poll.Gap != "messages 1 to 2 were dropped" || len(poll.Messages) != 3 || poll.Next != 5 {
		t.Fatalf("chat poll since=0 answered %s", body)
	}
	// And the other way: scentest publishes, chat's long poll receives.
	poller := getLater(s.url("/chat/poll?since=5"))
	data := url.QueryEscape(`{"nick":"bot","text":"from scentest"}`)
	if _, body := get(t, s.url("/ps/publish?topic=chat&data="+data)); body != "6\n" {
		t.Fatalf("publish from scentest answered %q", body)
	}
	if got := <-poller; !strings.Contains(got, `"text":"from scentest"`) || !strings.Contains(got, `"next":6`) {
		t.Fatalf("chat poll since=5 answered %s", got)
	}
}

package scenario

import (
	"regexp"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
)

// TestDevelopmentShape serves testdata/development.ini, the shape of the
// repository's development.ini, with its main server (the chat plugin's
// hijacked_runner) and with --server-name plain (the built-in http
// runner): the wait page in one request, the signal from another, the
// heartbeat coroutine registered in the INI and the chat app's own roster
// coroutine running, the translogger logging, a WebSocket echoed.
func TestDevelopmentShape(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"main", "plain"} {
		t.Run(name, func(t *testing.T) {
			// A fixed port: paster serve learns that a server in a plugin
			// serves by probing the address its section names.
			s := serve(t, "development.ini", false, "--server-name", name, "test_port="+freePort(t))

			w := startWait(t, s.url("/wait/"), waitingLine)
			if _, body := get(t, s.url("/wait/signal?message=hi&min=1")); body != "Signalled 1 waiter(s)\n" {
				t.Fatalf("signal answered %q", body)
			}
			if rest, err := w.rest(); err != nil || rest != "Someone signaled me with this message: hi\n" {
				t.Fatalf("wait page ended with %q (%v)", rest, err)
			}

			// A WebSocket reaches the wsecho plugin through urlmap and
			// translogger, and with the main server through the chat
			// plugin's runner as well (two process hops).
			c, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(s.url("/echo"), "http"), nil)
			if err != nil {
				t.Fatalf("WebSocket to /echo: %v", err)
			}
			if err := c.WriteMessage(websocket.TextMessage, []byte("hi")); err != nil {
				t.Fatal(err)
			}
			if _, got, err := c.ReadMessage(); err != nil || string(got) != "hi" {
				t.Fatalf("echo: %q, %v", got, err)
			}
			c.Close()

			if name == "main" {
				// The heartbeat coroutine (egg:chat#ticker, startup = in
				// the main server section) publishes ticks to its topic.
				_, body := get(t, s.url("/heartbeat/poll?since=0"))
				if !strings.Contains(body, `"nick":"server"`) || !strings.Contains(body, `"text":"tick `) {
					t.Fatalf("heartbeat topic polled: %s", body)
				}
			}
			// The chat app's own coroutine runs, in the chat plugin,
			// supervised by the host.
			s.waitLog(regexp.MustCompile(`app:chat/roster: coroutine ready`))
			// translogger logs the requests.
			s.waitLog(regexp.MustCompile(`GET /wait/signal\?message=hi`))

			if code := s.stop(); code != 0 {
				t.Fatalf("exit code %d", code)
			}
			if name == "main" {
				// The hijacked runner's own coroutine ran in the plugin.
				if len(s.log.all(regexp.MustCompile(`runner\.sched\.ticker`))) == 0 {
					t.Error("no log of the hijacked runner's ticker coroutine")
				}
			}
		})
	}
}

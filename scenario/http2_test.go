package scenario

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestHTTP2ThroughPlugins: over HTTP/2 (TLS with ALPN, and h2c), with the
// app in a plugin process and the server built in or in a plugin process,
// a wait page streams its first line at once (flush), parks on the Core
// and is woken by a Signal sent on the same HTTP/2 connection; a client
// that cancels its request ends the parked wait in the plugin; and a
// WebSocket over HTTP/1.1 works beside it.
func TestHTTP2ThroughPlugins(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"main", "builtin", "h2c"} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := serve(t, "http2.ini", false, "--server-name", name, "test_port="+freePort(t))
			scheme, c, dialer := "https", (*http.Client)(nil), websocket.Dialer{}
			if name == "h2c" {
				scheme = "http"
				p := new(http.Protocols)
				p.SetUnencryptedHTTP2(true)
				c = &http.Client{Transport: &http.Transport{Protocols: p}}
			} else {
				// The self-signed certificate, trusted as its own root.
				conn, err := tls.Dial("tcp", s.addr, &tls.Config{InsecureSkipVerify: true})
				if err != nil {
					t.Fatal(err)
				}
				roots := x509.NewCertPool()
				roots.AddCert(conn.ConnectionState().PeerCertificates[0])
				conn.Close()
				c = &http.Client{Transport: &http.Transport{ForceAttemptHTTP2: true, TLSClientConfig: &tls.Config{RootCAs: roots}}}
				dialer.TLSClientConfig = &tls.Config{RootCAs: roots}
			}
			base := scheme + "://" + s.addr

			first := openH2Wait(t, c, base+"/wait/")
			second := openH2Wait(t, c, base+"/wait/")
			waitWaiters(t, c, base, 2)
			second.cancel()
			waitWaiters(t, c, base, 1)

			resp, err := c.Get(base + "/wait/signal?message=over-h2")
			if err != nil {
				t.Fatal(err)
			}
			if b := readAll(t, resp.Body); resp.ProtoMajor != 2 || b != "Signalled 1 waiter(s)\n" {
				t.Errorf("signal: %s %q, want HTTP/2 waking 1", resp.Proto, b)
			}
			resp.Body.Close()
			if got := readAll(t, first.r); got != "Someone signaled me with this message: over-h2\n" {
				t.Errorf("the parked request got %q", got)
			}
			first.cancel()

			ws, resp, err := dialer.Dial(strings.Replace(base, "http", "ws", 1)+"/echo/", nil)
			if err != nil {
				t.Fatalf("WebSocket: %v", err)
			}
			defer ws.Close()
			if resp.ProtoMajor != 1 {
				t.Errorf("WebSocket upgrade over %s", resp.Proto)
			}
			if err := ws.WriteMessage(websocket.TextMessage, []byte("beside h2")); err != nil {
				t.Fatal(err)
			}
			if _, msg, err := ws.ReadMessage(); err != nil || string(msg) != "beside h2" {
				t.Errorf("WebSocket echo %q, %v", msg, err)
			}
		})
	}
}

// h2Wait is a wait page being read over HTTP/2.
type h2Wait struct {
	r      *bufio.Reader
	cancel context.CancelFunc
}

// openH2Wait sends GET url with c and returns once the wait page's first
// line arrived over HTTP/2.
func openH2Wait(t *testing.T, c *http.Client, url string) *h2Wait {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), bounded)
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.ProtoMajor != 2 {
		t.Fatalf("GET %s over %s, want HTTP/2", url, resp.Proto)
	}
	w := &h2Wait{r: bufio.NewReader(resp.Body), cancel: cancel}
	if line, err := w.r.ReadString('\n'); err != nil || line != "I'm waiting for some signal<br>\n" {
		t.Fatalf("GET %s: first line %q (%v)", url, line, err)
	}
	return w
}

var waitersRE = regexp.MustCompile(`(?m)^paster_core_parked\{kind="waiters"\} (\d+)$`)

// waitWaiters polls /metrics until n requests wait on the Core.
func waitWaiters(t *testing.T, c *http.Client, base string, n int) {
	t.Helper()
	want := fmt.Sprint(n)
	deadline := time.Now().Add(bounded)
	last := ""
	for time.Now().Before(deadline) {
		resp, err := c.Get(base + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if m := waitersRE.FindSubmatch(b); m != nil {
			if last = string(m[1]); last == want {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("waiters %s, want %d", last, n)
}

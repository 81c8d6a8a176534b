package builtin

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/paster-dev/paster/runner/observe"
)

// echoUpgrade is an app that takes over its connection the way WebSocket
// libraries do: it asserts http.Hijacker and http.Flusher on the writer it
// gets (not http.ResponseController), reads the request body, answers 101
// itself and echoes lines until the client closes.
func echoUpgrade(t *testing.T) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := w.(http.Flusher); !ok {
			http.Error(w, fmt.Sprintf("%T is no http.Flusher", w), http.StatusInternalServerError)
			return
		}
		hj, ok := w.(http.Hijacker)
		if !ok {
			http.Error(w, fmt.Sprintf("%T is no http.Hijacker", w), http.StatusInternalServerError)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		c, brw, err := hj.Hijack()
		if err != nil {
			http.Error(w, "hijack: "+err.Error(), http.StatusInternalServerError)
			return
		}
		defer c.Close()
		fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\nX-Body: %s\r\n\r\n", body)
		brw.Flush()
		for {
			line, err := brw.ReadString('\n')
			if err != nil {
				return
			}
			brw.WriteString(line)
			if err := brw.Flush(); err != nil {
				t.Errorf("echo: %v", err)
				return
			}
		}
	})
}

// TestUpgradeThroughWrappers upgrades a connection (as a WebSocket
// handshake does) through each built-in filter and composite that wraps the
// ResponseWriter, and through all of them at once, on paster's HTTP server:
// the app must find http.Hijacker and http.Flusher on its writer, and the
// tunnel must carry bytes both ways. Requests with and without a body are
// sent, since limits wraps the writer only when there is a body.
func TestUpgradeThroughWrappers(t *testing.T) {
	t.Parallel()
	chains := []struct {
		name string
		wrap func(t *testing.T, app http.Handler) http.Handler
	}{
		{"gzip", func(t *testing.T, app http.Handler) http.Handler {
			h, err := gzipFactory(app, nil, localOf())
			if err != nil {
				t.Fatal(err)
			}
			return h
		}},
		{"translogger", func(t *testing.T, app http.Handler) http.Handler {
			h, err := transloggerFactory(app, map[string]string{"here": t.TempDir()}, localOf("output", "access.log"))
			if err != nil {
				t.Fatal(err)
			}
			return h
		}},
		{"limits", func(t *testing.T, app http.Handler) http.Handler {
			h, err := limitsFactory(app, nil, localOf("max_body_bytes", "1000"))
			if err != nil {
				t.Fatal(err)
			}
			return h
		}},
		{"cascade (not the last app)", func(t *testing.T, app http.Handler) http.Handler {
			return &cascade{apps: []http.Handler{app, http.NotFoundHandler()}, catch: map[int]bool{404: true}, maxReplay: CascadeMaxReplay}
		}},
		{"observe.Instrument", func(t *testing.T, app http.Handler) http.Handler {
			return observe.Instrument(observe.New(), "echo", app)
		}},
	}
	each := chains
	all := func(t *testing.T, app http.Handler) http.Handler {
		for _, c := range each {
			app = c.wrap(t, app)
		}
		return app
	}
	chains = append(chains, struct {
		name string
		wrap func(t *testing.T, app http.Handler) http.Handler
	}{"all of them", all})
	for _, c := range chains {
		for _, body := range []string{"", "hello"} {
			t.Run(fmt.Sprintf("%s/body=%q", c.name, body), func(t *testing.T) {
				t.Parallel()
				base := serveHTTP(t, c.wrap(t, echoUpgrade(t)))
				conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(20 * time.Second)) // a hang fails instead of blocking
				method := "GET"
				if body != "" {
					method = "POST"
				}
				fmt.Fprintf(conn, "%s /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\nContent-Length: %d\r\n\r\n%s", method, len(body), body)
				br := bufio.NewReader(conn)
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatal(err)
				}
				if resp.StatusCode != http.StatusSwitchingProtocols {
					b, _ := io.ReadAll(resp.Body)
					t.Fatalf("status %d: %s", resp.StatusCode, b)
				}
				if got := resp.Header.Get("X-Body"); got != body {
					t.Errorf("app read body %q, want %q", got, body)
				}
				for _, msg := range []string{"ping\n", "pong\n"} {
					io.WriteString(conn, msg)
					if got, err := br.ReadString('\n'); got != msg {
						t.Fatalf("echo of %q: %q, %v", msg, got, err)
					}
				}
			})
		}
	}
}

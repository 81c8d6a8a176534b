package scenario

import (
	"bufio"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// fileLimit is the open-file limit (soft and hard) the processes of
// TestConnectionFlood run under: low enough that a few dozen connections
// exhaust it.
const fileLimit = 64

// TestConnectionFlood drives a paster serve process (and a server runner
// inside a plugin) running under ulimit -n 64 with 150 idle keep-alive
// connections, then lets them go: the server must answer new requests
// without a reload. Without a cap (max_connections = 0) the accept loop
// runs into "too many open files" and must keep its socket; with the
// default cap (derived from the limit) or max_connections = 8 it must never
// get there: the connections beyond the cap wait in the listen backlog.
func TestConnectionFlood(t *testing.T) {
	t.Parallel()
	tests := []struct {
		server string
		// exhausted: the server is expected to run out of descriptors
		// (no cap); otherwise it must not.
		exhausted bool
		cap       int // the connection cap, when there is one
	}{
		{server: "uncapped", exhausted: true},
		{server: "plugin", exhausted: true},
		{server: "default", cap: fileLimit - 32}, // runner.DefaultMaxConnections under the limit
		{server: "capped", cap: 8},
	}
	emfile := regexp.MustCompile(`too many open files`)
	for _, tc := range tests {
		t.Run(tc.server, func(t *testing.T) {
			t.Parallel()
			// A fixed port: paster serve learns that a server in a plugin
			// serves by probing the address its section names.
			script := fmt.Sprintf(`ulimit -Sn %d && ulimit -Hn %d && exec "$0" "$@"`, fileLimit, fileLimit)
			cmd := exec.Command("sh", "-c", script, filepath.Join(bin, "paster"), "serve", "--log-level", "debug",
				"--server-name", tc.server, filepath.Join("testdata", "connlimit.ini"), "test_port="+freePort(t))
			s := startCmd(t, cmd, false)

			// 150 clients each send a request and keep their connection
			// open and idle, as keep-alive clients do.
			var conns []net.Conn
			defer func() {
				for _, c := range conns {
					c.Close()
				}
			}()
			for i := range 150 {
				c, err := net.DialTimeout("tcp", s.addr, bounded)
				if err != nil {
					t.Fatalf("dial %d: %v", i, err)
				}
				conns = append(conns, c)
				if _, err := fmt.Fprintf(c, "GET /live HTTP/1.1\r\nHost: flood\r\n\r\n"); err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
			}
			if tc.exhausted {
				s.waitLog(emfile)
			} else {
				// The first clients (the listen backlog is first in,
				// first out) are answered up to the cap: the server
				// then holds as many connections as it may and has
				// tried to take the next.
				for i, c := range conns[:tc.cap] {
					c.SetReadDeadline(time.Now().Add(bounded))
					if line, err := bufio.NewReader(c).ReadString('\n'); err != nil || !strings.HasPrefix(line, "HTTP/1.1 200") {
						t.Fatalf("flooding client %d: %q, %v", i, line, err)
					}
				}
			}
			for _, c := range conns {
				c.Close()
			}
			conns = nil

			// The clients have left; new requests are served, without a
			// reload.
			if code, _ := get(t, s.url("/live?after=flood")); code != 200 {
				t.Fatalf("GET /live after the flood: %d", code)
			}
			// translogger logs the request after any line about running
			// out of descriptors (one log stream, in order).
			s.waitLog(regexp.MustCompile(`GET /live\?after=flood`))
			if !tc.exhausted {
				for _, l := range s.log.all(emfile) {
					t.Errorf("the server ran out of file descriptors despite its connection cap: %s", l[0])
				}
			}
		})
	}
}

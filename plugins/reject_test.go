package plugins

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/internal/testsync"
)

// rejectLog is a host app that answers "served" and records what the
// server tells it of requests it answered itself (runner.RejectObserver).
type rejectLog struct {
	mu       sync.Mutex
	rejected []string
}

func (l *rejectLog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	io.WriteString(w, "served")
}

func (l *rejectLog) ObserveRejected(r *http.Request, code int) {
	l.mu.Lock()
	l.rejected = append(l.rejected, fmt.Sprintf("%d %s %s", code, r.Method, r.RequestURI))
	l.mu.Unlock()
}

func (l *rejectLog) list() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.rejected...)
}

// TestPluginServerReportsRejections: a server runner inside a plugin
// process tells the host app the requests it answered itself (413, 431,
// 400), as an in-process server does, so that paster serve's metrics and
// access log count them (issue 8.12); a client cannot fake such a report.
func TestPluginServerReportsRejections(t *testing.T) {
	t.Parallel()
	h := newHost(t, HostOptions{})
	d, err := h.Binary(bin("ptest"), entrypoints.Origin{})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	ln.Close()
	app := &rejectLog{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- d.Runners["clockrunner"](ctx, app, nil, entrypoints.NewLocal("host", "127.0.0.1", "port", port,
			"max_header_bytes", "4k", "max_body_bytes", "1k"))
	}()
	defer func() {
		cancel()
		<-done
	}()
	addr := net.JoinHostPort("127.0.0.1", port)
	send := func(head string) string {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return ""
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, head+"\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err.Error()
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return fmt.Sprintf("%d %s", resp.StatusCode, b)
	}
	testsync.WaitFor(t, "the plugin server to serve", func() bool {
		return send("GET / HTTP/1.1\r\nHost: h\r\nConnection: close") == "200 served"
	})
	if got := send("GET /spoof HTTP/1.1\r\nHost: h\r\nPaster-Rejected: 431\r\nConnection: close"); got != "200 served" {
		t.Errorf("a request with a Paster-Rejected header: %q, want it served", got)
	}
	send("POST /big HTTP/1.1\r\nHost: h\r\nContent-Length: 5000")
	send("GET /head?x=1 HTTP/1.1\r\nHost: h\r\nX-Big: " + strings.Repeat("z", 16<<10))
	send("NOT A REQUEST")
	want := "413 POST /big|431 GET /head?x=1|400  "
	testsync.WaitFor(t, "the rejections reported to the host app", func() bool {
		return strings.Join(app.list(), "|") == want
	})
}

package runner

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// rejectRecorder serves a few paths and records the rejections the server
// reports to it.
type rejectRecorder struct {
	mu   sync.Mutex
	seen []string // "CODE METHOD URI HOST REMOTE-IP"
}

const fake431 = "HTTP/1.1 431 Request Header Fields Too Large" + ownReplyHeaders + "431 Request Header Fields Too Large"

func (rr *rejectRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/mimic": // a body that is exactly net/http's reply, written alone
		w.Header().Set("Content-Length", fmt.Sprint(len(fake431)))
		w.(http.Flusher).Flush()
		io.WriteString(w, fake431)
		w.(http.Flusher).Flush()
	case "/hijack": // the reply written on a hijacked connection, after the handler returned
		c, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		go func() {
			io.WriteString(c, fake431)
			c.Close()
		}()
	default:
		io.WriteString(w, "ok")
	}
}

func (rr *rejectRecorder) ObserveRejected(r *http.Request, code int) {
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	rr.mu.Lock()
	rr.seen = append(rr.seen, fmt.Sprintf("%d %s %s %s %s", code, r.Method, r.RequestURI, r.Host, host))
	rr.mu.Unlock()
}

func (rr *rejectRecorder) list() []string {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	return append([]string(nil), rr.seen...)
}

// TestRejectObserver: the requests net/http answers itself (431, 400, 501)
// and the early 413 reach the handler's ObserveRejected with what is known
// of them, also for the second request of a kept-alive connection; a
// handler writing the very bytes of such a reply, on its response or on a
// hijacked connection, is not taken for one (issue 8.12).
func TestRejectObserver(t *testing.T) {
	t.Parallel()
	rr := &rejectRecorder{}
	s := serve(t, rr, "max_header_bytes", "4k", "max_body_bytes", "1k")
	big := strings.Repeat("y", 16<<10)
	send := func(reqs ...string) {
		t.Helper()
		c, err := net.Dial("tcp", s.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		for _, req := range reqs {
			if _, err := io.WriteString(c, req+"\r\n\r\n"); err != nil {
				return // the server closed after a rejection
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	send("GET /mimic HTTP/1.1\r\nHost: h")
	send("GET /hijack HTTP/1.1\r\nHost: h")
	send("GET /first HTTP/1.1\r\nHost: h1", "GET /second?x=1 HTTP/1.1\r\nHost: h2\r\nX-Big: "+big)
	send("NOT A REQUEST")
	send("GET /te HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: zstd")
	send("POST /body HTTP/1.1\r\nHost: h\r\nContent-Length: 2048")
	want := []string{
		"431 GET /second?x=1 h2 127.0.0.1",
		"400    127.0.0.1",
		"501 GET /te h 127.0.0.1",
		"413 POST /body h 127.0.0.1",
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(rr.list()) < len(want) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // polling for the report, which follows the reply
	}
	got := rr.list()
	sort.Strings(got) // each report follows its reply, so two may come in either order
	sort.Strings(want)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("rejections reported:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestRejectObserverTLS: over TLS (HTTP/1.1 and HTTP/2) and h2c a request whose
// header is over max_header_bytes is answered 431 and reported to the
// handler's ObserveRejected, as over plain HTTP: the access log and
// /metrics see it. Before, net/http answered it itself beneath the TLS
// layer, where paster cannot read its replies, and nothing was reported.
func TestRejectObserverTLS(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		h1   bool
		h2c  bool
		size int // of the X-Big header
	}{
		// Past net/http's own HTTP/1 limit (max_header_bytes + 4 KiB).
		{"HTTP/1.1", true, false, 10 << 10},
		// Past HTTP/2's advertised header list limit (max_header_bytes +
		// 320 bytes), which Go's client refuses to exceed.
		{"HTTP/2", false, false, 6 << 10},
		{"h2c", false, true, 6 << 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rr := &rejectRecorder{}
			keys, url, client := []string{"ssl_pem", "*"}, "https://", insecureClient(tc.h1)
			if tc.h2c {
				keys, url, client = []string{"h2c", "true"}, "http://", h2cClient()
			}
			s := serve(t, rr, append(keys, "max_header_bytes", "4k")...)
			req, err := http.NewRequest("GET", url+s.addr+"/big?x=1", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("X-Big", strings.Repeat("y", tc.size))
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
				t.Fatalf("status %d, want 431", resp.StatusCode)
			}
			if got := rr.list(); len(got) != 1 || !strings.HasPrefix(got[0], "431 GET /big?x=1 ") {
				t.Fatalf("rejections reported: %q, want one 431 for GET /big?x=1", got)
			}
			// A header under the limit is served.
			req.Header.Set("X-Big", strings.Repeat("y", 1<<10))
			resp, err = client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("a 1 KiB header: status %d, want 200", resp.StatusCode)
			}
		})
	}
}

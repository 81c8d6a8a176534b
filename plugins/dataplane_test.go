package plugins

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/paster-dev/paster/internal/testsync"
	"github.com/paster-dev/paster/plugins/internal/transport"
	"github.com/paster-dev/paster/runner"
)

// killPoint is where an exchange is when the plugin process is killed.
type killPoint struct {
	name string
	// start sends the request on c; ready returns once the exchange is at
	// the point (r reads c's response).
	start func(c net.Conn, id string) error
	ready func(t *testing.T, url string, r *bufio.Reader, id string) error
	// cutOK: a response cut short (or a connection closed without one) is
	// a right answer as well as 502.
	cutOK bool
	// streaming: the response has begun, so it must be cut.
	streaming bool
	// parked: the handler parks in WaitForSignal (counted on the Core).
	parked bool
}

func startedGate(t *testing.T, url string, _ *bufio.Reader, id string) error {
	if code, body := get(t, url+"/started?id="+id); code != 200 || body != "yes" {
		return fmt.Errorf("/started: %d %q", code, body)
	}
	return nil
}

var killPoints = []killPoint{
	{
		name: "head sent",
		start: func(c net.Conn, id string) error {
			_, err := io.WriteString(c, "GET /block?id="+id+" HTTP/1.1\r\nHost: x\r\n\r\n")
			return err
		},
		ready: startedGate,
	},
	{
		name: "body half-sent",
		start: func(c net.Conn, id string) error {
			_, err := io.WriteString(c, "POST /body?id="+id+" HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n"+strings.Repeat("b", 100000))
			return err
		},
		ready: startedGate,
		cutOK: true,
	},
	{
		name: "response streaming",
		start: func(c net.Conn, id string) error {
			_, err := io.WriteString(c, "GET /stream?id="+id+" HTTP/1.1\r\nHost: x\r\n\r\n")
			return err
		},
		ready: func(_ *testing.T, _ string, r *bufio.Reader, _ string) error {
			for {
				line, err := r.ReadString('\n')
				if err != nil {
					return err
				}
				if line == "first\n" {
					return nil
				}
			}
		},
		streaming: true,
	},
	{
		name: "parked in WaitForSignal",
		start: func(c net.Conn, _ string) error {
			_, err := io.WriteString(c, "GET /wait?name=never&timeout=1m HTTP/1.1\r\nHost: x\r\n\r\n")
			return err
		},
		parked: true,
	},
}

// TestKillMidExchange kills the plugin process while 1,000 exchanges (in
// four rounds) are at every point of their way: the request head sent and
// the handler running, the request body half-sent, the response streaming,
// the handler parked in WaitForSignal. Every client gets 502, or its
// response cut short where it had begun (a cut where the client was still
// sending), none hangs, the plugin is restarted and serves, and the host
// has as many goroutines and open files as before.
func TestKillMidExchange(t *testing.T) {
	// Not parallel: counts the process's goroutines and files.
	h := newHost(t, HostOptions{RestartBackoff: time.Millisecond, MaxRestarts: 100})
	core := runner.NewCore(runner.CoreOptions{})
	defer core.Close()
	h.SetCore(core)
	_, app := probeApp(t, h, "kill")
	srv := serve(t, app)
	addr := srv.Listener.Addr().String()
	mustGet(t, srv.URL+"/name", "kill")
	http.DefaultClient.CloseIdleConnections()
	runtime.GC()
	baseG, baseFD := runtime.NumGoroutine(), fdCount(t, "self")
	// The data plane's shared memory: mapped for the running plugin, and
	// unmapped for every killed one.
	baseMaps := arenaMappings(t)
	if baseMaps == 0 {
		t.Fatal("the data plane has no shared memory mapped")
	}

	const rounds, perRound = 4, 250
	for round := range rounds {
		pid := h.Plugins()[0].PID
		type exchange struct {
			point killPoint
			c     net.Conn
			r     *bufio.Reader
		}
		xs := make([]exchange, perRound)
		parked := 0
		var wg sync.WaitGroup
		errs := make(chan error, perRound)
		for i := range xs {
			x := &xs[i]
			x.point = killPoints[i%len(killPoints)]
			if x.point.parked {
				parked++
			}
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
				t.Fatal(err)
			}
			x.c, x.r = c, bufio.NewReader(c)
			id := fmt.Sprintf("r%d-%d", round, i)
			wg.Go(func() {
				if err := x.point.start(c, id); err != nil {
					errs <- fmt.Errorf("%s: sending: %w", x.point.name, err)
					return
				}
				if x.point.ready != nil {
					if err := x.point.ready(t, srv.URL, x.r, id); err != nil {
						errs <- fmt.Errorf("%s: %w", x.point.name, err)
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		testsync.WaitFor(t, "the requests to park", func() bool { return core.Stats().Waiters == parked })
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}

		for i := range xs {
			x := &xs[i]
			wg.Go(func() {
				if err := answer(x.r, x.point); err != nil {
					t.Errorf("round %d, exchange %d (%s): %v", round, i, x.point.name, err)
				}
				x.c.Close()
			})
		}
		wg.Wait()
		if t.Failed() {
			return
		}
		testsync.WaitFor(t, "the restarted plugin", func() bool {
			p := h.Plugins()[0]
			return p.State == StateRunning && p.PID != pid
		})
		mustGet(t, srv.URL+"/name", "kill")
	}

	// Slack for the runtime's, go-plugin's and gRPC's own; a leak is one or
	// more per exchange.
	const slack = 5
	deadline := time.Now().Add(15 * time.Second)
	for {
		http.DefaultClient.CloseIdleConnections()
		g, fd, maps := runtime.NumGoroutine(), fdCount(t, "self"), arenaMappings(t)
		if g <= baseG+slack && fd <= baseFD+slack && maps <= baseMaps {
			t.Logf("after %d exchanges: %d goroutines, %d files, %d arena mappings; baseline %d, %d, %d", rounds*perRound, g, fd, maps, baseG, baseFD, baseMaps)
			break
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("after %d exchanges: %d goroutines, %d files, %d arena mappings; baseline %d, %d, %d\n%s", rounds*perRound, g, fd, maps, baseG, baseFD, baseMaps, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// arenaMappings counts the data plane's shared memory mapped in this
// process (transport.NewArena's memory files).
func arenaMappings(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Skip("no /proc")
	}
	return strings.Count(string(b), "memfd:paster-arena")
}

// answer reads the response of an exchange whose plugin was killed and
// says what is wrong with it.
func answer(r *bufio.Reader, p killPoint) error {
	if p.streaming {
		// The head and the first chunk were read: the connection must
		// end before the last chunk ("0\r\n\r\n"; after it, a
		// keep-alive connection would stay open).
		rest, err := io.ReadAll(r)
		var ne net.Error
		switch {
		case errors.As(err, &ne) && ne.Timeout():
			return errors.New("the response hung")
		case strings.Contains(string(rest), "\r\n0\r\n"):
			return fmt.Errorf("the response was complete: %q", rest)
		}
		return nil
	}
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		if p.cutOK && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isReset(err)) {
			return nil
		}
		return fmt.Errorf("reading the response: %w", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		return fmt.Errorf("got %d %q (%v), want 502", resp.StatusCode, body, err)
	}
	return nil
}

func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET)
}

// TestDataPlaneIsDefault: a plugin built with this SDK is reached through
// the data plane (transport.Mux), with no option asked for; gRPC streams are
// only the fallback for plugins whose manifest lacks DataPlane.
func TestDataPlaneIsDefault(t *testing.T) {
	t.Parallel()
	h := newHost(t, HostOptions{})
	_, srv := probe(t, h, "dp")
	mustGet(t, srv.URL+"/name", "dp")
	for _, p := range h.procList() {
		p.mu.Lock()
		g := p.cur
		p.mu.Unlock()
		if _, ok := g.http.(*transport.Mux); !ok {
			t.Fatalf("requests to %s go through %T, not the data plane", p.path, g.http)
		}
	}
}

// TestDataPlaneBrokenRestarts: a plugin that breaks the data-plane
// protocol is killed and restarted as after a crash. Here it stops reading
// (SIGSTOP) while the host has more to write to it than its sockets hold
// (requests with large headers), so that the host's writes wait past the
// stall (lowered for the test) and the connections fail, logged. The
// requests in flight get 502 (503 once the restart is under way), and the
// restarted plugin answers.
func TestDataPlaneBrokenRestarts(t *testing.T) {
	t.Parallel()
	h := newHost(t, HostOptions{RestartBackoff: time.Millisecond})
	h.dataStall = 2 * time.Second
	_, srv := probe(t, h, "broken")
	_, pid := get(t, srv.URL+"/pid")
	n, err := strconv.Atoi(pid)
	if err != nil {
		t.Fatal(err)
	}
	inflight := getLater(srv.URL + "/block?id=b")
	mustGet(t, srv.URL+"/started?id=b", "yes")
	if err := syscall.Kill(n, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(n, syscall.SIGCONT) })
	const big = 16
	pad := strings.Repeat("p", 256<<10)
	codes := make(chan int, big)
	for range big {
		go func() {
			req, err := http.NewRequest(http.MethodGet, srv.URL+"/name", nil)
			if err != nil {
				codes <- -1
				return
			}
			req.Header.Set("X-Pad", pad)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				codes <- -1
				return
			}
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
	}
	for range big {
		if code := testsync.Recv(t, "an answer", codes); code != http.StatusBadGateway && code != http.StatusServiceUnavailable {
			t.Errorf("a request to the stopped plugin got %d, want 502 or 503", code)
		}
	}
	if code := testsync.Recv(t, "the parked request's answer", inflight); code != http.StatusBadGateway {
		t.Errorf("the request parked in the stopped plugin got %d, want 502", code)
	}
	testsync.WaitFor(t, "the restarted plugin to serve", func() bool {
		code, _ := get(t, srv.URL+"/name")
		return code == http.StatusOK
	})
	if _, pid2 := get(t, srv.URL+"/pid"); pid2 == pid {
		t.Fatal("same pid after the restart")
	}
	for _, want := range []string{
		"data-plane peer broke the protocol, connection closed: the peer read nothing while a write waited",
		"plugin broke the data-plane protocol; killing it to restart it",
	} {
		if !strings.Contains(h.logs.String(), want) {
			t.Errorf("the host's log lacks %q", want)
		}
	}
}

package scenario

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// soakFileLimit is the RLIMIT_NOFILE paster runs under in TestSoakHostile:
// low enough that the idle-connection attack goes past it.
const soakFileLimit = 256

// TestSoakHostile mixes the attacks of issue 8 items 1, 2 and 8 with normal
// traffic, against a paster serve under a low file limit: twice the file
// limit in idle connections, hundreds of requests whose bodies are broken
// (malformed chunks, a client gone mid-body) to a plugin app, and a plugin
// coroutine flooding its output the whole time. Normal requests, on
// keep-alive connections opened before the attacks, must all succeed
// throughout; afterwards new connections are served without a reload, and
// the host's goroutines and file descriptors and the plugin's file
// descriptors return to their baseline; the flood reaches the host's log
// only rate-limited.
func TestSoakHostile(t *testing.T) {
	if testing.Short() {
		t.Skip("soak")
	}
	t.Parallel()
	script := fmt.Sprintf(`ulimit -Sn %d && ulimit -Hn %d && exec "$0" "$@"`, soakFileLimit, soakFileLimit)
	cmd := exec.Command("sh", "-c", script, filepath.Join(bin, "paster"), "serve", "--log-level", "debug", filepath.Join("testdata", "soak.ini"), "test_port="+freePort(t))
	s := startCmd(t, cmd, false)
	hostPID := s.cmd.Process.Pid

	// Normal traffic: keep-alive clients, connected before any attack.
	const workers = 4
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range workers {
		c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1}}
		path := []string{"/health/live", "/wait/signal?message=soak"}[i%2]
		if err := normalRequest(c, s.url(path)); err != nil {
			t.Fatalf("normal request before the attacks: %v", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.CloseIdleConnections()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := normalRequest(c, s.url(path)); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				} else {
					ok.Add(1)
				}
			}
		}()
	}

	baseFDs, baseGoroutines := countFDs(t, hostPID), hostGoroutines(t, s)
	pluginPID := healthPluginPID(t, s, "paster-plugin-upload")
	basePluginFDs := countFDs(t, pluginPID)

	// Item 1: idle connections, twice the file limit.
	var idle []net.Conn
	for range 2 * soakFileLimit {
		c, err := net.DialTimeout("tcp", s.addr, 2*time.Second)
		if err != nil {
			break // the backlog is full: what a client sees of a full server
		}
		idle = append(idle, c)
	}
	t.Logf("opened %d idle connections", len(idle))

	// Item 2: broken bodies to a plugin app, on their own connections.
	var bwg sync.WaitGroup
	for i := range 200 {
		bwg.Add(1)
		go func() {
			defer bwg.Done()
			brokenBody(s.addr, i%2 == 0)
		}()
		if i%20 == 19 {
			bwg.Wait()
		}
	}
	for _, c := range idle {
		c.Close()
	}
	bwg.Wait()

	// After the attacks, a new connection is served without a reload.
	var lastErr string
	waitUntil(t, "a new connection to be served after the attacks", func() bool {
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		err := normalRequest(c, s.url("/health/live"))
		if err != nil {
			lastErr = err.Error()
		}
		return err == nil
	}, &lastErr)
	close(stop)
	wg.Wait()
	if failed.Load() != 0 || ok.Load() == 0 {
		t.Errorf("normal traffic: %d ok, %d failed; first failure: %v", ok.Load(), failed.Load(), firstErr.Load())
	}

	// Resources back to baseline.
	var state string
	waitUntil(t, "host goroutines and FDs and plugin FDs back to baseline", func() bool {
		fds, gs, pfds := countFDs(t, hostPID), hostGoroutines(t, s), countFDs(t, pluginPID)
		state = fmt.Sprintf("host FDs %d (baseline %d), host goroutines %d (baseline %d), upload plugin FDs %d (baseline %d)", fds, baseFDs, gs, baseGoroutines, pfds, basePluginFDs)
		return fds <= baseFDs+8 && gs <= baseGoroutines+20 && pfds <= basePluginFDs+4
	}, &state)
	t.Log(state)

	// Item 8: the flood is rate-limited, and says so.
	flood, dropped := len(s.log.all(regexp.MustCompile(`flood \d+`))), len(s.log.all(regexp.MustCompile(`dropped`)))
	if dropped == 0 || flood > 100_000 {
		t.Errorf("the flooding plugin's output: %d lines relayed, %d lines report drops", flood, dropped)
	}
	t.Logf("normal requests: %d ok; flood lines relayed: %d", ok.Load(), flood)
}

// normalRequest GETs url and wants a 200 with a body.
func normalRequest(c *http.Client, url string) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 || len(b) == 0 {
		return fmt.Errorf("GET %s: %d %q", url, resp.StatusCode, b)
	}
	return nil
}

// brokenBody posts to the upload plugin a body that never completes: a
// malformed chunk (malformed) or a declared length the client abandons
// after a few bytes.
func brokenBody(addr string, malformed bool) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if malformed {
		io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n")
		io.Copy(io.Discard, c) // the server answers 400 and closes
		return
	}
	io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nonly a few bytes")
}

// countFDs counts the open file descriptors of pid.
func countFDs(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatalf("FDs of %d: %v", pid, err)
	}
	return len(ents)
}

// hostGoroutines reads the host's goroutine count from its pprof mount.
func hostGoroutines(t *testing.T, s *server) int {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(s.url("/debug/pprof/goroutine?debug=1"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`goroutine profile: total (\d+)`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("goroutine profile: %d %.200s", resp.StatusCode, b)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// healthPluginPID returns the pid /health/ reports for the plugin binary
// whose path ends in suffix.
func healthPluginPID(t *testing.T, s *server, suffix string) int {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(s.url("/health/"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct {
		Plugins []struct {
			Path string `json:"path"`
			PID  int    `json:"pid"`
		} `json:"plugins"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	for _, p := range doc.Plugins {
		if strings.HasSuffix(p.Path, suffix) && p.PID > 0 {
			return p.PID
		}
	}
	t.Fatalf("/health/ names no running %s: %+v", suffix, doc.Plugins)
	return 0
}

// waitUntil polls cond until it holds, failing the test after bounded with
// what *state last said.
func waitUntil(t *testing.T, what string, cond func() bool, state *string) {
	t.Helper()
	deadline := time.Now().Add(bounded)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s: %s", what, *state)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

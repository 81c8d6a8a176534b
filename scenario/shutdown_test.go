package scenario

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestShutdownWithParkedWaiters: SIGTERM while requests are parked in
// WaitForSignal (in a plugin, with a 60 s timeout) and an upload's body is
// still arriving. Every parked request gets a definite answer at once, the
// upload completes, the coroutines see their context cancelled and finish,
// paster exits 0 and no plugin process is left.
func TestShutdownWithParkedWaiters(t *testing.T) {
	t.Parallel()
	s := serve(t, "scenario.ini", false)
	pids := pluginPIDs(t, s)

	const n = 20
	waiters := make([]*waiter, n)
	for i := range waiters {
		waiters[i] = startWait(t, s.url("/wait/"), waitingLine)
	}

	// An upload in flight: its handler has started reading the body (the
	// server asked for it with 100 Continue) when SIGTERM arrives.
	payload := strings.Repeat("paster", 50000) // 300,000 bytes
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(bounded))
	fmt.Fprintf(c, "POST /upload/ HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n", len(payload))
	br := bufio.NewReader(c)
	if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "HTTP/1.1 100 ") {
		t.Fatalf("want 100 Continue, got %q (%v)", line, err)
	}
	br.ReadString('\n') // the empty line after 100 Continue
	half := len(payload) / 2
	if _, err := c.Write([]byte(payload[:half])); err != nil {
		t.Fatal(err)
	}

	mark := s.log.len()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if _, err := s.log.wait(regexp.MustCompile(`shutting down`), mark, s.done); err != nil {
		t.Fatal(err)
	}

	// Every parked request ends with a definite answer.
	var wg sync.WaitGroup
	answers := make([]string, n)
	for i, w := range waiters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rest, err := w.rest()
			if err != nil {
				rest = "error: " + err.Error()
			}
			answers[i] = rest
		}()
	}
	wg.Wait()
	for i, a := range answers {
		if !strings.HasPrefix(a, "Waiting ended: ") || !strings.Contains(a, "closed") {
			t.Errorf("parked request %d got %q, want a definite \"Waiting ended: ... closed\"", i, a)
		}
	}

	// The upload goes on and completes after SIGTERM.
	if _, err := c.Write([]byte(payload[half:])); err != nil {
		t.Fatalf("sending the rest of the upload after SIGTERM: %v", err)
	}
	status, err := br.ReadString('\n')
	if err != nil || !strings.HasPrefix(status, "HTTP/1.1 200 ") {
		t.Fatalf("upload after SIGTERM: status %q (%v)", status, err)
	}
	rest := readAll(t, br)
	sum := sha256.Sum256([]byte(payload))
	if !strings.Contains(rest, strconv.Itoa(len(payload))) || !strings.Contains(rest, hex.EncodeToString(sum[:])) {
		t.Fatalf("upload answered %q", rest)
	}

	if code := s.wait(); code != 0 {
		t.Fatalf("paster exited with %d, want 0", code)
	}
	if len(s.log.all(regexp.MustCompile(`worker saw its context cancelled; finishing`))) != 1 {
		t.Fatal("the worker coroutine did not log that it saw its context cancelled")
	}
	for _, pid := range pids {
		waitGone(t, pid)
	}
}

var pluginStartedRE = regexp.MustCompile(`\] paster\.([a-z]+): plugin started: path=\S+ pid=([0-9]+) version=`)

// pluginPIDs returns the process ids of the plugins s started, by dist.
func pluginPIDs(t *testing.T, s *server) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, m := range s.log.all(pluginStartedRE) {
		pid, _ := strconv.Atoi(m[2])
		out[m[1]] = pid
	}
	if len(out) == 0 {
		t.Fatal("no plugin start was logged")
	}
	return out
}

// waitGone waits until process pid no longer exists (or is a zombie
// awaiting its reaper), failing after bounded.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(bounded)
	for {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return
		}
		// Field 3 is the state; Z is a zombie (the process has exited).
		if f := strings.Fields(string(stat[strings.LastIndexByte(string(stat), ')')+1:])); len(f) > 0 && f[0] == "Z" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("plugin process %d is still running after paster exited", pid)
		}
		time.Sleep(10 * time.Millisecond) // bounded polling of /proc
	}
}

package scenario

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// parkedN is how many requests BenchmarkParkedWaiters holds parked at once.
const parkedN = 10000

// BenchmarkParkedWaiters holds 10,000 real HTTP requests (one TCP
// connection each) parked in WaitForSignal at once, in waitapp served by
// paster-benchhost, compiled in (inproc) or in its plugin process (plugin),
// then wakes them all with one Signal. Per round it reports:
//
//	B/parked      resident memory per parked request: the RSS of the server
//	              process (and, for plugin, the plugin process) with all
//	              10,000 parked, less its RSS idle before the first round,
//	              / 10,000
//	signal-ms     how long the one Signal request (GET /signal, which must
//	              answer that it woke 10,000) took to answer, while the
//	              woken requests are being answered
//	wake-all-ms   from sending the Signal until every request has its answer
//	              (each request's client waits for it from before the Signal)
//	server-cpu-ms CPU time the server's processes used meanwhile (both, for
//	              plugin)
//	client-cpu-ms CPU time this process (the clients) used meanwhile
//
// Run it alone, without -race (the race detector allows 8,128 goroutines):
//
//	go test -run '^$' -bench ParkedWaiters -benchtime 1x ./scenario
//
// It raises the open-files limit to the hard limit; 10,000 connections need
// about 10,100 descriptors in this process and in the server.
func BenchmarkParkedWaiters(b *testing.B) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	lim.Cur = lim.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	if lim.Cur < parkedN+500 {
		b.Skipf("open-files hard limit %d is below %d", lim.Max, parkedN+500)
	}
	for _, mode := range []string{"inproc", "plugin"} {
		b.Run(mode, func(b *testing.B) {
			s := start(b, "paster-benchhost", false, "-mode", mode, "-plugins", bin+"/plugins")
			// The idle server's memory, once: later rounds reuse what the
			// first one grew, so each round is measured against this.
			base := rss(b, benchStats(b, s).Pids)
			var signal, wake, serverCPU, clientCPU time.Duration
			var perReq float64
			for i := 0; i < b.N; i++ {
				r := parkRound(b, s, base)
				perReq += r.perReq
				signal += r.signal
				wake += r.wake
				serverCPU += r.serverCPU
				clientCPU += r.clientCPU
			}
			b.ReportMetric(perReq/float64(b.N), "B/parked")
			b.ReportMetric(float64(signal.Microseconds())/1000/float64(b.N), "signal-ms")
			b.ReportMetric(float64(wake.Microseconds())/1000/float64(b.N), "wake-all-ms")
			b.ReportMetric(float64(serverCPU.Microseconds())/1000/float64(b.N), "server-cpu-ms")
			b.ReportMetric(float64(clientCPU.Microseconds())/1000/float64(b.N), "client-cpu-ms")
		})
	}
}

type roundResult struct {
	perReq       float64
	signal, wake time.Duration
	// CPU time used during the wake-up: by the server's processes, and
	// by this one (the clients).
	serverCPU, clientCPU time.Duration
}

// cpuTime returns the CPU time the threads of pids have used so far (0 is
// this process), from /proc/PID/task/*/schedstat (nanoseconds on CPU).
func cpuTime(b *testing.B, pids ...int) time.Duration {
	b.Helper()
	var total time.Duration
	for _, pid := range pids {
		dir := fmt.Sprintf("/proc/%d/task", pid)
		if pid == 0 {
			dir = "/proc/self/task"
		}
		tasks, err := os.ReadDir(dir)
		if err != nil {
			b.Fatal(err)
		}
		for _, t := range tasks {
			data, err := os.ReadFile(dir + "/" + t.Name() + "/schedstat")
			if err != nil {
				continue // the thread ended meanwhile
			}
			if f := strings.Fields(string(data)); len(f) > 0 {
				ns, _ := strconv.ParseInt(f[0], 10, 64)
				total += time.Duration(ns)
			}
		}
	}
	return total
}

type stats struct {
	Waiters int
	Pids    []int
}

func benchStats(b *testing.B, s *server) stats {
	b.Helper()
	_, body := get(b, s.url("/stats"))
	var st stats
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		b.Fatalf("stats: %q: %v", body, err)
	}
	return st
}

// rss returns the summed resident set of pids, in bytes.
func rss(b *testing.B, pids []int) int64 {
	b.Helper()
	var total int64
	for _, pid := range pids {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			b.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				total += kb << 10
			}
		}
	}
	return total
}

func parkRound(b *testing.B, s *server, before int64) roundResult {
	b.Helper()
	b.StopTimer()
	st := benchStats(b, s)

	conns := make([]net.Conn, parkedN)
	readers := make([]*bufio.Reader, parkedN)
	work := make(chan int)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		mu.Unlock()
	}
	for w := 0; w < 64; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				c, err := net.Dial("tcp", s.addr)
				if err != nil {
					fail(err)
					continue
				}
				c.SetDeadline(time.Now().Add(5 * bounded))
				if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: bench\r\n\r\n")); err != nil {
					fail(err)
				}
				conns[i] = c
				readers[i] = bufio.NewReaderSize(c, 512)
			}
		}()
	}
	for i := range parkedN {
		work <- i
	}
	close(work)
	wg.Wait()
	if firstErr != nil {
		b.Fatal(firstErr)
	}
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	// startReading has a goroutine per request read until marker, and
	// returns once all have started; the function it returns waits for
	// them all to have read it.
	startReading := func(marker string) (wait func()) {
		var started, done sync.WaitGroup
		for i := range conns {
			started.Add(1)
			done.Add(1)
			go func() {
				defer done.Done()
				started.Done()
				if err := readTo(readers[i], marker); err != nil {
					fail(fmt.Errorf("request %d: %w", i, err))
				}
			}()
		}
		started.Wait()
		return func() {
			done.Wait()
			if firstErr != nil {
				b.Fatal(firstErr)
			}
		}
	}
	// Every request has its first line: it is at or in WaitForSignal.
	startReading("I'm waiting for some signal")()
	// Bounded polling of the Core until all are parked.
	deadline := time.Now().Add(bounded)
	for benchStats(b, s).Waiters != parkedN {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d requests parked after %v", benchStats(b, s).Waiters, parkedN, bounded)
		}
		time.Sleep(10 * time.Millisecond)
	}
	after := rss(b, st.Pids)

	// The clients wait for their answers before the Signal, as those of
	// a server do (reading only once the Signal has its own answer would
	// make the wake-up wait for that answer, and start 10,000 goroutines
	// in the time measured).
	answered := startReading("Someone signaled me with this message: go")
	server0, client0 := cpuTime(b, st.Pids...), cpuTime(b, 0)
	b.StartTimer()
	t0 := time.Now()
	_, body := get(b, s.url("/signal?message=go"))
	signal := time.Since(t0)
	if body != fmt.Sprintf("Signalled %d waiter(s)\n", parkedN) {
		b.Fatalf("the Signal answered %q, want %d woken", body, parkedN)
	}
	answered()
	wake := time.Since(t0)
	b.StopTimer()
	serverCPU, clientCPU := cpuTime(b, st.Pids...)-server0, cpuTime(b, 0)-client0
	return roundResult{perReq: float64(after-before) / parkedN, signal: signal, wake: wake, serverCPU: serverCPU, clientCPU: clientCPU}
}

// readTo reads r until marker has been read.
func readTo(r *bufio.Reader, marker string) error {
	var buf []byte
	for {
		line, err := r.ReadSlice('\n')
		buf = append(buf, line...)
		if bytes.Contains(buf, []byte(marker)) {
			return nil
		}
		if err != nil && err != bufio.ErrBufferFull {
			return err
		}
		if len(buf) > 4096 {
			buf = buf[len(buf)-len(marker):]
		}
	}
}

package runner

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// The serving-path benchmarks: the same hello handler behind plain net/http
// and behind HTTPServer, over real loopback sockets with keep-alive clients.
// Compare them with benchstat, or run bench/run.sh for the ratio under an
// external load generator.

var helloBody = []byte("Hello, world!\n")

func hello(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write(helloBody)
}

// benchGet gets http://addr/ with net/http's client on keep-alive
// connections.
func benchGet(b *testing.B, addr string) {
	b.Helper()
	url := "http://" + addr + "/"
	tr := &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := client.Get(url)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
	b.StopTimer()
}

func BenchmarkPlainNetHTTP(b *testing.B) { benchGet(b, startPlain(b)) }

func BenchmarkServeHello(b *testing.B) { benchGet(b, startServe(b)) }

// allocsPerRequest returns the allocations of the whole process per
// keep-alive GET / to addr, from a client that allocates nothing per
// request: the server's, when nothing else runs. Not for parallel tests.
func allocsPerRequest(t testing.TB, addr string) float64 {
	const n = 2000
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := []byte("GET / HTTP/1.1\r\nHost: " + addr + "\r\n\r\n")
	br := bufio.NewReaderSize(c, 4096)
	get := func() {
		if _, err := c.Write(req); err != nil {
			t.Fatal(err)
		}
		if err := readRawResponse(br); err != nil {
			t.Fatal(err)
		}
	}
	for range 100 { // the server's pools filled
		get()
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range n {
		get()
	}
	runtime.ReadMemStats(&after)
	return float64(after.Mallocs-before.Mallocs) / n
}

// startPlain serves the hello handler on a plain http.Server until the
// test ends and returns its address.
func startPlain(tb testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(hello), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	tb.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// startServe serves the hello handler on an HTTPServer with default
// settings until the test ends and returns its address.
func startServe(tb testing.TB) string { return startServeHandler(tb, http.HandlerFunc(hello)) }

// startServeHandler serves h on an HTTPServer with default settings until
// the test ends and returns its address.
func startServeHandler(tb testing.TB, h http.Handler) string {
	srv, err := NewHTTPServer(localOf("port", "0"), hclog.NewNullLogger())
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := srv.Listen()
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ServeListener(ctx, ln, h) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Error(err)
		}
	})
	return ln.Addr().String()
}

// rawGet sends GET / on keep-alive connections of its own and reads each
// response with a reader that allocates nothing per request, so that
// allocs/op (-benchmem) are the server's alone.
func rawGet(b *testing.B, addr string) {
	b.Helper()
	req := []byte("GET / HTTP/1.1\r\nHost: " + addr + "\r\nUser-Agent: paster-bench\r\n\r\n")
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Error(err)
			return
		}
		defer c.Close()
		br := bufio.NewReaderSize(c, 4096)
		for pb.Next() {
			if _, err := c.Write(req); err != nil {
				b.Error(err)
				return
			}
			if err := readRawResponse(br); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
}

// readRawResponse reads one 200 response with a Content-Length from br.
func readRawResponse(br *bufio.Reader) error {
	line, err := br.ReadSlice('\n')
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(line, []byte("HTTP/1.1 200 ")) {
		return fmt.Errorf("status line %q", line)
	}
	length := -1
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(line) <= 2 {
			break
		}
		if v, ok := bytes.CutPrefix(line, []byte("Content-Length: ")); ok {
			length = 0
			for _, c := range bytes.TrimSpace(v) {
				length = length*10 + int(c-'0')
			}
		}
	}
	if length < 0 {
		return errors.New("no Content-Length")
	}
	_, err = br.Discard(length)
	return err
}

// BenchmarkServerPlainNetHTTP and BenchmarkServerHello are
// BenchmarkPlainNetHTTP and BenchmarkServeHello with a client that
// allocates nothing: their allocs/op are the server's per request.
func BenchmarkServerPlainNetHTTP(b *testing.B) { rawGet(b, startPlain(b)) }

func BenchmarkServerHello(b *testing.B) { rawGet(b, startServe(b)) }

// TestServerAllocsPerRequest: a keep-alive GET costs an HTTPServer with
// its default settings (every limit on) no more allocations than plain
// net/http, so that bench/run.sh's gate (paster-http ÷ plain) is not lost
// to garbage. Not parallel: it counts the whole process's allocations.
func TestServerAllocsPerRequest(t *testing.T) {
	perRequest := func(addr string) float64 { return allocsPerRequest(t, addr) }
	plain := perRequest(startPlain(t))
	paster := perRequest(startServe(t))
	t.Logf("allocations per request: plain net/http %.2f, HTTPServer %.2f", plain, paster)
	if paster > plain+0.5 {
		t.Errorf("HTTPServer allocates %.2f times per request, plain net/http %.2f", paster, plain)
	}
}

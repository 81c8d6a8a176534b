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

func BenchmarkPlainNetHTTP(b *testing.B) { benchPlain(b, benchGet) }

func BenchmarkServeHello(b *testing.B) { benchServe(b, benchGet) }

// benchPlain runs get against the hello handler on a plain http.Server.
func benchPlain(b *testing.B, get func(*testing.B, string)) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(hello), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	get(b, ln.Addr().String())
}

// benchServe runs get against the hello handler on an HTTPServer with
// default settings.
func benchServe(b *testing.B, get func(*testing.B, string)) {
	srv, err := NewHTTPServer(localOf("port", "0"), hclog.NewNullLogger())
	if err != nil {
		b.Fatal(err)
	}
	ln, err := srv.Listen()
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ServeListener(ctx, ln, http.HandlerFunc(hello)) }()
	get(b, ln.Addr().String())
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
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
func BenchmarkServerPlainNetHTTP(b *testing.B) { benchPlain(b, rawGet) }

func BenchmarkServerHello(b *testing.B) { benchServe(b, rawGet) }

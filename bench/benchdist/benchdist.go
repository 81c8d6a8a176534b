// Package benchdist is the dist the benchmarks in bench/run.sh serve both
// compiled in and from its plugin binary (bench/cmd/paster-plugin-bench), so
// that a ratio of the two measures the plugin hop and nothing else.
//
//	[app:main]
//	use = egg:bench#main
//
// Its one app routes by path:
//
//	GET  /hello          "Hello, world!\n", as examples/hello
//	GET  /cpu            hashes 350 KiB before answering: about 200 µs of
//	                     CPU on the 2-CPU benchmark machine, the "handler
//	                     that does real work" of issue 12
//	POST /sink           reads the body and throws it away; answers its size
//	GET  /source?bytes=N writes N bytes (default 1 GiB) from one reused
//	                     buffer
//
// Neither sink nor source hashes or copies more than the transfer needs:
// they measure what carrying bytes costs.
package benchdist

import (
	"crypto/sha256"
	"io"
	"net/http"
	"strconv"

	"github.com/paster-dev/paster/entrypoints"
)

// Dist is the bench distribution: one app, main.
var Dist = &entrypoints.Dist{
	Name:    "bench",
	Version: "0.1.0",
	Apps:    map[string]entrypoints.AppFactory{"main": newApp},
}

// cpuWork is what /cpu hashes per request: 5 blocks of 70 KiB, about
// 200 µs of CPU with SHA-256 on the benchmark machine (sha256.Sum256 of
// 64 KiB: 36.5-37.6 µs with go test -bench, three runs). It was 5 blocks
// of 64 KiB, once measured at 41 µs a block but 183 µs of hashing per
// request on this machine now (perf: 169-170 µs in blockSHANI, in-process
// and in the plugin alike): lighter than issue 12's 200 µs handler. The
// heavier handler did not raise the plugin ÷ in-process ratio (same-run
// alternation of both, 8 to 32 connections: 0.844, 0.846, 0.837 with 64
// KiB, 0.841, 0.844, 0.824 with 70 KiB).
const (
	cpuBlocks    = 5
	cpuBlockSize = 70 << 10
)

// chunk is the buffer size source writes with and sink reads with.
const chunk = 64 << 10

var helloBody = []byte("Hello, world!\n")

func newApp(map[string]string, entrypoints.Local) (http.Handler, error) {
	block := make([]byte, cpuBlockSize)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write(helloBody)
	})
	mux.HandleFunc("GET /cpu", func(w http.ResponseWriter, _ *http.Request) {
		var sum [sha256.Size]byte
		for range cpuBlocks {
			sum = sha256.Sum256(block)
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte(strconv.Itoa(int(sum[0])) + "\n"))
	})
	mux.HandleFunc("POST /sink", func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, chunk)
		n, err := io.CopyBuffer(io.Discard, r.Body, buf)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte(strconv.FormatInt(n, 10) + "\n"))
	})
	mux.HandleFunc("GET /source", func(w http.ResponseWriter, r *http.Request) {
		size := int64(1 << 30)
		if v := r.URL.Query().Get("bytes"); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				http.Error(w, "bytes: want a non-negative integer", http.StatusBadRequest)
				return
			}
			size = n
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		buf := make([]byte, chunk)
		for size > 0 {
			n := min(size, int64(len(buf)))
			if _, err := w.Write(buf[:n]); err != nil {
				return
			}
			size -= n
		}
	})
	return mux, nil
}

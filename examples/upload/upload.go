// Package upload is cogen's asynchronous input example in Go: it reads the
// request body in chunks, each read bounded by a timeout, and reports the
// size and SHA-256 of what arrived, or why reading stopped.
//
//	[app:upload]
//	use = egg:upload#main
//	chunk_size = 8192     # bytes per read (default 8192)
//	read_timeout = 5      # seconds a single read may wait (default 5)
//
// POST / with any body answers 200 "read N bytes in C chunks" plus
// "sha256 HEX". A read that waits longer than read_timeout answers 408
// "timed out after N bytes"; a broken body answers 400 "read error after N
// bytes: ...". GET / shows a form (multipart/form-data, so the count
// includes the multipart envelope).
package upload

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/paster-dev/paster/entrypoints"
)

// Dist is the upload distribution: one app, main.
var Dist = &entrypoints.Dist{
	Name:    "upload",
	Version: "0.1.0",
	Apps:    map[string]entrypoints.AppFactory{"main": newApp},
}

const form = `<!doctype html><title>upload</title>
<form method="post" enctype="multipart/form-data"><input type="file" name="f"> <button>Upload</button></form>
<p>The answer counts the request body as sent: from this form, the file in its multipart envelope.
For the file's own size and sha256: curl --data-binary @FILE URL</p>
`

func newApp(_ map[string]string, local entrypoints.Local) (http.Handler, error) {
	size, err := local.Int("chunk_size", 8192)
	if err != nil {
		return nil, err
	}
	if size <= 0 {
		return nil, local.Errorf("chunk_size", "must be positive, not %d", size)
	}
	timeout, err := local.Duration("read_timeout", 5*time.Second)
	if err != nil {
		return nil, err
	}
	if timeout <= 0 {
		return nil, local.Errorf("read_timeout", "must be positive, not %s", timeout)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			io.WriteString(w, form)
			return
		}
		receive(w, r, size, timeout)
	}), nil
}

// chunk is one read's result.
type chunk struct {
	data []byte
	err  error
}

// receive reads r.Body chunk by chunk. One goroutine does the reads, so that
// a read blocked on a stalled client can be abandoned when its timeout
// passes; it ends when the body is closed after the handler returns.
func receive(w http.ResponseWriter, r *http.Request, size int, timeout time.Duration) {
	chunks := make(chan chunk)
	quit := make(chan struct{})
	defer close(quit)
	go func() {
		for {
			buf := make([]byte, size)
			n, err := r.Body.Read(buf)
			select {
			case chunks <- chunk{buf[:n], err}:
			case <-quit:
				return
			}
			if err != nil {
				return
			}
		}
	}()

	sum := sha256.New()
	var total, count int64
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	for {
		select {
		case c := <-chunks:
			if len(c.data) > 0 {
				sum.Write(c.data)
				total += int64(len(c.data))
				count++
			}
			switch {
			case errors.Is(c.err, io.EOF):
				fmt.Fprintf(w, "read %d bytes in %d chunks\nsha256 %s\n", total, count, hex.EncodeToString(sum.Sum(nil)))
				return
			case c.err != nil:
				w.WriteHeader(http.StatusBadRequest)
				fmt.Fprintf(w, "read error after %d bytes: %v\n", total, c.err)
				return
			}
			timer.Reset(timeout)
		case <-timer.C:
			w.Header().Set("Connection", "close")
			w.WriteHeader(http.StatusRequestTimeout)
			fmt.Fprintf(w, "timed out after %d bytes: no data for %s\n", total, timeout)
			return
		case <-r.Context().Done():
			return
		}
	}
}

package runner

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/paster-dev/paster/internal/testsync"
)

// TestHandlerTimeout serves handlers that never answer, or answer late,
// with handler_timeout = 200ms: each is bounded (503 if it had sent
// nothing, the connection ended if it had) and its context cancelled with
// cause http.ErrHandlerTimeout; a late write fails. A hijacked connection
// is the handler's and outlives the timeout.
func TestHandlerTimeout(t *testing.T) {
	t.Parallel()
	const timeout = 200 * time.Millisecond
	stuck := make(chan struct{})
	tests := []struct {
		name string
		// app gets a channel to report its context's cause or its late
		// write's error on, and the server's log.
		app func(report chan<- error, log *testsync.Buffer) http.HandlerFunc
		// check reads the response.
		check func(t *testing.T, resp *http.Response)
		want  error // reported by the app
	}{
		{
			name: "never answers: 503",
			app: func(report chan<- error, _ *testsync.Buffer) http.HandlerFunc {
				return func(w http.ResponseWriter, r *http.Request) {
					<-r.Context().Done()
					report <- context.Cause(r.Context())
				}
			},
			check: want503,
			want:  http.ErrHandlerTimeout,
		},
		{
			name: "ignores its context: 503 all the same, its late write fails",
			app: func(report chan<- error, _ *testsync.Buffer) http.HandlerFunc {
				return func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("X-Late", "yes")
					<-stuck // until the client has its answer
					_, err := w.Write([]byte("late"))
					report <- err
				}
			},
			check: func(t *testing.T, resp *http.Response) {
				want503(t, resp)
				if resp.Header.Get("X-Late") != "" {
					t.Errorf("the 503 carries the handler's header: %v", resp.Header)
				}
				close(stuck)
			},
			want: http.ErrHandlerTimeout,
		},
		{
			name: "response started: connection ended",
			app: func(report chan<- error, _ *testsync.Buffer) http.HandlerFunc {
				return func(w http.ResponseWriter, r *http.Request) {
					io.WriteString(w, "started\n")
					w.(http.Flusher).Flush()
					<-r.Context().Done()
					report <- context.Cause(r.Context())
				}
			},
			check: func(t *testing.T, resp *http.Response) {
				b, err := io.ReadAll(resp.Body)
				if resp.StatusCode != 200 || string(b) != "started\n" || err == nil {
					t.Errorf("got %d %q, %v; want 200, the started line, then the connection ended", resp.StatusCode, b, err)
				}
			},
			want: http.ErrHandlerTimeout,
		},
		{
			name: "hijacked connection outlives the timeout",
			app: func(report chan<- error, log *testsync.Buffer) http.HandlerFunc {
				return func(w http.ResponseWriter, r *http.Request) {
					c, brw, err := http.NewResponseController(w).Hijack()
					if err != nil {
						report <- err
						return
					}
					defer c.Close()
					// Until the timeout has passed and found the
					// connection hijacked.
					for deadline := time.Now().Add(30 * time.Second); !strings.Contains(log.String(), "timeout passed on a hijacked connection"); {
						if time.Now().After(deadline) {
							report <- errors.New("the timeout never found the connection hijacked")
							return
						}
						time.Sleep(10 * time.Millisecond)
					}
					brw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\nhijacked\n")
					brw.Flush()
					report <- r.Context().Err()
				}
			},
			check: func(t *testing.T, resp *http.Response) {
				b, err := io.ReadAll(resp.Body)
				if resp.StatusCode != 200 || string(b) != "hijacked\n" || err != nil {
					t.Errorf("got %d %q, %v; want the hijacking handler's answer", resp.StatusCode, b, err)
				}
			},
			want: nil,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			report := make(chan error, 1)
			var log atomic.Pointer[testsync.Buffer]
			app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { tc.app(report, log.Load())(w, r) })
			s := serve(t, app, "handler_timeout", timeout.String())
			log.Store(s.log)
			resp, err := newClient().Get(s.url)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			tc.check(t, resp)
			if got := testsync.Recv(t, "the handler's report", report); !errors.Is(got, tc.want) {
				t.Errorf("handler reported %v, want %v", got, tc.want)
			}
		})
	}
}

func want503(t *testing.T, resp *http.Response) {
	t.Helper()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(b), "handler_timeout (200ms)") {
		t.Errorf("got %d %q, want 503 naming handler_timeout", resp.StatusCode, b)
	}
}

// TestHandlerTimeoutStreams checks that a handler under handler_timeout
// that answers in time streams: a flushed chunk reaches the client while
// the handler still runs (http.TimeoutHandler would buffer it until the
// end), and trailers set at the end arrive.
func TestHandlerTimeoutStreams(t *testing.T) {
	t.Parallel()
	next := make(chan struct{})
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum")
		io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		select {
		case <-next:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "second\n")
		w.Header().Set("X-Sum", "42")
	})
	s := serve(t, app, "handler_timeout", "1m")
	resp, err := newClient().Get(s.url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	if line, err := br.ReadString('\n'); line != "first\n" || err != nil {
		t.Fatalf("first line %q, %v", line, err)
	}
	close(next)
	rest, err := io.ReadAll(br)
	if string(rest) != "second\n" || err != nil {
		t.Fatalf("rest %q, %v", rest, err)
	}
	if got := resp.Trailer.Get("X-Sum"); got != "42" {
		t.Errorf("trailer X-Sum = %q, want 42", got)
	}
}

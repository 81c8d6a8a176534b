package runner

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"

	"github.com/paster-dev/paster/internal/testsync"
)

// TestMaxConnections serves with max_connections = 3 and sends 7 requests
// at once, each on its own connection, to a handler that holds its request
// until the test lets go (or until all 7 are in, which only happens when
// the cap does not hold): at most 3 handlers run at once, and once they let
// go, the 4 connections that waited in the backlog are served too. Both on
// a socket of its own and on one from a ListenerPool.
func TestMaxConnections(t *testing.T) {
	t.Parallel()
	const limit, extra = 3, 4
	for _, pooled := range []bool{false, true} {
		t.Run(fmt.Sprintf("pooled=%v", pooled), func(t *testing.T) {
			t.Parallel()
			var (
				mu          sync.Mutex
				running     int
				most        int
				all         = make(chan struct{})
				release     = make(chan struct{})
				releaseOnce sync.Once
			)
			app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				running++
				most = max(most, running)
				if running == limit+extra {
					close(all)
				}
				mu.Unlock()
				select {
				case <-release:
				case <-all:
				}
				mu.Lock()
				running--
				mu.Unlock()
				io.WriteString(w, "done")
			})
			logger, _ := testLogger(t)
			srv, err := NewHTTPServer(localOf("port", "0", "max_connections", fmt.Sprint(limit)), logger)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			if pooled {
				pool := NewListenerPool()
				defer pool.Close()
				ctx = WithListeners(ctx, pool)
			}
			done := make(chan error, 1)
			go func() { done <- srv.Serve(ctx, app) }()
			defer func() {
				releaseOnce.Do(func() { close(release) })
				cancel()
				if err := <-done; err != nil {
					t.Errorf("Serve: %v", err)
				}
			}()
			<-srv.Bound()

			// Each request on a connection of its own, closed after it.
			client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
			results := make(chan string, limit+extra)
			for range limit + extra {
				go func() { results <- getString(client, "http://"+srv.Addr().String()) }()
			}
			testsync.WaitFor(t, "handlers up to the cap", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return running >= limit
			})
			releaseOnce.Do(func() { close(release) })
			for range limit + extra {
				if got := testsync.Recv(t, "a response", results); got != "done" {
					t.Errorf("response %q, want done", got)
				}
			}
			mu.Lock()
			defer mu.Unlock()
			if most > limit {
				t.Errorf("%d handlers ran at once with max_connections = %d", most, limit)
			}
		})
	}
}

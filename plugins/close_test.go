package plugins

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/internal/testsync"
)

// TestCloseGraceful: closing a host stops its plugin processes gracefully,
// with nothing logged: the process exiting on the host's request is not a
// crash, and its connection is closed once. (The host's goroutine waiting
// for the process to exit closed the go-plugin connection while
// client.Kill was closing it too; Kill then logged "error closing client
// during Kill" and "plugin failed to exit gracefully" and killed the
// process. Racy by nature: 16 hosts make it likely to show.)
func TestCloseGraceful(t *testing.T) {
	t.Parallel()
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			logs := &testsync.Buffer{}
			h := NewHost(HostOptions{PluginDirs: []string{binDir}, Logger: hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Warn})})
			if _, err := h.Binary(bin("hello"), entrypoints.Origin{}); err != nil {
				t.Error(err)
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := h.Close(ctx); err != nil {
				t.Errorf("Close: %v", err)
			}
			if s := logs.String(); strings.TrimSpace(s) != "" {
				t.Errorf("closing the host logged:\n%s", s)
			}
		}()
	}
	wg.Wait()
}

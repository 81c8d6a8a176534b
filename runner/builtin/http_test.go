package builtin

import (
	"context"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/paster-dev/paster/entrypoints"
)

// addrCatcher is a log output that reports the address of the first
// "serving" line: the race-free way to learn the port the runner bound.
type addrCatcher struct {
	once sync.Once
	addr chan string
}

var servingAddr = regexp.MustCompile(`serving: addr=(\S+)`)

func (a *addrCatcher) Write(p []byte) (int, error) {
	if m := servingAddr.FindSubmatch(p); m != nil {
		a.once.Do(func() { a.addr <- string(m[1]) })
	}
	return len(p), nil
}

// TestHTTPRunner swaps the default hclog logger, so it is not parallel.
func TestHTTPRunner(t *testing.T) {
	catcher := &addrCatcher{addr: make(chan string, 1)}
	// hclog.Default, not SetDefault's result: that is nil when no default
	// was made yet, and restoring nil leaves Default() nil for later tests.
	old := hclog.Default()
	hclog.SetDefault(hclog.New(&hclog.LoggerOptions{Output: catcher, Level: hclog.Info}))
	defer hclog.SetDefault(old)

	run := Dist.Runners["http"]
	if run == nil {
		t.Fatal("dist paster has no http runner")
	}
	if d := entrypoints.Default.Dist("paster"); d != Dist {
		t.Fatal("importing builtin did not register the dist")
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "hello") })
	go func() { done <- run(ctx, app, nil, localOf("port", "0", "shutdown_timeout", "5")) }()
	var addr string
	select {
	case addr = <-catcher.addr:
	case err := <-done:
		t.Fatalf("runner returned before serving: %v", err)
	}
	if status, body, _ := do(t, nil, newRequest(t, "GET", "http://"+addr+"/", nil)); status != 200 || body != "hello" {
		t.Errorf("got %d %q", status, body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("runner after a clean shutdown: %v", err)
	}

	// Errors: a bad key names it; a taken port names the address.
	if err := run(context.Background(), app, nil, localOf("port", "http")); err == nil || !strings.Contains(err.Error(), "[composite:main] port:") {
		t.Errorf("bad port: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	if err := run(context.Background(), app, nil, localOf("port", port)); err == nil || !strings.Contains(err.Error(), "127.0.0.1:"+port) {
		t.Errorf("taken port: %v", err)
	}
}

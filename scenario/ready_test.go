package scenario

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"syscall"
	"testing"
)

// TestReadinessGatesServing: a required coroutine in a plugin that is not
// ready keeps the server from binding; once it reports ready (across the
// plugin boundary) the server serves.
func TestReadinessGatesServing(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	gate := filepath.Join(t.TempDir(), "open")
	s := serve(t, "ready.ini", true, "test_port="+port, "gate_file="+gate)

	// The coroutine runs and waits for its file; the server must not
	// accept connections now.
	s.waitLog(regexp.MustCompile(`gate waiting for file`))
	if c, err := net.Dial("tcp", "127.0.0.1:"+port); err == nil {
		c.Close()
		t.Fatal("the server accepted a connection before its required coroutine was ready")
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial before ready: %v, want connection refused", err)
	}
	if len(s.log.all(servingRE)) != 0 {
		t.Fatal("the server logged serving before its required coroutine was ready")
	}

	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	s.waitServing()
	if s.addr != "127.0.0.1:"+port {
		t.Fatalf("serving on %s, want port %s", s.addr, port)
	}
	if code, body := get(t, s.url("/signal?message=x")); code != 200 || body != "Signalled 0 waiter(s)\n" {
		t.Fatalf("after ready: %d %q", code, body)
	}
	if code := s.stop(); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}

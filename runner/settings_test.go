package runner

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/paster-dev/paster/entrypoints"
)

// TestServerKeysFromGlobals: the server's keys that a global hides take the
// global's value (port=9000 on paster serve's command line), are logged
// with the value they replace, and a bad global value is an error naming
// where the section wrote the key.
func TestServerKeysFromGlobals(t *testing.T) {
	t.Parallel()
	at := entrypoints.Location{File: "dev.ini", Line: 4, Section: "server:main"}
	local := entrypoints.NewLocal("host", "127.0.0.1").
		WithShadow(entrypoints.Shadow{Key: "port", Value: "8080", Global: "9000", At: at}).
		WithShadow(entrypoints.Shadow{Key: "ready_timeout", Value: "5", Global: "0", At: at})

	var logs bytes.Buffer
	cfg := Unshadow(local, hclog.New(&hclog.LoggerOptions{Output: &logs}))
	if !strings.Contains(logs.String(), "server setting taken from the global conf: key=port value=9000 instead_of=8080") {
		t.Errorf("log: %s", logs.String())
	}
	if cfg.Get("port") != "9000" {
		t.Errorf("Unshadow: port %q", cfg.Get("port"))
	}

	r, err := New(http.NotFoundHandler(), local)
	if err != nil {
		t.Fatal(err)
	}
	if addr := r.HTTP.Config().Addr; addr != "127.0.0.1:9000" {
		t.Errorf("addr %s, want 127.0.0.1:9000", addr)
	}
	if r.ReadyTimeout != 0 {
		t.Errorf("ready_timeout %s, want the global's 0", r.ReadyTimeout)
	}

	bad := entrypoints.NewLocal().WithShadow(entrypoints.Shadow{Key: "port", Value: "8080", Global: "eighty", At: at})
	_, err = New(http.NotFoundHandler(), bad)
	if want := `dev.ini:4 [server:main] port (the global value, which hides the section's "8080"): bad integer value: "eighty"`; err == nil || err.Error() != want {
		t.Errorf("error %v, want %s", err, want)
	}
}

package builtin

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/paster-dev/paster/entrypoints"
)

// TestNATSCoreMaxValueOverServer: a core_max_value that the NATS server's
// max_payload cannot carry fails the load naming the file, line, section
// and core_max_value, and the server's limit.
func TestNATSCoreMaxValueOverServer(t *testing.T) {
	t.Parallel()
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true, MaxPayload: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	if !srv.ReadyForConnections(20 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	where := func(line int) entrypoints.Location {
		return entrypoints.Location{File: "c.ini", Line: line, Section: "core:c"}
	}
	local := entrypoints.LocalOf(
		entrypoints.LocalEntry{Key: "url", Value: srv.ClientURL(), Where: where(3)},
		entrypoints.LocalEntry{Key: "core_max_value", Value: "1m", Where: where(4)},
	)
	c, err := natsCoreFactory(nil, local)
	if err == nil {
		c.Close()
		t.Fatal("a NATS core with core_max_value 1m on a server of max_payload 64k loaded")
	}
	for _, want := range []string{"c.ini:4 [core:c] core_max_value", "max_payload", fmt.Sprint(64 << 10)} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("load = %v; want an error naming %q", err, want)
		}
	}
}

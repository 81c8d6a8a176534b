package natscore

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/runner"
	"github.com/paster-dev/paster/runner/coretest"
)

// TestEmbedded: a node with embedded = true runs its own nats-server, a
// second node joins it by URL, signals and topics cross between them, and
// closing the first node shuts its server down (the second then reports
// the connection lost).
func TestEmbedded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	opts := func(name string) Options {
		return Options{Name: name, SubjectPrefix: "emb", GatherTimeout: 2 * time.Second, Heartbeat: 100 * time.Millisecond}
	}
	oa := opts("a")
	oa.Embedded = &Embedded{Listen: "127.0.0.1:0", StoreDir: t.TempDir()}
	a, err := New(oa)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	ob := opts("b")
	ob.URL = a.ClientURL()
	b, err := New(ob)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	coretest.WaitFor(t, "nodes know each other", func() bool { return a.Peers() == 1 && b.Peers() == 1 })

	res := coretest.Park(t, a, ctx, "s", runner.NoTimeout, 1)
	if n, err := b.Signal(ctx, "s", []byte("v")); n != 1 || err != nil {
		t.Fatalf("Signal from b = %d, %v; want 1", n, err)
	}
	coretest.Recv(t, "a's waiter", res)
	coretest.PublishN(t, b, "t", 1, 2)
	sub, err := a.Subscribe(ctx, "t", runner.FromOldest)
	if err != nil {
		t.Fatal(err)
	}
	if got := coretest.FetchSeqs(t, sub); !slices.Equal(got, coretest.SeqRange(1, 2)) {
		t.Fatalf("a read %v, want 1..2", got)
	}

	a.Close()
	coretest.WaitFor(t, "b disconnected from a's server", func() bool { return !b.Connected() })
}

// TestEmbeddedOptions: the keys of an embedded core are checked before
// anything starts.
func TestEmbeddedOptions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, ini, want string
		at              string // where the error says the key is, "" for a missing key
	}{
		{"no url, not embedded", "", "url is required", ""},
		{"embedded without store_dir", "embedded = true\n", "store_dir is required", ""},
		{"bad listen", "embedded = true\nstore_dir = /tmp/x\nlisten = nowhere\n", "listen \"nowhere\"", "c.ini:4 [core:c] listen"},
		{"routes without cluster_listen", "embedded = true\nstore_dir = /tmp/x\nroutes = nats://127.0.0.1:6222\n", "routes need cluster_listen", "c.ini:4 [core:c] routes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := OptionsFromLocal(localOf(t, tc.ini))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("OptionsFromLocal = %v; want an error saying %q", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.at) {
				t.Fatalf("OptionsFromLocal = %v; want it to name %q", err, tc.at)
			}
		})
	}
}

// localOf parses "key = value" lines as if written in [core:c] of c.ini
// from line 2 on.
func localOf(t *testing.T, ini string) entrypoints.Local {
	t.Helper()
	var es []entrypoints.LocalEntry
	for i, line := range strings.Split(strings.TrimSpace(ini), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		es = append(es, entrypoints.LocalEntry{Key: strings.TrimSpace(k), Value: strings.TrimSpace(v), Where: entrypoints.Location{File: "c.ini", Line: i + 2, Section: "core:c"}})
	}
	return entrypoints.LocalOf(es...)
}

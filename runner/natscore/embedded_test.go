package natscore

import (
	"context"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/internal/testsync"
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
	testsync.WaitFor(t, "nodes know each other", func() bool { return a.Peers() == 1 && b.Peers() == 1 })

	res := coretest.Park(t, a, ctx, "s", runner.NoTimeout, 1)
	if n, err := b.Signal(ctx, "s", []byte("v")); n != 1 || err != nil {
		t.Fatalf("Signal from b = %d, %v; want 1", n, err)
	}
	testsync.Recv(t, "a's waiter", res)
	coretest.PublishN(t, b, "t", 1, 2)
	sub, err := a.Subscribe(ctx, "t", runner.FromOldest)
	if err != nil {
		t.Fatal(err)
	}
	if got := coretest.FetchSeqs(t, sub); !slices.Equal(got, coretest.SeqRange(1, 2)) {
		t.Fatalf("a read %v, want 1..2", got)
	}

	a.Close()
	testsync.WaitFor(t, "b disconnected from a's server", func() bool { return !b.Connected() })
}

// TestEmbeddedShared: two Cores of one process asking for the same
// embedded server (a reload that changed another key of the core section
// makes the second while the first still serves) share it: the second
// starts while the first holds listen, a wait parked on the first is woken
// by a Signal on the second, and the server runs until the last of them is
// closed. The same store_dir with another listen is an error saying that
// the change takes a restart; a listen address in use fails at once with
// the server's reason.
func TestEmbeddedShared(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := ln.Addr().String()
	ln.Close()
	emb := Embedded{Listen: listen, StoreDir: t.TempDir()}
	node := func(gather time.Duration, e Embedded) (*Core, error) {
		return New(Options{Name: "a", SubjectPrefix: "shared", GatherTimeout: gather, Heartbeat: 100 * time.Millisecond, Embedded: &e})
	}
	old, err := node(time.Second, emb)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { old.Close() })
	res := coretest.Park(t, old, ctx, "s", runner.NoTimeout, 1)
	cur, err := node(2*time.Second, emb)
	if err != nil {
		t.Fatalf("a second Core on the same embedded server: %v", err)
	}
	t.Cleanup(func() { cur.Close() })
	testsync.WaitFor(t, "the two Cores know each other", func() bool { return old.Peers() == 1 && cur.Peers() == 1 })
	if n, err := cur.Signal(ctx, "s", []byte("v")); n != 1 || err != nil {
		t.Fatalf("Signal on the new Core = %d, %v; want 1 (the wait parked on the old)", n, err)
	}
	testsync.Recv(t, "the old Core's waiter", res)

	other := emb
	other.Listen = "127.0.0.1:0"
	if c, err := node(time.Second, other); err == nil || !strings.Contains(err.Error(), "takes a restart") {
		if c != nil {
			c.Close()
		}
		t.Fatalf("the same store_dir with another listen: %v; want an error saying it takes a restart", err)
	}

	old.Close()
	if !cur.Connected() {
		t.Fatal("closing the old Core closed the server the new one uses")
	}
	coretest.PublishN(t, cur, "t", 1, 1)
	cur.Close()
	testsync.WaitFor(t, "the server shut down with its last Core", func() bool {
		c, err := net.Dial("tcp", listen)
		if err == nil {
			c.Close()
		}
		return err != nil
	})

	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	if c, err := node(time.Second, Embedded{Listen: held.Addr().String(), StoreDir: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "address already in use") {
		if c != nil {
			c.Close()
		}
		t.Fatalf("listen on a port in use: %v; want the server's reason", err)
	}
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
		{"misspelt key", "url = nats://127.0.0.1:4222\ngather_timout = 1s\n", `unknown key of a NATS core; did you mean "gather_timeout"?`, "c.ini:3 [core:c] gather_timout"},
		{"server key", "embedded = true\nstore_dir = /tmp/x\nport = 4222\n", "unknown key of a NATS core", "c.ini:4 [core:c] port"},
		{"subject_prefix too long", "url = nats://127.0.0.1:4222\nsubject_prefix = " + strings.Repeat("p", MaxSubjectPrefix+1) + "\n", "subject_prefix is 184 bytes: at most 183", "c.ini:3 [core:c] subject_prefix"},
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

// A subject prefix too long for a topic's stream name fails Start, before
// anything connects, rather than every Publish later.
func TestSubjectPrefixTooLong(t *testing.T) {
	t.Parallel()
	_, err := New(Options{URL: "nats://127.0.0.1:1", SubjectPrefix: strings.Repeat("p", MaxSubjectPrefix+1)})
	if err == nil || !strings.Contains(err.Error(), "subject_prefix is 184 bytes: at most 183") {
		t.Fatalf("New = %v; want it to refuse the subject_prefix", err)
	}
}

package natscore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/paster-dev/paster/internal/testsync"
	"github.com/paster-dev/paster/runner"
	"github.com/paster-dev/paster/runner/coretest"
)

// value returns n bytes of a pattern.
func value(n int) []byte {
	v := make([]byte, n)
	for i := range v {
		v[i] = byte(i % 251)
	}
	return v
}

// roundTrip checks that v, published on a, is fetched whole on b, and that
// Signal and SignalAtLeast on a give it whole to a waiter parked on b. The
// signal's name is as long as a name can be, and the topic's about as long
// as a stream name (255 bytes, with the topic's name hex encoded) allows,
// so that natscore's headers are as large as they get.
func roundTrip(t *testing.T, a, b *Core, v []byte) {
	t.Helper()
	ctx := context.Background()
	name, topic := strings.Repeat("n", runner.MaxNameSize), strings.Repeat("t", 100)
	if _, err := a.Publish(ctx, topic, v); err != nil {
		t.Fatalf("Publish of %d bytes: %v", len(v), err)
	}
	sub, err := b.Subscribe(ctx, topic, runner.FromOldest)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	msgs, err := sub.Fetch(ctx)
	if err != nil || len(msgs) != 1 || !bytes.Equal(msgs[0].Data, v) {
		t.Fatalf("Fetch of a message of %d bytes = %d messages, %v; want it whole", len(v), len(msgs), err)
	}
	for _, tc := range []struct {
		op   string
		call func() (int, error)
	}{
		{"Signal", func() (int, error) { return a.Signal(ctx, name, v) }},
		{"SignalAtLeast", func() (int, error) { return a.SignalAtLeast(ctx, name, v, 1) }},
	} {
		parked := coretest.Park(t, b, ctx, name, runner.NoTimeout, 1)
		if n, err := tc.call(); n != 1 || err != nil {
			t.Fatalf("%s of %d bytes = %d, %v; want 1, nil", tc.op, len(v), n, err)
		}
		if r := testsync.Recv(t, "the waiter on the other node", parked); r.Err != nil || !bytes.Equal(r.Val, v) {
			t.Fatalf("the waiter woken by %s of %d bytes got %d bytes, %v", tc.op, len(v), len(r.Val), r.Err)
		}
	}
}

// TestMaxValueAgainstServer: against a NATS server whose max_payload is
// 64 KiB, a Core whose core_max_value the server cannot carry (with
// natscore's headers) fails at New with an error naming core_max_value,
// the server and its max_payload; one within it carries values of exactly
// core_max_value bytes between nodes; one without core_max_value (0, or
// no limit) takes what the server carries and refuses more with
// ErrTooLarge, so that no value it accepts fails later.
func TestMaxValueAgainstServer(t *testing.T) {
	t.Parallel()
	const maxPayload = 64 << 10
	ts := startServerWith(t, func(o *server.Options) { o.MaxPayload = maxPayload })
	opts := func(prefix, name string, maxValue int) Options {
		return Options{URL: ts.url(), Name: name, SubjectPrefix: prefix, Core: runner.CoreOptions{MaxValue: maxValue},
			GatherTimeout: time.Second, Heartbeat: 100 * time.Millisecond}
	}
	t.Run("too large for the server", func(t *testing.T) {
		t.Parallel()
		c, err := New(opts(newPrefix(), "n", runner.DefaultMaxValue))
		if err == nil {
			c.Close()
			t.Fatal("New with core_max_value 1 MiB on a server of max_payload 64 KiB succeeded")
		}
		for _, want := range []string{"core_max_value", fmt.Sprint(runner.DefaultMaxValue), "max_payload", fmt.Sprint(maxPayload), ts.url()} {
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("New = %v; want an error naming %q", err, want)
			}
		}
	})
	t.Run("within the server's", func(t *testing.T) {
		t.Parallel()
		const limit = 32 << 10
		prefix := newPrefix()
		a, err := New(opts(prefix, "a", limit))
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		b, err := New(opts(prefix, "b", limit))
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		testsync.WaitFor(t, "nodes know each other", func() bool { return a.Peers() == 1 && b.Peers() == 1 })
		if a.MaxValue() != limit {
			t.Fatalf("MaxValue = %d, want core_max_value, %d", a.MaxValue(), limit)
		}
		roundTrip(t, a, b, value(limit))
	})
	for _, tc := range []struct {
		name     string
		maxValue int
	}{{"default", 0}, {"no limit", -1}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			prefix := newPrefix()
			a, err := New(opts(prefix, "a", tc.maxValue))
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			b, err := New(opts(prefix, "b", tc.maxValue))
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			testsync.WaitFor(t, "nodes know each other", func() bool { return a.Peers() == 1 && b.Peers() == 1 })
			limit := a.MaxValue()
			if limit >= maxPayload || limit < maxPayload-8<<10 {
				t.Fatalf("MaxValue = %d on a server of max_payload %d, want that less natscore's headers", limit, maxPayload)
			}
			roundTrip(t, a, b, value(limit))
			ctx := context.Background()
			if _, err := a.Publish(ctx, "big", value(limit+1)); !errors.Is(err, runner.ErrTooLarge) || !strings.Contains(err.Error(), fmt.Sprint(limit)) {
				t.Fatalf("Publish of %d bytes = %v, want ErrTooLarge naming the limit %d", limit+1, err, limit)
			}
			if _, err := a.Signal(ctx, "big", value(limit+1)); !errors.Is(err, runner.ErrTooLarge) {
				t.Fatalf("Signal of %d bytes = %v, want ErrTooLarge", limit+1, err)
			}
		})
	}
}

// TestEmbeddedMaxValue: an embedded nats-server is started to carry
// values of core_max_value bytes (here 4 MiB, four times NATS's default
// max_payload) between nodes; a second Core sharing that server that
// needs more fails saying it takes a restart; a core_max_value over what
// a NATS core can carry fails naming the key.
func TestEmbeddedMaxValue(t *testing.T) {
	t.Parallel()
	const limit = 4 << 20
	emb := Embedded{Listen: "127.0.0.1:0", StoreDir: t.TempDir()}
	opts := func(name string, maxValue int) Options {
		return Options{Name: name, SubjectPrefix: "big", Core: runner.CoreOptions{MaxValue: maxValue},
			GatherTimeout: 2 * time.Second, Heartbeat: 100 * time.Millisecond}
	}
	oa := opts("a", limit)
	oa.Embedded = &emb
	a, err := New(oa)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ob := opts("b", limit)
	ob.URL = a.ClientURL()
	b, err := New(ob)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	testsync.WaitFor(t, "nodes know each other", func() bool { return a.Peers() == 1 && b.Peers() == 1 })
	roundTrip(t, a, b, value(limit))

	more := opts("a", 2*limit)
	more.Embedded = &emb
	if c, err := New(more); err == nil || !strings.Contains(err.Error(), "core_max_value") || !strings.Contains(err.Error(), "takes a restart") {
		if c != nil {
			c.Close()
		}
		t.Fatalf("a second Core on the same embedded server with a larger core_max_value: %v; want an error naming core_max_value saying it takes a restart", err)
	}
	over := opts("c", MaxValueLimit+1)
	over.Embedded = &Embedded{Listen: "127.0.0.1:0", StoreDir: t.TempDir()}
	if c, err := New(over); err == nil || !strings.Contains(err.Error(), "core_max_value") || !strings.Contains(err.Error(), fmt.Sprint(MaxValueLimit)) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("core_max_value over MaxValueLimit: %v; want an error naming core_max_value and %d", err, MaxValueLimit)
	}
}

// TestMaxValueOptions: a core section without core_max_value leaves
// MaxValue 0 (what the NATS server carries, at most the default), one
// with it keeps it, and one over MaxValueLimit is an error naming the key.
func TestMaxValueOptions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		ini  string
		want int
		err  string
	}{
		{"url = nats://127.0.0.1:4222\n", 0, ""},
		{"url = nats://127.0.0.1:4222\ncore_max_value = 4m\n", 4 << 20, ""},
		{"url = nats://127.0.0.1:4222\ncore_max_value = 0\n", -1, ""},
		{"url = nats://127.0.0.1:4222\ncore_max_value = 17m\n", 0, "c.ini:3 [core:c] core_max_value"},
	} {
		o, err := OptionsFromLocal(localOf(t, tc.ini))
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err) || !strings.Contains(err.Error(), "16m")):
			t.Errorf("%q: OptionsFromLocal = %v; want an error naming %s and the limit", tc.ini, err, tc.err)
		case tc.err == "" && (err != nil || o.Core.MaxValue != tc.want):
			t.Errorf("%q: OptionsFromLocal = MaxValue %d, %v; want %d", tc.ini, o.Core.MaxValue, err, tc.want)
		}
	}
}

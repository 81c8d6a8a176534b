package runner

import (
	"context"
	"errors"
	"testing"
	"time"
)

func newTestCore(t testing.TB, opts CoreOptions) *LocalCore {
	c := NewCore(opts)
	t.Cleanup(func() { c.Close() })
	return c
}

func TestCoreFrom(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	if HasCore(ctx) {
		t.Fatal("HasCore on an empty context")
	}
	none := CoreFrom(ctx)
	if none == nil {
		t.Fatal("CoreFrom returned nil")
	}
	ops := map[string]error{}
	ops["sleep"] = none.Sleep(ctx, time.Second)
	_, ops["wait"] = none.WaitForSignal(ctx, "a", 0)
	_, ops["signal"] = none.Signal(ctx, "a", nil)
	_, ops["signal at least"] = none.SignalAtLeast(ctx, "a", nil, 1)
	_, ops["publish"] = none.Publish(ctx, "t", nil)
	_, ops["subscribe"] = none.Subscribe(ctx, "t", FromNow)
	for op, err := range ops {
		if !errors.Is(err, ErrNoCore) {
			t.Errorf("%s without a core: got %v, want ErrNoCore", op, err)
		}
	}

	c := newTestCore(t, CoreOptions{})
	ctx = WithCore(ctx, c)
	if !HasCore(ctx) || CoreFrom(ctx) != Core(c) {
		t.Fatal("CoreFrom does not return the core given to WithCore")
	}
}

package plugins

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/paster-dev/paster/runner"
)

// TestCoreWire: Core calls and replies come out of the data-plane encoding
// as they went in (what the JSON of the gRPC path keeps), errors keep their
// identity, and a truncated message is an error, never a short value.
func TestCoreWire(t *testing.T) {
	t.Parallel()
	calls := []coreCall{
		{},
		{Scope: 7, Name: "sig", Timeout: 30 * time.Second},
		{Name: "topic", Value: []byte("message"), Min: 10000},
		{Name: "t", From: "now", Sub: 1 << 40, Timeout: -1},
	}
	for _, in := range calls {
		t.Run(fmt.Sprintf("call %+v", in), func(t *testing.T) {
			b := in.appendTo(nil)
			var out coreCall
			if err := out.decode(b); err != nil || !reflect.DeepEqual(out, in) {
				t.Fatalf("decoded %+v, %v; want %+v", out, err, in)
			}
			for i := range b {
				if err := out.decode(b[:i]); err == nil {
					t.Fatalf("%d of %d bytes decoded as %+v", i, len(b), out)
				}
			}
		})
	}

	when := time.Date(2026, 11, 30, 23, 0, 0, 123, time.Local) // as the Core stamps them
	gap := &runner.GapError{Topic: "t", Want: 3, First: 9}
	replies := []struct {
		reply coreReply
		is    []error
	}{
		{reply: coreReply{}},
		{reply: coreReply{Value: []byte("v"), N: 10000}},
		{reply: coreReply{Messages: []runner.Message{{Seq: 1, Time: when, Data: []byte("a")}, {Seq: 2, Time: when}}}},
		{reply: coreReply{Err: toCoreErr(fmt.Errorf("waiting: %w", runner.ErrTimeout))}, is: []error{runner.ErrTimeout}},
		{reply: coreReply{Err: toCoreErr(errors.Join(runner.ErrClosed, context.Canceled))}, is: []error{runner.ErrClosed, context.Canceled}},
		{reply: coreReply{Err: toCoreErr(gap)}, is: []error{runner.ErrGap}},
	}
	for _, c := range replies {
		t.Run(fmt.Sprintf("reply %+v", c.reply), func(t *testing.T) {
			b := c.reply.appendTo(nil)
			var out coreReply
			if err := out.decode(b); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(out, c.reply) {
				t.Fatalf("decoded %+v, want %+v", out, c.reply)
			}
			err := out.Err.err()
			for _, target := range c.is {
				if !errors.Is(err, target) {
					t.Errorf("%v is not %v", err, target)
				}
			}
			if c.reply.Err != nil && err.Error() != c.reply.Err.err().Error() {
				t.Errorf("error %q, want %q", err, c.reply.Err.err())
			}
			for i := range b {
				if err := out.decode(b[:i]); err == nil {
					t.Fatalf("%d of %d bytes decoded as %+v", i, len(b), out)
				}
			}
		})
	}
}

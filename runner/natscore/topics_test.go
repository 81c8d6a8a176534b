package natscore

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/paster-dev/paster/internal/testsync"
	"github.com/paster-dev/paster/runner"
	"github.com/paster-dev/paster/runner/coretest"
)

// TestTopicCachesBounded: a node used on many distinct topics holds a
// bounded number of stream handles, and a message consumer only for the
// topics it has subscriptions open on; a topic whose handle was dropped
// works again as before (its messages kept, Publish, Subscribe, a Fetch
// parked and woken).
func TestTopicCachesBounded(t *testing.T) {
	t.Parallel()
	const topics, bound = 200, 16
	c := newNode(t, startServer(t), newPrefix(), "n", runner.CoreOptions{})
	c.setStreamCacheSize(bound)
	ctx := context.Background()
	kept, err := c.Subscribe(ctx, "kept", runner.FromOldest)
	if err != nil {
		t.Fatal(err)
	}
	defer kept.Close()
	coretest.PublishN(t, c, "kept", 1, 1)
	if got := coretest.FetchSeqs(t, kept); !slices.Equal(got, []uint64{1}) {
		t.Fatalf("kept read %v, want [1]", got)
	}
	for i := range topics {
		topic := fmt.Sprint("topic-", i)
		coretest.PublishN(t, c, topic, 1, 1)
		sub, err := c.Subscribe(ctx, topic, runner.FromOldest)
		if err != nil {
			t.Fatal(err)
		}
		if got := coretest.FetchSeqs(t, sub); !slices.Equal(got, []uint64{1}) {
			t.Fatalf("%s read %v, want [1]", topic, got)
		}
		sub.Close()
	}
	if streams, notify := c.cachedTopics(); streams > bound || notify != 1 {
		t.Fatalf("after %d topics: %d stream handles (want at most %d) and %d consumers (want 1, for the topic still subscribed)", topics, streams, bound, notify)
	}

	coretest.PublishN(t, c, "kept", 2, 2)
	if got := coretest.FetchSeqs(t, kept); !slices.Equal(got, []uint64{2}) {
		t.Fatalf("kept read %v, want [2]", got)
	}
	coretest.PublishN(t, c, "topic-0", 2, 2)
	old, err := c.Subscribe(ctx, "topic-0", runner.FromOldest)
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if got := coretest.FetchSeqs(t, old); !slices.Equal(got, []uint64{1, 2}) {
		t.Fatalf("topic-0 read again %v, want 1..2", got)
	}
	got := make(chan []runner.Message, 1)
	go func() {
		msgs, _ := old.Fetch(ctx)
		got <- msgs
	}()
	testsync.WaitFor(t, "the Fetch parked", func() bool { return c.Stats().Fetching == 1 })
	coretest.PublishN(t, c, "topic-0", 3, 3)
	if msgs := testsync.Recv(t, "the parked Fetch", got); len(msgs) != 1 || msgs[0].Seq != 3 {
		t.Fatalf("the parked Fetch on topic-0 got %v, want message 3", msgs)
	}
	old.Close()
	kept.Close()
	if _, notify := c.cachedTopics(); notify != 0 {
		t.Fatalf("with no subscription open, %d consumers, want 0", notify)
	}
}

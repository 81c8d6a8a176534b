package natscore

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/paster-dev/paster/internal/testsync"
	"github.com/paster-dev/paster/runner"
	"github.com/paster-dev/paster/runner/coretest"
)

// BenchmarkCluster is bench/run.sh's cluster target: two nodes on one
// nats-server (in this process, loopback), measured in the same run as the
// in-memory Core:
//
//   - signal-p50/p99-µs: a waiter parked on node B, Signal on node A, until
//     the waiter returns (goal: p50 under 2 ms); memory-signal-p50/p99-µs
//     the same on one in-memory Core;
//   - wake-10k-ms: 10,000 waiters split over both nodes, one Signal, until
//     all returned (goal: under 500 ms), and the count it reported;
//   - publish/s: sequential JetStream-acknowledged publishes;
//   - fetch-p50-µs: a Fetch parked on B woken by a publish on A.
func BenchmarkCluster(b *testing.B) {
	ts := startServer(b)
	prefix := newPrefix()
	var nodes []*Core
	for _, name := range []string{"a", "b"} {
		c, err := New(Options{URL: ts.url(), Name: name, SubjectPrefix: prefix, GatherTimeout: 2 * time.Second})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { c.Close() })
		nodes = append(nodes, c)
	}
	a, nb := nodes[0], nodes[1]
	testsync.WaitFor(b, "nodes know each other", func() bool { return a.Peers() == 1 && nb.Peers() == 1 })
	mem := runner.NewCore(runner.CoreOptions{})
	b.Cleanup(func() { mem.Close() })
	ctx := context.Background()

	const rounds = 300
	latency := func(waitOn, signalOn coretest.Core) (p50, p99 time.Duration) {
		var d []time.Duration
		for range rounds {
			res := coretest.Park(b, waitOn, ctx, "lat", runner.NoTimeout, 1)
			start := time.Now()
			if n, err := signalOn.Signal(ctx, "lat", []byte("x")); n != 1 || err != nil {
				b.Fatalf("Signal = %d, %v", n, err)
			}
			testsync.Recv(b, "waiter", res)
			d = append(d, time.Since(start))
		}
		slices.Sort(d)
		return d[len(d)/2], d[len(d)*99/100]
	}

	for range b.N {
		p50, p99 := latency(nb, a)
		mp50, mp99 := latency(mem, mem)

		const waiters = 10000
		var wg sync.WaitGroup
		for i, c := range []*Core{a, nb} {
			ch := coretest.Park(b, c, ctx, "many", runner.NoTimeout, waiters/2)
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range waiters / 2 {
					if r := testsync.Recv(b, fmt.Sprint("waiter on node ", i), ch); r.Err != nil {
						b.Error(r.Err)
					}
				}
			}()
		}
		start := time.Now()
		n, err := a.Signal(ctx, "many", []byte("all"))
		wg.Wait()
		wake := time.Since(start)
		if n != waiters || err != nil {
			b.Fatalf("Signal over two nodes = %d, %v; want %d", n, err, waiters)
		}

		const msgs = 500
		start = time.Now()
		for i := range msgs {
			if _, err := a.Publish(ctx, "bench", []byte(fmt.Sprint(i))); err != nil {
				b.Fatal(err)
			}
		}
		pubRate := float64(msgs) / time.Since(start).Seconds()

		sub, err := nb.Subscribe(ctx, "bench", runner.FromNow)
		if err != nil {
			b.Fatal(err)
		}
		var fd []time.Duration
		for range 100 {
			got := make(chan error, 1)
			go func() { _, err := sub.Fetch(ctx); got <- err }()
			testsync.WaitFor(b, "fetch parked", func() bool { return nb.Stats().Fetching == 1 })
			start := time.Now()
			if _, err := a.Publish(ctx, "bench", []byte("x")); err != nil {
				b.Fatal(err)
			}
			if err := testsync.Recv(b, "fetch", got); err != nil {
				b.Fatal(err)
			}
			fd = append(fd, time.Since(start))
		}
		sub.Close()
		slices.Sort(fd)

		us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
		b.ReportMetric(us(p50), "signal-p50-µs")
		b.ReportMetric(us(p99), "signal-p99-µs")
		b.ReportMetric(us(mp50), "memory-signal-p50-µs")
		b.ReportMetric(us(mp99), "memory-signal-p99-µs")
		b.ReportMetric(float64(wake)/float64(time.Millisecond), "wake-10k-ms")
		b.ReportMetric(float64(n), "wake-10k-count")
		b.ReportMetric(pubRate, "publish/s")
		b.ReportMetric(us(fd[len(fd)/2]), "fetch-p50-µs")
	}
}

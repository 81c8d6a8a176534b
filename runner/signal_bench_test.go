package runner

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/paster-dev/paster/internal/testsync"
)

// BenchmarkSignalWake10000 parks 10,000 WaitForSignal calls, then times one
// Signal and the return of every waiter: on the LocalCore (core) and
// through a CoreScope over it (scope), as a Runner's requests wait. It fails
// if Signal's count is not 10,000. Metrics: ns/op is starting the 10,000
// waiters (their goroutines and calls up to parking) and the Signal until
// the last has its value, B/op and allocs/op the same; signal-ns is the
// Signal call alone; woken is Signal's count.
func BenchmarkSignalWake10000(b *testing.B) {
	for _, scoped := range []bool{false, true} {
		name := "core"
		if scoped {
			name = "scope"
		}
		b.Run(name, func(b *testing.B) { benchSignalWake(b, scoped) })
	}
}

func benchSignalWake(b *testing.B, scoped bool) {
	const n = 10000
	c := NewCore(CoreOptions{})
	defer c.Close()
	var waiter Core = c
	if scoped {
		waiter = NewCoreScope(c)
	}
	ctx := context.Background()
	var signalTime time.Duration
	woken := 0
	b.ReportAllocs()
	for b.Loop() {
		b.StopTimer()
		var wg sync.WaitGroup
		wg.Add(n)
		b.StartTimer()
		for range n {
			go func() {
				defer wg.Done()
				if _, err := waiter.WaitForSignal(ctx, "bench", NoTimeout); err != nil {
					b.Error(err)
				}
			}()
		}
		b.StopTimer()
		testsync.WaitFor(b, "10,000 parked waiters", func() bool { return c.Stats().Waiters == n })
		b.StartTimer()

		start := time.Now()
		got, err := c.Signal(ctx, "bench", []byte("wake up"))
		signalTime += time.Since(start)
		wg.Wait()

		if err != nil || got != n {
			b.Fatalf("Signal = %d, %v; want %d", got, err, n)
		}
		woken = got
	}
	b.ReportMetric(float64(signalTime.Nanoseconds())/float64(b.N), "signal-ns")
	b.ReportMetric(float64(woken), "woken")
}

// BenchmarkParkedWaiterMemory measures the memory one parked WaitForSignal
// costs, its goroutine's stack included (an in-process parked request needs
// that goroutine anyway), with and without a timeout timer. Metrics:
// bytes/waiter (heap and stacks) and heap-bytes/waiter.
func BenchmarkParkedWaiterMemory(b *testing.B) {
	for _, bc := range []struct {
		name    string
		timeout time.Duration
	}{{"no-timeout", NoTimeout}, {"timeout", time.Hour}} {
		b.Run(bc.name, func(b *testing.B) {
			const n = 10000
			var total, heap float64
			for b.Loop() {
				c := NewCore(CoreOptions{})
				ctx := context.Background()
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				var wg sync.WaitGroup
				wg.Add(n)
				for range n {
					go func() {
						defer wg.Done()
						c.WaitForSignal(ctx, "mem", bc.timeout)
					}()
				}
				testsync.WaitFor(b, "parked waiters", func() bool { return c.Stats().Waiters == n })
				runtime.GC()
				runtime.ReadMemStats(&after)
				heap += float64(after.HeapAlloc) - float64(before.HeapAlloc)
				total += float64(after.HeapAlloc+after.StackInuse) - float64(before.HeapAlloc+before.StackInuse)
				if got, _ := c.Signal(ctx, "mem", nil); got != n {
					b.Fatalf("Signal woke %d, want %d", got, n)
				}
				wg.Wait()
				c.Close()
			}
			b.ReportMetric(total/float64(b.N)/n, "bytes/waiter")
			b.ReportMetric(heap/float64(b.N)/n, "heap-bytes/waiter")
		})
	}
}

// BenchmarkPublishFanout publishes one message to a topic with 1,000 parked
// fetchers and waits until every one has it.
func BenchmarkPublishFanout(b *testing.B) {
	const subs = 1000
	c := NewCore(CoreOptions{})
	defer c.Close()
	ctx := context.Background()
	for b.Loop() {
		b.StopTimer()
		var wg sync.WaitGroup
		wg.Add(subs)
		for range subs {
			sub, err := c.Subscribe(ctx, "fan", FromNow)
			if err != nil {
				b.Fatal(err)
			}
			go func() {
				defer wg.Done()
				defer sub.Close()
				if m, err := sub.Fetch(ctx); err != nil || len(m) != 1 {
					b.Errorf("Fetch = %d messages, %v", len(m), err)
				}
			}()
		}
		testsync.WaitFor(b, "parked fetchers", func() bool { return c.Stats().Fetching == subs })
		b.StartTimer()
		if _, err := c.Publish(ctx, "fan", []byte("tick")); err != nil {
			b.Fatal(err)
		}
		wg.Wait()
	}
}

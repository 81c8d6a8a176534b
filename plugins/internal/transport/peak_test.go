package transport

import (
	"context"
	"fmt"
	"testing"

	"github.com/paster-dev/paster/internal/testsync"
	"github.com/paster-dev/paster/plugins/internal/wire"
)

// tableOf returns how many exchanges m's first connection holds and how
// many slots its table has.
func tableOf(m *Mux) (n, slots int) {
	cn := m.conns[0]
	cn.mu.Lock()
	defer cn.mu.Unlock()
	return cn.xs.n, len(cn.xs.slots)
}

// parkCalls makes n calls at once over a Mux pair of one connection,
// whose server holds them (ServeCallLater) until the test answers them
// with the replies it returns; each call's result comes on errs.
func parkCalls(t *testing.T, n int) (client, server *Mux, replies []func([]byte, error), errs <-chan error) {
	t.Helper()
	parked := make(chan func([]byte, error), n)
	client, server = muxPair(t, 1, func(ctx context.Context, _ string, _ uint64, x *Exchange) error {
		return ServeCallLater(ctx, x, func(_ context.Context, in []byte, reply func([]byte, error)) {
			parked <- reply
		})
	})
	results := make(chan error, n)
	for range n {
		go func() {
			_, err := client.Call(context.Background(), "park", []byte("x"))
			results <- err
		}()
	}
	for range n {
		replies = append(replies, testsync.Recv(t, "a parked call", parked))
	}
	return client, server, replies, results
}

// answered waits for n calls' results on errs, failing the test on an
// error.
func answered(t *testing.T, errs <-chan error, n int) {
	t.Helper()
	for range n {
		if err := testsync.Recv(t, "a call's answer", errs); err != nil {
			t.Fatal(err)
		}
	}
}

// TestXtableShrinksAfterPeak: thousands of calls parked at once on one
// connection grow both sides' exchange tables; once they are answered,
// both tables are back to their least size (nothing of the peak is held).
func TestXtableShrinksAfterPeak(t *testing.T) {
	t.Parallel()
	const parked = 5000
	client, server, answer, errs := parkCalls(t, parked)
	for _, m := range []*Mux{client, server} {
		if n, slots := tableOf(m); n != parked || slots < 2*parked {
			t.Fatalf("at the peak: %d exchanges in %d slots, want %d in at least %d", n, slots, parked, 2*parked)
		}
	}
	for _, reply := range answer {
		reply([]byte("y"), nil)
	}
	answered(t, errs, parked)
	for side, m := range map[string]*Mux{"client": client, "server": server} {
		testsync.WaitFor(t, side+"'s exchanges to end", func() bool { n, _ := tableOf(m); return n == 0 })
		if _, slots := tableOf(m); slots != minSlots {
			t.Errorf("%s: %d slots after the peak, want %d", side, slots, minSlots)
		}
	}
}

// TestXtableSteady: a workload whose open exchanges swing back and forth
// (within a factor of two) around a size, before or after a peak, rebuilds
// the table at most in its first swing: not on every crossing of a size at
// which the table grows or shrinks.
func TestXtableSteady(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		peak, low, high int
	}{
		{peak: 0, low: 24, high: 40},        // the first growth (at 32)
		{peak: 5000, low: 1000, high: 1100}, // a shrink after a peak (at 1024)
		{peak: 5000, low: 2000, high: 2100}, // a shrink after a peak (at 2048)
		{peak: 5000, low: 0, high: 3},       // idle after a peak
	} {
		t.Run(fmt.Sprintf("peak %d, %d to %d", c.peak, c.low, c.high), func(t *testing.T) {
			t.Parallel()
			client, _ := muxPair(t, 1, func(context.Context, string, uint64, *Exchange) error { return nil })
			var open []*Exchange // oldest first
			_, last := tableOf(client)
			rebuilds := 0
			step := func() {
				if _, slots := tableOf(client); slots != last {
					rebuilds++
					last = slots
				}
			}
			to := func(n int) {
				for len(open) < n {
					x, err := client.open(context.Background(), "m", 0)
					if err != nil {
						t.Fatal(err)
					}
					open = append(open, x)
					step()
				}
				for len(open) > n {
					open[0].end()
					open = open[1:]
					step()
				}
			}
			to(c.peak)
			to(c.low)
			to(c.high) // the first swing may rebuild
			to(c.low)
			rebuilds = 0
			const swings = 10
			for range swings {
				to(c.high)
				to(c.low)
			}
			if rebuilds > 0 {
				n, slots := tableOf(client)
				t.Errorf("%d rebuilds in %d swings between %d and %d exchanges; now %d in %d slots", rebuilds, swings, c.low, c.high, n, slots)
			}
			to(0)
		})
	}
}

// writeBuffers returns the capacity of m's first connection's write
// buffers once its writer is idle.
func writeBuffers(t *testing.T, m *Mux) int {
	t.Helper()
	cn := m.conns[0]
	var held int
	testsync.WaitFor(t, "the writer to be idle", func() bool {
		cn.wmu.Lock()
		defer cn.wmu.Unlock()
		held = cap(cn.wbuf) + cap(cn.spare)
		return !cn.writing && !cn.flushing && len(cn.wbuf) == 0
	})
	return held
}

// TestWriteBuffersAfterBurst: replies answered together (a Signal's
// waiters) pile up in the connection's write buffer, which grows to
// hundreds of KiB; once written, the writer keeps no more than keepWrite
// a buffer.
func TestWriteBuffersAfterBurst(t *testing.T) {
	t.Parallel()
	const parked = 100
	client, server, answer, errs := parkCalls(t, parked)
	big := make([]byte, 4<<10)
	for _, reply := range answer {
		reply(big, nil)
	}
	answered(t, errs, parked)
	for side, m := range map[string]*Mux{"client": client, "server": server} {
		if held := writeBuffers(t, m); held > 2*keepWrite {
			t.Errorf("%s: write buffers of %d bytes held after the burst, want at most %d", side, held, 2*keepWrite)
		}
	}
}

// TestQueueNeverEmpty: an exchange whose reader stays behind (its queue
// never empties, as under flow control with a slow reader) keeps a queue
// (entries, and room for packed messages) as long as what is pending, not
// one entry, or room, for every message received.
func TestQueueNeverEmpty(t *testing.T) {
	t.Parallel()
	served := make(chan *Exchange, 1)
	done := make(chan struct{})
	defer close(done)
	client, _ := muxPair(t, 1, func(_ context.Context, _ string, _ uint64, x *Exchange) error {
		served <- x
		<-done
		return nil
	})
	s, err := client.open(context.Background(), "m", 0)
	if err != nil {
		t.Fatal(err)
	}
	msg := &wire.Blob{Data: make([]byte, 64)}
	send := func(n int) {
		for range n {
			if err := s.SendMsg(msg); err != nil {
				t.Fatal(err)
			}
		}
	}
	send(1)
	x := testsync.Recv(t, "the served exchange", served)
	// The entries' capacity, and the packed messages' (a reader that
	// stays behind has most of its queue packed).
	queue := func() (pending, capacity int) {
		x.mu.Lock()
		defer x.mu.Unlock()
		pending, _ = queuedOf(x)
		return pending, cap(x.q) + packedCap(x)/(len(msg.Data)+1)
	}
	const batch, batches = 100, 200
	send(batch - 1)
	var in wire.Blob
	most := 0
	for range batches {
		send(batch)
		testsync.WaitFor(t, "the batch to arrive", func() bool { p, _ := queue(); return p >= 2*batch })
		for range batch {
			if err := x.RecvMsg(&in); err != nil {
				t.Fatal(err)
			}
		}
		if _, c := queue(); c > most {
			most = c
		}
	}
	if most > 8*batch {
		t.Errorf("queue of room for %d entries or packed messages for at most %d pending (%d received)", most, 2*batch, batch*(batches+1))
	}
}

package transport

import (
	"bytes"
	"context"
	"runtime"
	"testing"
	"unsafe"

	"github.com/paster-dev/paster/internal/testsync"
	"github.com/paster-dev/paster/plugins/internal/wire"
)

// queuedOf returns how many messages x has queued and the bytes their
// buffers and queue entries hold. Called with x.mu held.
func queuedOf(x *Exchange) (msgs, held int) {
	held = packedCap(x) + cap(x.q)*int(unsafe.Sizeof(queued{}))
	for _, e := range x.q[x.qh:] {
		if e.p == nil {
			msgs += int(e.n)
			continue
		}
		msgs++
		held += cap(*e.p)
	}
	return msgs, held
}

// packedCap returns the capacity of x's buffer of packed messages.
// Called with x.mu held.
func packedCap(x *Exchange) int {
	if x.pk == nil {
		return 0
	}
	return cap(x.pk.b)
}

// TestHostileTinyFlood: a plugin that fills many exchanges it opened
// (whose handlers read nothing) with windows of the tiniest messages
// makes the host hold at most a few times what those messages count
// against the windows, measured as the heap in use (runtime.MemStats),
// not about 16 times (a buffer and a queue entry of about 50 bytes for
// each 3-byte message); and an exchange that receives messages of mixed
// sizes beyond the few kept in buffers of their own gets every one, in
// order, with its flags.
func TestHostileTinyFlood(t *testing.T) {
	// Not parallel: the heap in use is the whole process's.
	const exchanges = 8
	served := make(chan *Exchange, exchanges+1)
	host, p := hostilePairServing(t, func(ctx context.Context, _ string, _ uint64, x *Exchange) error {
		served <- x
		<-ctx.Done()
		return nil
	})
	var b bytes.Buffer
	opens(&b, 2, exchanges+1)
	if _, err := p.c.Write(b.Bytes()); err != nil {
		t.Fatal(err)
	}
	xs := make(map[uint32]*Exchange)
	for range exchanges + 1 {
		x := testsync.Recv(t, "an exchange served", served)
		xs[x.id] = x
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	// As many as an honest sender sends: while less than Window is
	// uncredited.
	tiny := (&wire.Frame{Flags: wire.FlagFlush}).AppendTo(nil)
	n := (Window + minMessage - 1) / minMessage
	for i := range uint32(exchanges) {
		b.Reset()
		for range n {
			appendFrame(&b, 2+2*i, typeMsg, tiny)
		}
		if _, err := p.c.Write(b.Bytes()); err != nil {
			t.Fatal(err)
		}
	}
	for i := range uint32(exchanges) {
		x := xs[2+2*i]
		testsync.WaitFor(t, "the messages queued", func() bool {
			x.mu.Lock()
			defer x.mu.Unlock()
			msgs, _ := queuedOf(x)
			return msgs == n
		})
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	held := int64(after.HeapInuse) - int64(before.HeapInuse)
	if limit := int64(4 * exchanges * Window); held > limit {
		t.Fatalf("%d exchanges with %d queued messages of %d bytes each: the heap in use grew by %d bytes, %.1f windows an exchange",
			exchanges, n, len(tiny), held, float64(held)/float64(exchanges*Window))
	}
	t.Logf("heap in use grew by %.2f windows an exchange", float64(held)/float64(exchanges*Window))

	// Mixed sizes, packed and not, on the last exchange: every message
	// arrives whole, in order, with its flags.
	x := xs[2+2*exchanges]
	var frames []*wire.Frame
	b.Reset()
	for sent, i := 0, 0; sent < Window; i++ {
		body := bytes.Repeat([]byte{byte(i)}, (i*37)%(2*maxPacked))
		f := &wire.Frame{Body: body}
		if i%3 == 0 {
			f.Flags = wire.FlagFlush
		}
		msg := f.AppendTo(nil)
		appendFrame(&b, x.id, typeMsg, msg)
		frames = append(frames, f)
		sent += max(len(msg), minMessage)
	}
	if _, err := p.c.Write(b.Bytes()); err != nil {
		t.Fatal(err)
	}
	testsync.WaitFor(t, "the mixed messages queued", func() bool {
		x.mu.Lock()
		defer x.mu.Unlock()
		msgs, _ := queuedOf(x)
		return msgs == len(frames)
	})
	for i, want := range frames {
		var f wire.Frame
		if err := x.RecvMsg(&f); err != nil {
			t.Fatalf("message %d of %d: %v", i, len(frames), err)
		}
		if f.Flags != want.Flags || !bytes.Equal(f.Body, want.Body) {
			t.Fatalf("message %d: flags %#x, body of %d bytes, want %#x and %d bytes of %d", i, f.Flags, len(f.Body), want.Flags, len(want.Body), byte(i))
		}
	}
	x.mu.Lock()
	msgs, _ := queuedOf(x)
	kept := packedCap(x)
	x.mu.Unlock()
	if msgs != 0 || kept > maxPacked*packAfter {
		t.Fatalf("%d messages queued, %d bytes of packed buffer kept once all were read", msgs, kept)
	}
	p.works(t, host)
}

package transport

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/paster-dev/paster/internal/testsync"
	"github.com/paster-dev/paster/plugins/internal/wire"
)

// rawPeer is a hostile plugin: the other end of a host Mux's connection,
// written to as raw frames, with the connection's arena mapped so that it
// can write anything anywhere in it.
type rawPeer struct {
	c     net.Conn
	mem   []byte // the whole arena; the peer's half is the second
	opens chan uint32
	log   *testsync.Buffer // the host Mux's log
	// gate, held, stops the peer reading at its next frame.
	gate sync.Mutex

	mu        sync.Mutex
	released  []uint64 // slots of the host's half it released, in order
	cancelled []uint32 // exchanges the host cancelled, in order
}

// hostilePair returns a host Mux (the initiator, with shared memory) and
// the raw peer on the other end of its one connection, which has
// announced its mapping (typeShm). The host serves nothing the peer opens.
func hostilePair(t *testing.T) (*Mux, *rawPeer) {
	t.Helper()
	refuse := func(context.Context, string, uint64, *Exchange) error { return errors.New("nothing served here") }
	return hostilePairServing(t, refuse)
}

// hostilePairServing is hostilePair with h serving what the peer opens.
func hostilePairServing(t *testing.T, h Handler) (*Mux, *rawPeer) {
	t.Helper()
	f, err := NewArena()
	if err != nil {
		t.Skip("no shared memory here:", err)
	}
	defer f.Close()
	hc, pc := socketPair(t)
	var log testsync.Buffer
	host := NewMux([]net.Conn{hc}, true, h, hclog.New(&hclog.LoggerOptions{Output: &log}), f)
	if host.conns[0].shm == nil {
		t.Fatal("the host did not map the arena")
	}
	mem, err := mapArena(f)
	if err != nil {
		t.Fatal(err)
	}
	p := &rawPeer{c: pc, mem: mem, opens: make(chan uint32, 64), log: &log}
	read := make(chan struct{})
	go func() {
		defer close(read)
		p.read()
	}()
	t.Cleanup(func() {
		host.Close()
		pc.Close()
		<-read
		unmapArena(mem)
	})
	p.send(0, typeShm, shmParams())
	waitPeerMapped(t, host)
	return host, p
}

// logged fails the test unless the host's log has want.
func (p *rawPeer) logged(t *testing.T, want string) {
	t.Helper()
	if !strings.Contains(p.log.String(), want) {
		t.Errorf("the host's log lacks %q:\n%s", want, p.log.String())
	}
}

// read records the exchanges the host opens and the slots it releases
// until the connection fails.
func (p *rawPeer) read() {
	br := bufio.NewReader(p.c)
	var hdr [headerLen]byte
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			return
		}
		p.gate.Lock() // held by a test that stops the peer reading
		b := make([]byte, binary.BigEndian.Uint32(hdr[:4]))
		_, err := io.ReadFull(br, b)
		p.gate.Unlock()
		if err != nil {
			return
		}
		switch id := binary.BigEndian.Uint32(hdr[4:8]); {
		case hdr[8] == typeOpen:
			p.opens <- id
		case hdr[8] == typeCancel:
			p.mu.Lock()
			p.cancelled = append(p.cancelled, id)
			p.mu.Unlock()
		case id == 0 && hdr[8] == typeRelease:
			p.mu.Lock()
			for len(b) > 0 {
				i, k := binary.Uvarint(b)
				if k <= 0 {
					break
				}
				p.released = append(p.released, i)
				b = b[k:]
			}
			p.mu.Unlock()
		}
	}
}

// send writes one raw frame; a connection the host closed is not an error.
func (p *rawPeer) send(id uint32, typ byte, payload []byte) {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(payload)))
	b = binary.BigEndian.AppendUint32(b, id)
	b = append(append(b, typ), payload...)
	_, _ = p.c.Write(b)
}

// slot returns the peer's slot i, to write a body into.
func (p *rawPeer) slot(i int) []byte {
	return p.mem[ArenaSize/2+i*slotSize : ArenaSize/2+(i+1)*slotSize]
}

// slotFrame is a typeSlot payload: slot i, n bytes, then f without body.
func slotFrame(i, n uint64, f *wire.Frame) []byte {
	b := binary.AppendUvarint(nil, i)
	b = binary.AppendUvarint(b, n)
	return f.AppendTo(b)
}

// open opens a host exchange whose request head reached the peer, and
// returns it with the id the peer saw.
func (p *rawPeer) open(t *testing.T, host *Mux) *Exchange {
	t.Helper()
	x, err := host.open(context.Background(), "GET", 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(x.end)
	if err := x.SendMsg(&wire.Frame{Flags: wire.FlagHead | wire.FlagEnd, Method: "GET", URI: "/"}); err != nil {
		t.Fatal(err)
	}
	if id := testsync.Recv(t, "the exchange's open frame", p.opens); id != x.id {
		t.Fatalf("the peer saw exchange %d open, the host %d", id, x.id)
	}
	return x
}

// works checks that a new exchange on host still gets an answer with a
// body in slot 0 of the peer's half, and releases that slot.
func (p *rawPeer) works(t *testing.T, host *Mux) {
	t.Helper()
	x := p.open(t, host)
	want := []byte("still answering")
	copy(p.slot(0), want)
	p.send(x.id, typeSlot, slotFrame(0, uint64(len(want)), &wire.Frame{Flags: wire.FlagHead | wire.FlagEnd, Status: 200}))
	var f wire.Frame
	if err := x.RecvMsg(&f); err != nil {
		t.Fatal("another exchange after the hostile frames:", err)
	}
	if f.Status != 200 || !bytes.Equal(f.Body, want) {
		t.Fatalf("another exchange got status %d, body %q", f.Status, f.Body)
	}
	x.release(true)
	x.end()
}

// TestHostileSlotFrames: slot frames naming slots out of range, bodies
// larger than a slot, or not decoding fail that exchange only (no panic,
// no read outside the arena), and hold nothing.
func TestHostileSlotFrames(t *testing.T) {
	t.Parallel()
	head := &wire.Frame{Flags: wire.FlagHead, Status: 200}
	for name, payload := range map[string][]byte{
		"slot past the half":        slotFrame(arenaSlots, 1, head),
		"negative slot":             slotFrame(1<<63, 1, head),
		"huge slot":                 slotFrame(math.MaxUint64, 1, head),
		"longer than a slot":        slotFrame(1, slotSize+1, head),
		"negative length":           slotFrame(1, 1<<63, head),
		"huge length":               slotFrame(1, math.MaxUint64, head),
		"empty":                     nil,
		"varint that never ends":    bytes.Repeat([]byte{0x80}, 16),
		"no length":                 {1},
		"length that never ends":    append([]byte{1}, bytes.Repeat([]byte{0xff}, 11)...),
		"frame that does not parse": append(binary.AppendUvarint([]byte{1}, 8), 0xff, 0xff, 0xff, 0xff, 0xff),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			host, p := hostilePair(t)
			x := p.open(t, host)
			p.send(x.id, typeSlot, payload)
			var f wire.Frame
			if err := x.RecvMsg(&f); err == nil {
				t.Fatalf("a bad slot frame received as status %d, %d bytes", f.Status, len(f.Body))
			}
			x.end()
			p.works(t, host)
			testsync.WaitFor(t, "nothing held", func() bool { return idle(host) })
		})
	}
}

// TestLateSlotReleased: a slot frame for an exchange the host has
// ended (an honest peer's, sent before it saw the end) gets its slot
// released even when nothing else is written afterwards: the reader only
// buffers the release, and another goroutine writes it.
func TestLateSlotReleased(t *testing.T) {
	t.Parallel()
	host, p := hostilePair(t)
	x := p.open(t, host)
	x.end()
	p.send(x.id, typeSlot, slotFrame(5, 1, &wire.Frame{}))
	testsync.WaitFor(t, "the late slot released", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.released) == 1 && p.released[0] == 5
	})
}

// TestHostileLateSlotFlood: slot frames for exchanges that ended or never
// were cost the host a bounded write buffer, whatever their number, even
// while the peer reads nothing (the host's writes block, and the reader
// only buffers the releases); and the host logs it.
func TestHostileLateSlotFlood(t *testing.T) {
	t.Parallel()
	host, p := hostilePair(t)
	live := p.open(t, host)
	x := p.open(t, host)
	x.end()
	p.gate.Lock()
	const n = 20000
	var flood bytes.Buffer
	for i := range n {
		for _, id := range []uint32{x.id, 1 << 30, 2} {
			b := slotFrame(uint64(i%arenaSlots), 1, &wire.Frame{})
			appendFrame(&flood, id, typeSlot, b)
		}
	}
	if _, err := p.c.Write(flood.Bytes()); err != nil {
		t.Fatal(err)
	}
	// Frames are read in order: once the live exchange has this one, the
	// flood was read.
	p.send(live.id, typeMsg, (&wire.Frame{Flags: wire.FlagHead, Status: 200}).AppendTo(nil))
	var f wire.Frame
	if err := live.RecvMsg(&f); err != nil {
		t.Fatal(err)
	}
	cn := host.conns[0]
	cn.wmu.Lock()
	buffered := len(cn.wbuf)
	cn.wmu.Unlock()
	p.gate.Unlock()
	// A release frame of one slot is headerLen+1 bytes.
	if max := arenaSlots * (headerLen + 1); buffered > max {
		t.Fatalf("the host buffered %d bytes for %d late slot frames; at most %d slots can be out (%d bytes of releases)", buffered, 3*n, arenaSlots, max)
	}
	live.end()
	p.works(t, host)
	testsync.WaitFor(t, "nothing held", func() bool { return idle(host) })
	p.logged(t, "slot frame naming a slot whose release is on its way")
}

// TestHostileSlotQueueFlood: a peer that sends an exchange more slot
// frames than slotWindow while the host is not reading it ends that
// exchange (its queue stays bounded); the connection's other exchanges go
// on.
func TestHostileSlotQueueFlood(t *testing.T) {
	t.Parallel()
	host, p := hostilePair(t)
	x := p.open(t, host)
	const n = 20000
	var flood bytes.Buffer
	for i := range n {
		b := slotFrame(uint64(i%arenaSlots), 1, &wire.Frame{})
		appendFrame(&flood, x.id, typeSlot, b)
	}
	if _, err := p.c.Write(flood.Bytes()); err != nil {
		t.Fatal(err)
	}
	p.works(t, host)
	x.mu.Lock()
	queued := len(x.q) - x.qh
	x.mu.Unlock()
	if queued > slotWindow {
		t.Fatalf("%d slot frames queued on an exchange; its peer may have %d out", queued, slotWindow)
	}
	var f wire.Frame
	if err := x.RecvMsg(&f); err == nil {
		t.Fatal("the flooded exchange still receives")
	}
	x.end()
	p.works(t, host)
	testsync.WaitFor(t, "nothing held", func() bool { return idle(host) })
	p.logged(t, "more slot frames queued on an exchange than its slot window")
}

// TestHostileWindowUpdate: a window update no honest peer sends (more
// than was sent, up to 2^64-1, or adding up past it) fails the
// connection, logged, rather than wrapping the exchange's credit
// negative, which stalled its sender for good.
func TestHostileWindowUpdate(t *testing.T) {
	t.Parallel()
	for name, updates := range map[string][]uint64{
		"2^64-1":         {math.MaxUint64},
		"2^63":           {1 << 63},
		"2^64-Window":    {math.MaxUint64 - Window + 1},
		"adding up past": {1 << 62, 1 << 62},
		"maxCredit":      {maxCredit},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			host, p := hostilePair(t)
			x := p.open(t, host)
			for _, v := range updates {
				p.send(x.id, typeWindow, binary.AppendUvarint(nil, v))
			}
			// Once x has this (or failed), the host has read the updates:
			// the sender starts with what they made of its credit.
			p.send(x.id, typeMsg, (&wire.Frame{Flags: wire.FlagHead, Status: 200}).AppendTo(nil))
			var f wire.Frame
			_ = x.RecvMsg(&f)
			sent := make(chan error, 1)
			go func() {
				body := &wire.Frame{Body: make([]byte, wire.ChunkSize)}
				for {
					if err := x.SendMsg(body); err != nil {
						sent <- err
						return
					}
				}
			}()
			testsync.Recv(t, "the sender to fail", sent)
			p.logged(t, "window update beyond what was sent")
		})
	}
}

// TestHostileWindowFlood: the host counts what the peer sends on an
// exchange against the Window it gave (each message at least minMessage
// bytes): tiny messages up to the window are all received, one beyond it
// fails the connection, logged, instead of queueing without bound (a
// 3-byte message held a 512-byte buffer).
func TestHostileWindowFlood(t *testing.T) {
	t.Parallel()
	tiny := (&wire.Frame{Flags: wire.FlagFlush}).AppendTo(nil)
	if len(tiny) != minMessage {
		t.Fatalf("a flush frame is %d bytes, want %d", len(tiny), minMessage)
	}
	// An honest peer sends while less than Window is uncredited: the
	// last of these goes with one byte of credit left.
	within := (Window + minMessage - 1) / minMessage
	for name, n := range map[string]int{"within": within, "beyond": within + 1} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			host, p := hostilePair(t)
			x := p.open(t, host)
			var flood bytes.Buffer
			for range n {
				appendFrame(&flood, x.id, typeMsg, tiny)
			}
			if _, err := p.c.Write(flood.Bytes()); err != nil {
				t.Fatal(err)
			}
			p.send(x.id, typeClose, nil)
			// What the queued messages hold, once all are queued (the
			// close came after them), unless the connection failed.
			var held int
			testsync.WaitFor(t, "the messages queued", func() bool {
				x.mu.Lock()
				defer x.mu.Unlock()
				_, held = queuedOf(x)
				return x.closed || x.err != nil
			})
			type result struct {
				n   int
				err error
			}
			got := make(chan result, 1)
			go func() {
				var f wire.Frame
				for i := 0; ; i++ {
					if err := x.RecvMsg(&f); err != nil {
						got <- result{i, err}
						return
					}
				}
			}()
			r := testsync.Recv(t, "the exchange to end", got)
			if name == "within" {
				if held > 3*Window {
					t.Fatalf("%d tiny messages queued held %d bytes of buffers, %.0f windows", n, held, float64(held)/Window)
				}
				if r.n != n || !errors.Is(r.err, io.EOF) {
					t.Fatalf("received %d of %d messages within the window, then %v", r.n, n, r.err)
				}
				p.works(t, host)
				return
			}
			if !errors.Is(r.err, ErrConnLost) {
				t.Fatalf("received %d messages, %d of them beyond the window, then %v", r.n, r.n-within, r.err)
			}
			p.logged(t, "messages beyond the exchange's window")
		})
	}
}

// appendFrame appends a raw frame to b.
func appendFrame(b *bytes.Buffer, id uint32, typ byte, payload []byte) {
	b.Write(binary.BigEndian.AppendUint32(nil, uint32(len(payload))))
	b.Write(binary.BigEndian.AppendUint32(nil, id))
	b.WriteByte(typ)
	b.Write(payload)
}

// opens appends n open frames to b, for the peer's exchanges (even IDs)
// from first on.
func opens(b *bytes.Buffer, first uint32, n int) {
	payload := append(binary.AppendUvarint(binary.AppendUvarint(nil, 0), 0), "m"...)
	for i := range uint32(n) {
		appendFrame(b, first+2*i, typeOpen, payload)
	}
}

// TestHostileExchangeFlood: a peer opening exchanges to the host gets
// at most maxServed served at once; the rest are refused (reset), logged,
// and once the served ones end, new ones are served again. A peer that
// opens on and on without reading the refusals loses the connection.
func TestHostileExchangeFlood(t *testing.T) {
	t.Parallel()
	const limit = 50
	t.Run("refused", func(t *testing.T) {
		t.Parallel()
		var running, peak, calls atomic.Int32
		release := make(chan struct{})
		host, p := hostilePairServing(t, func(ctx context.Context, _ string, _ uint64, _ *Exchange) error {
			calls.Add(1)
			n := running.Add(1)
			for old := peak.Load(); n > old && !peak.CompareAndSwap(old, n); old = peak.Load() {
			}
			defer running.Add(-1)
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil
		})
		host.maxServed.Store(limit)
		const extra = 20
		var b bytes.Buffer
		opens(&b, 2, limit+extra)
		if _, err := p.c.Write(b.Bytes()); err != nil {
			t.Fatal(err)
		}
		cancelled := func() int {
			p.mu.Lock()
			defer p.mu.Unlock()
			return len(p.cancelled)
		}
		testsync.WaitFor(t, "every open served or refused", func() bool {
			return int(running.Load())+cancelled() >= limit+extra
		})
		if n := peak.Load(); n > limit {
			t.Fatalf("%d exchanges the peer opened served at once; the limit is %d", n, limit)
		}
		p.mu.Lock()
		for i, id := range p.cancelled {
			if want := uint32(2 + 2*(limit+i)); id != want {
				t.Errorf("refused exchange %d, want %d", id, want)
			}
		}
		p.mu.Unlock()
		p.logged(t, "more exchanges open at once than the limit; refused")
		close(release)
		testsync.WaitFor(t, "the served exchanges ended", func() bool { return running.Load() == 0 })
		b.Reset()
		opens(&b, 2+2*(limit+extra), 1)
		if _, err := p.c.Write(b.Bytes()); err != nil {
			t.Fatal(err)
		}
		testsync.WaitFor(t, "an exchange served after the others ended", func() bool {
			return calls.Load() == limit+1 && running.Load() == 0 && host.conns[0].served.Load() == 0
		})
		if n := cancelled(); n != extra {
			t.Errorf("%d exchanges refused, want %d", n, extra)
		}
		p.works(t, host)
	})
	t.Run("refusals unread", func(t *testing.T) {
		t.Parallel()
		host, p := hostilePairServing(t, func(ctx context.Context, _ string, _ uint64, _ *Exchange) error {
			<-ctx.Done()
			return nil
		})
		host.maxServed.Store(limit)
		p.gate.Lock()
		defer p.gate.Unlock()
		var b bytes.Buffer
		opens(&b, 2, 200000)
		_, _ = p.c.Write(b.Bytes()) // the host may close the connection meanwhile
		testsync.Recv(t, "the connection to fail", host.Done())
		p.logged(t, "exchanges opened beyond the limit while the refusals go unread")
	})
}

// TestHostileBigFrames: a frame larger than wire.MaxMessage, an open
// frame larger than maxOpen (whose method name the host would keep as
// long as the exchange), or a frame that carries no message (close,
// cancel, window, shm, release: a few bytes when honest) larger than
// maxControl fails the connection, logged, before the host reads (and
// allocates) its payload.
func TestHostileBigFrames(t *testing.T) {
	t.Parallel()
	for name, hdr := range map[string]struct {
		typ byte
		n   uint32
		log string
	}{
		"message": {typeMsg, wire.MaxMessage + 1, "frame larger than wire.MaxMessage"},
		"open":    {typeOpen, maxOpen + 1, "open frame larger than maxOpen"},
		"close":   {typeClose, maxControl + 1, "control frame larger than maxControl"},
		"cancel":  {typeCancel, maxControl + 1, "control frame larger than maxControl"},
		"window":  {typeWindow, wire.MaxMessage, "control frame larger than maxControl"},
		"shm":     {typeShm, maxControl + 1, "control frame larger than maxControl"},
		"release": {typeRelease, maxControl + 1, "control frame larger than maxControl"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			host, p := hostilePair(t)
			b := binary.BigEndian.AppendUint32(nil, hdr.n)
			b = binary.BigEndian.AppendUint32(b, 2)
			b = append(b, hdr.typ)
			// The payload: two uvarints of 0 and a long method name.
			b = append(b, 0, 0)
			b = append(b, bytes.Repeat([]byte{'m'}, int(min(hdr.n, max(maxOpen, maxControl)+1))-2)...)
			_, _ = p.c.Write(b)
			testsync.Recv(t, "the connection to fail", host.Done())
			p.logged(t, hdr.log)
		})
	}
}

// TestHostileStopsReading: a plugin that reads nothing (hung, or
// hostile) while the host has frames for it loses the connection once a
// write has waited Mux.stall, logged: the writing goroutine is not held
// for good, nor what other senders buffer meanwhile.
func TestHostileStopsReading(t *testing.T) {
	t.Parallel()
	host, p := hostilePair(t)
	host.stall.Store(int64(2 * stallCheck))
	var xs []*Exchange
	for range 8 {
		xs = append(xs, p.open(t, host))
	}
	p.gate.Lock()
	defer p.gate.Unlock()
	// More than the socket holds: a window on each exchange.
	for _, x := range xs {
		go func() {
			body := &wire.Frame{Body: make([]byte, wire.ChunkSize)}
			for range Window / wire.ChunkSize {
				if x.SendMsg(body) != nil {
					return
				}
			}
		}()
	}
	testsync.Recv(t, "the connection to fail", host.Done())
	p.logged(t, "the peer read nothing while a write waited")
}

// TestHostileReleases: releases of slots never sent, out of range, twice,
// or by the thousand free nothing the host has not sent, and never free a
// slot twice.
func TestHostileReleases(t *testing.T) {
	t.Parallel()
	host, p := hostilePair(t)
	x := p.open(t, host)
	// One slot sent and released twice, one taken and not sent.
	sent := append(x.TakeSlot(), bytes.Repeat([]byte{1}, directBody)...)
	if err := x.SendMsg(&wire.Frame{Body: sent}); err != nil {
		t.Fatal(err)
	}
	filled := x.TakeSlot()
	si, fi := host.conns[0].shm.slotOf(sent), host.conns[0].shm.slotOf(filled)
	var rel []byte
	for _, i := range []uint64{uint64(si), uint64(si), uint64(fi), arenaSlots, 1 << 63, math.MaxUint64} {
		rel = binary.AppendUvarint(rel, i)
	}
	p.send(0, typeRelease, rel)
	// By the thousand, in frames of at most maxControl bytes (larger ones
	// fail the connection: TestHostileBigFrames).
	rel = nil
	for i := range 5000 {
		rel = binary.AppendUvarint(rel, uint64(i%(2*arenaSlots)))
		if len(rel) == maxControl {
			p.send(0, typeRelease, rel)
			rel = nil
		}
	}
	rel = append(rel, 0x80) // a varint that does not end
	p.send(0, typeRelease, rel)
	p.send(0, typeRelease, nil)
	p.works(t, host)
	a := host.conns[0].shm
	a.mu.Lock()
	free, state := len(a.free), a.state[fi]
	a.mu.Unlock()
	if free != arenaSlots-1 || state != slotFilled {
		t.Fatalf("after hostile releases %d slots free (want %d), the slot being filled in state %d", free, arenaSlots-1, state)
	}
	x.GiveSlot(filled)
	x.end()
	testsync.WaitFor(t, "nothing held", func() bool { return idle(host) })
}

// TestHostileShm: a peer announcing a layout other than the host's gets
// no slots; announcing it again, or again after slots went both ways,
// changes nothing; a peer may send slots before it announced.
func TestHostileShm(t *testing.T) {
	t.Parallel()
	t.Run("other layout", func(t *testing.T) {
		t.Parallel()
		host, p := hostilePair(t)
		a := host.conns[0].shm
		a.mu.Lock()
		a.peer = false
		a.mu.Unlock()
		for _, b := range [][]byte{nil, {0xff}, binary.AppendUvarint(binary.AppendUvarint(nil, 2*arenaSlots), slotSize), append(shmParams(), 0)} {
			p.send(0, typeShm, b)
		}
		x := p.open(t, host)
		if b := x.TakeSlot(); b != nil {
			t.Fatal("a slot for a peer that announced another layout")
		}
		p.works(t, host) // its slots are read all the same
	})
	t.Run("again", func(t *testing.T) {
		t.Parallel()
		host, p := hostilePair(t)
		p.works(t, host)
		p.send(0, typeShm, shmParams())
		p.send(0, typeShm, shmParams())
		p.works(t, host)
		testsync.WaitFor(t, "nothing held", func() bool { return idle(host) })
	})
}

// TestHostileSlotRewritten: the peer rewriting a slot while the host
// holds it changes only the bytes of that body: its length and the arena's
// bounds stay, and the slot is released as usual.
func TestHostileSlotRewritten(t *testing.T) {
	t.Parallel()
	host, p := hostilePair(t)
	x := p.open(t, host)
	p.send(x.id, typeSlot, slotFrame(3, slotSize, &wire.Frame{Flags: wire.FlagHead, Status: 200}))
	var f wire.Frame
	if err := x.RecvMsg(&f); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for b := byte(0); ; b++ {
			select {
			case <-stop:
				return
			default:
				copy(p.slot(3), bytes.Repeat([]byte{b}, slotSize))
			}
		}
	}()
	var sum int
	for range 20 {
		for _, c := range f.Body {
			sum += int(c)
		}
	}
	close(stop)
	<-done
	if len(f.Body) != slotSize || cap(f.Body) != slotSize {
		t.Fatalf("body of %d bytes, capacity %d; want %d", len(f.Body), cap(f.Body), slotSize)
	}
	p.send(x.id, typeClose, nil)
	if err := x.RecvMsg(&f); !errors.Is(err, io.EOF) {
		t.Fatal("after close:", err)
	}
	testsync.WaitFor(t, "the slot released", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.released) == 1 && p.released[0] == 3
	})
	x.end()
	testsync.WaitFor(t, "nothing held", func() bool { return idle(host) })
	_ = sum
}

// TestHostileLargeMessages: a peer that sends a large message (over
// maxSmallMessage, within its window) on each of many exchanges, where
// nothing reads them, makes the host hold at most Mux.budget of them
// (or one message) however many exchanges: its reader waits for them to
// be consumed, and when none is through Mux.stall the connection fails,
// logged, and every exchange on it with ErrConnLost. On exchanges the host
// opened (requests it forwarded, whose answers nobody reads yet) and on
// exchanges the peer opened (whose handlers read nothing).
func TestHostileLargeMessages(t *testing.T) {
	t.Parallel()
	const (
		exchanges = 24
		size      = 2 << 20 // each message
		budget    = 5 << 20 // two messages fit, not three
	)
	msg := (&wire.Frame{Flags: wire.FlagHead, Status: 200, Body: make([]byte, size)}).AppendTo(nil)
	for _, opened := range []string{"by the host", "by the peer"} {
		t.Run(opened, func(t *testing.T) {
			t.Parallel()
			var served sync.WaitGroup
			host, p := hostilePairServing(t, func(ctx context.Context, _ string, _ uint64, _ *Exchange) error {
				served.Done()
				<-ctx.Done() // reads nothing
				return nil
			})
			host.budget.Store(budget)
			// Nothing is ever consumed: how long the reader waits does
			// not matter.
			host.stall.Store(int64(100 * time.Millisecond))
			var ids []uint32
			var xs []*Exchange
			var flood bytes.Buffer
			if opened == "by the host" {
				for range exchanges {
					x := p.open(t, host)
					xs = append(xs, x)
					ids = append(ids, x.id)
				}
			} else {
				served.Add(exchanges)
				opens(&flood, 2, exchanges)
				for i := range uint32(exchanges) {
					ids = append(ids, 2+2*i)
				}
			}
			for _, id := range ids {
				appendFrame(&flood, id, typeMsg, msg)
			}
			wrote := make(chan struct{})
			go func() {
				defer close(wrote)
				_, _ = p.c.Write(flood.Bytes()) // fails once the host closes
			}()
			// Before the host's reader waited, it took every message.
			select {
			case <-host.Done():
			case <-wrote:
			}
			cn := host.conns[0]
			cn.lmu.Lock()
			peak := cn.peak
			cn.lmu.Unlock()
			if peak > budget {
				t.Fatalf("the host held %d bytes of large messages (%.1f messages of %d exchanges); the budget is %d", peak, float64(peak)/float64(len(msg)), exchanges, budget)
			}
			testsync.Recv(t, "the connection to fail", host.Done())
			testsync.Recv(t, "the Mux to say so", host.Broken())
			p.logged(t, "data-plane peer broke the protocol, connection closed: large messages left unconsumed beyond the connection's budget")
			for _, x := range xs {
				var f wire.Frame
				if err := x.RecvMsg(&f); !errors.Is(err, ErrConnLost) {
					t.Fatalf("an exchange of the failed connection: %v", err)
				}
			}
			testsync.WaitFor(t, "the queues dropped", func() bool {
				cn.lmu.Lock()
				defer cn.lmu.Unlock()
				return cn.large == 0
			})
		})
	}
}

// TestHostileOddSizes: messages just over a receive buffer's size class
// (or just too large to be packed), a window of them on an exchange
// nobody reads, hold at most about twice the window in buffers and queue
// entries: the classes are close enough together that no size makes the
// host hold many times what the window allows.
func TestHostileOddSizes(t *testing.T) {
	t.Parallel()
	for _, size := range []int{33, maxPacked + 1, 129, 513, 4<<10 + 1, 16<<10 + 1, 64<<10 + 1} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			t.Parallel()
			host, p := hostilePair(t)
			x := p.open(t, host)
			msg := (&wire.Frame{Body: make([]byte, bodyFor(size))}).AppendTo(nil)
			if len(msg) != size {
				t.Fatalf("a message of %d bytes, want %d", len(msg), size)
			}
			// As many as an honest sender sends: while less than Window
			// is uncredited.
			n := (Window + size - 1) / size
			var flood bytes.Buffer
			for range n {
				appendFrame(&flood, x.id, typeMsg, msg)
			}
			if _, err := p.c.Write(flood.Bytes()); err != nil {
				t.Fatal(err)
			}
			var held, queued int
			testsync.WaitFor(t, "the messages queued", func() bool {
				x.mu.Lock()
				defer x.mu.Unlock()
				queued, held = queuedOf(x)
				return queued == n
			})
			if held > 5*Window/2 {
				t.Fatalf("%d messages of %d bytes held %d bytes of buffers, %.1f windows", n, size, held, float64(held)/Window)
			}
		})
	}
}

// bodyFor returns the body length of a body-only wire.Frame of size
// bytes.
func bodyFor(size int) int {
	for b := size; b >= 0; b-- {
		if len((&wire.Frame{Body: make([]byte, b)}).AppendTo(nil)) == size {
			return b
		}
	}
	panic("no body gives that size")
}

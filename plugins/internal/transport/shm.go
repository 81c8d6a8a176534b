package transport

import (
	"encoding/binary"
	"sync"
	"unsafe"

	"github.com/paster-dev/paster/plugins/internal/wire"
)

// Shared-memory body slots (see the package doc, "Bodies in shared
// memory"). An arena is one memory file per connection, mapped by both
// sides: the initiator sends bodies in its first half, the other side in
// the second, each half arenaSlots slots of slotSize bytes. A sender
// takes a free slot of its half, fills it (a request body is read from the
// client's connection straight into it, a handler's writes are copied into
// it) and sends a typeSlot frame naming it; the receiver hands out the
// slot as the frame's Body and, once done with it (its next RecvMsg, or
// the end of the exchange), sends typeRelease: only then may the sender
// fill that slot again. With no free slot the body goes inline as before.
//
// A slot is two body chunks (256 KiB): half the frames, and of the
// wake-ups of both processes, of one chunk per slot (bench/run.sh bulk,
// context switches for 2 GiB up and 2 GiB down: plugin 38k -> 28k, host
// 48k -> 40k). Pages are taken as slots are first used; the free slots
// are a stack, so a transfer keeps reusing the same few.
const (
	slotSize   = 2 * wire.ChunkSize
	arenaSlots = 16
	// ArenaSize is the size of the memory file NewArena makes: both
	// halves.
	ArenaSize = 2 * arenaSlots * slotSize
)

// slot states of a sender's half.
const (
	slotFree   byte = iota
	slotFilled      // taken by a local sender, not yet sent
	slotSent        // sent: the peer may read it until it releases it
)

// arena is one connection's shared memory, as mapped in this process.
type arena struct {
	mem        []byte // the whole mapping; nil once unmapped
	send, recv []byte // this side's half (it writes) and the peer's (it reads)
	sendBase   uintptr

	mu    sync.Mutex
	state [arenaSlots]byte      // of send's slots
	owner [arenaSlots]*Exchange // of send's slots taken or sent
	free  []int                 // send's free slots, the last freed last
	peer  bool                  // the peer mapped it too and said so (typeShm)
	refs  int                   // slots filled or held here: the mapping is in use
	dead  bool                  // the connection failed: unmap once refs is 0
}

func newArenaMapping(mem []byte, initiator bool) *arena {
	a := &arena{mem: mem, send: mem[:ArenaSize/2], recv: mem[ArenaSize/2:]}
	if !initiator {
		a.send, a.recv = a.recv, a.send
	}
	a.sendBase = uintptr(unsafe.Pointer(unsafe.SliceData(a.send)))
	for i := arenaSlots - 1; i >= 0; i-- {
		a.free = append(a.free, i)
	}
	return a
}

// take returns a free slot of this side's half for x to fill, empty with
// a slot's capacity, or nil when there is none (or the peer cannot read
// them).
func (a *arena) take(x *Exchange) []byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := len(a.free)
	if !a.peer || a.dead || n == 0 {
		return nil
	}
	i := a.free[n-1]
	a.free = a.free[:n-1]
	a.state[i] = slotFilled
	a.owner[i] = x
	a.refs++
	return a.send[i*slotSize : i*slotSize : (i+1)*slotSize]
}

// slotOf returns the index of the slot of this side's half that b is a
// slice of, or -1.
func (a *arena) slotOf(b []byte) int {
	if a == nil || cap(b) == 0 {
		return -1
	}
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	if p < a.sendBase || p >= a.sendBase+ArenaSize/2 {
		return -1
	}
	return int((p - a.sendBase) / slotSize)
}

// giveBack frees slot i, which was taken and not sent.
func (a *arena) giveBack(i int) {
	a.mu.Lock()
	var o *Exchange
	if a.state[i] == slotFilled {
		a.state[i] = slotFree
		a.free = append(a.free, i)
		a.refs--
		o, a.owner[i] = a.owner[i], nil
	}
	a.unmapIfDone()
	a.mu.Unlock()
	o.slotDone()
}

// sent records that slot i went to the peer.
func (a *arena) sent(i int) {
	a.mu.Lock()
	if a.state[i] == slotFilled {
		a.state[i] = slotSent
		a.refs--
	}
	a.unmapIfDone()
	a.mu.Unlock()
}

// released frees slot i, which the peer is done reading.
func (a *arena) released(i int) {
	if i < 0 || i >= arenaSlots {
		return
	}
	a.mu.Lock()
	var o *Exchange
	if a.state[i] == slotSent {
		a.state[i] = slotFree
		a.free = append(a.free, i)
		o, a.owner[i] = a.owner[i], nil
	}
	a.mu.Unlock()
	o.slotDone()
}

// hold returns n bytes of the peer's slot i for a receiver to read until
// it calls unhold, or nil when the connection has failed or the frame is
// out of bounds.
func (a *arena) hold(i, n int) []byte {
	if i < 0 || i >= arenaSlots || n < 0 || n > slotSize {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.dead {
		return nil
	}
	a.refs++
	return a.recv[i*slotSize : i*slotSize+n : i*slotSize+n]
}

// isDead reports whether the connection failed.
func (a *arena) isDead() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.dead
}

// unhold ends a hold.
func (a *arena) unhold() {
	a.mu.Lock()
	a.refs--
	a.unmapIfDone()
	a.mu.Unlock()
}

// kill marks the connection failed: no slot is taken or held any more,
// and the mapping goes once nothing here uses it.
func (a *arena) kill() {
	if a == nil {
		return
	}
	a.mu.Lock()
	a.dead = true
	a.unmapIfDone()
	a.mu.Unlock()
}

func (a *arena) unmapIfDone() {
	if a.dead && a.refs == 0 && a.mem != nil {
		unmapArena(a.mem)
		a.mem = nil
	}
}

// shmParams is what a typeShm frame carries: the layout this side
// mapped. The peer sends slots only when its own matches.
func shmParams() []byte {
	b := binary.AppendUvarint(nil, arenaSlots)
	return binary.AppendUvarint(b, slotSize)
}

package transport

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"net"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/paster-dev/paster/internal/rawio"
	"github.com/paster-dev/paster/plugins/internal/wire"
)

// Frame types of a data-plane connection. Every frame is a 9-byte header
// (payload length uint32, exchange ID uint32, type byte, big-endian) and
// its payload.
const (
	// typeOpen starts exchange ID: uvarint tag, uvarint origin (an
	// exchange of the receiver's the call is made for, or 0), then the
	// method name.
	typeOpen byte = 1 + iota
	// typeMsg is one message of the exchange (a wire.Frame's encoding, or
	// a call's bytes).
	typeMsg
	// typeClose: the served side is done; no message follows.
	typeClose
	// typeCancel: the sender abandons the exchange (the client's context
	// ended, the handler failed, or the served side reset it).
	typeCancel
	// typeWindow: uvarint bytes of messages the receiver has consumed; the
	// sender may send as many more.
	typeWindow
	// typeSlot is a message whose body is in a slot of the sender's half
	// of the connection's arena: uvarint slot, uvarint body length, then
	// the wire.Frame encoding without the body. Only its own bytes count
	// against Window (slots have slotWindow).
	typeSlot
	// typeShm, on exchange 0: the sender mapped the connection's arena
	// (shmParams); the receiver may send typeSlot frames. A peer that
	// predates arenas drops it (no exchange 0).
	typeShm
	// typeRelease, on exchange 0: uvarint slots of the receiver's half
	// the sender is done reading.
	typeRelease
)

const headerLen = 9

// Window is how many bytes of messages one side of an exchange may send
// before the receiver has consumed them: what bounds the memory a slow
// reader costs (per exchange and direction), and what keeps it from
// stalling the other exchanges of its connection. 256 KiB moves a 1 GiB
// body at full speed (two 128 KiB chunks in flight); the receiver returns
// credit each half window, which is one window update per large chunk.
// Bodies in shared-memory slots count only their frames' few bytes: the
// slots have a window of their own (slotWindow).
const Window = 256 << 10

// Errors of a Mux's exchanges.
var (
	// ErrConnLost: the connection carrying the exchange failed (the peer
	// process is gone).
	ErrConnLost = errors.New("data-plane connection lost")
	// ErrReset: the peer abandoned the exchange.
	ErrReset = errors.New("exchange reset by peer")
	// errCancelled: the client's context ended (the cause wraps it).
	errCancelled = errors.New("exchange cancelled")
)

// Handler serves one exchange opened by the peer. ctx ends when the peer
// cancels the exchange or the connection fails; tag and method are what
// the peer's Open or Call gave. An error resets the exchange instead of
// ending it cleanly (the peer's next RecvMsg fails rather than io.EOF).
type Handler func(ctx context.Context, method string, tag uint64, x *Exchange) error

// Mux multiplexes exchanges both ways over a few connections to one peer.
// Open and Call pick a connection round-robin; exchanges the peer opens are
// served by the Handler, each in a goroutine of its own (reused while
// idle, since a handler's stack grows once and stays grown).
type Mux struct {
	conns   []*conn
	next    atomic.Uint32
	handler Handler
	log     hclog.Logger
	idleMu  sync.Mutex
	idle    []idler     // idle goroutines, the last idled last
	round   uint64      // reaping rounds so far
	reaper  *time.Timer // runs reap
	reaping bool        // reaper is armed
	done    chan struct{}
	dead    atomic.Int32
	// broken is closed at the first protocol violation (violation).
	broken    chan struct{}
	brokeOnce sync.Once
	// maxServed: the most exchanges the peer opened that one connection
	// serves at once (maxPeerExchanges on the host's side; 0, no limit,
	// on the plugin's). Tests lower it.
	maxServed atomic.Int64
	// stall: how long a write may wait before the connection fails
	// (writeStall on the host's side), and how long the reader may wait
	// for budget with no large message consumed meanwhile. Tests lower it.
	stall atomic.Int64
	// budget: the most bytes of large messages (over maxSmallMessage)
	// one connection may have read and its exchanges not yet consumed;
	// its reader waits for more until they are (maxLarge on the host's
	// side; 0, no limit, on the plugin's). Tests lower it.
	budget atomic.Int64
}

// maxPeerExchanges is how many exchanges a plugin may have open to the
// host on one connection at once, served each in a goroutine of the
// host's: requests to the host's apps, and Core calls not made for a
// request of the host's (those ride the request's goroutine, at most
// maxQueuedCalls of them). More are refused (reset). The host does not
// bound what it opens itself: the plugin does not limit the host.
const maxPeerExchanges = 1 << 14

// NewMux runs exchanges over conns. initiator is true on exactly one side
// (the host): the two sides number their exchanges apart. h serves what the
// peer opens. The Mux owns conns and closes them when they fail or on Close.
// arenas, when given, are the connections' shared memory (NewArena; nil
// for none), the same files on both sides: NewMux maps them (the caller
// may close the files once it returns) and unmaps them when the
// connection fails and nothing uses them any more. A connection whose
// arena cannot be mapped, or whose peer has none, carries bodies inline.
func NewMux(conns []net.Conn, initiator bool, h Handler, log hclog.Logger, arenas ...*os.File) *Mux {
	m := &Mux{handler: h, log: log, done: make(chan struct{}), broken: make(chan struct{})}
	if initiator {
		m.maxServed.Store(maxPeerExchanges)
		m.stall.Store(int64(writeStall))
		m.budget.Store(maxLarge)
	}
	for i, c := range conns {
		cn := &conn{m: m, c: c}
		cn.rw = rawio.New(c) // see package rawio: no sysmon wake-up per read
		cn.nextID = 2
		if initiator {
			cn.nextID = 1
		}
		if i < len(arenas) && arenas[i] != nil {
			mem, err := mapArena(arenas[i])
			if err != nil {
				log.Warn("data-plane bodies go inline: cannot map the shared memory", "error", err)
			} else {
				cn.shm = newArenaMapping(mem, initiator)
			}
		}
		m.conns = append(m.conns, cn)
	}
	for _, cn := range m.conns {
		go cn.read()
		if cn.shm != nil {
			_, _ = cn.write(0, typeShm, shmParams(), nil, true)
		}
		if initiator {
			time.AfterFunc(stallCheck, cn.checkStall)
		}
	}
	return m
}

// Done is closed when every connection has failed or the Mux is closed.
func (m *Mux) Done() <-chan struct{} { return m.done }

// Broken is closed when the peer broke the protocol on one of the
// connections (logged at Error as "data-plane peer broke the protocol,
// connection closed: ..."; that connection failed, the others go on):
// a peer that does so is buggy or hostile, and the host restarts it.
func (m *Mux) Broken() <-chan struct{} { return m.broken }

// SetStall sets, to d > 0, how long a write may wait, the peer reading
// nothing, before its connection fails as a protocol violation, and how
// long the reader may wait for room for a large message with none
// consumed (writeStall on the initiator's side by default; 0, no limit,
// on the other's).
func (m *Mux) SetStall(d time.Duration) { m.stall.Store(int64(d)) }

// Close closes every connection; exchanges in flight fail with ErrConnLost.
func (m *Mux) Close() error {
	for _, cn := range m.conns {
		cn.fail(net.ErrClosed)
	}
	return nil
}

// maxIdle bounds the idle goroutines kept for the next exchanges, and
// idleTime how long one stays idle before it ends (between one and two
// idleTimes). Work goes to the goroutine that became idle last, so that
// those beyond what the load needs time out.
var maxIdle = 4 * runtime.GOMAXPROCS(0)

const idleTime = time.Second

// worker is an idle goroutine's queue: the exchange it is to serve next,
// or nil to end.
type worker chan *Exchange

// idler is an idle goroutine, and the reaping round it became idle in.
type idler struct {
	w     worker
	round uint64
}

// goServe serves x (the handler's goroutine of a served exchange) in an
// idle worker goroutine, or a new one.
func (m *Mux) goServe(x *Exchange) {
	m.idleMu.Lock()
	if n := len(m.idle); n > 0 {
		w := m.idle[n-1].w
		m.idle = m.idle[:n-1]
		m.idleMu.Unlock()
		w <- x
		return
	}
	m.idleMu.Unlock()
	go m.worker(x)
}

// worker serves x and the exchanges handed to it while it is idle. Its own
// frame is small (the waiting is in rest): a handler runs on top of it, and
// may park there for long (a request in WaitForSignal) on a stack that
// should stay at its starting size.
func (m *Mux) worker(x *Exchange) {
	var w worker
	for x != nil {
		x.serve()
		x = m.rest(&w)
	}
}

// rest makes the calling worker idle until work comes (which it returns),
// or until the reaper ends it (nil), or not at all when enough are idle
// (nil). No timer per rest: one reaper, armed while any worker is idle,
// ends those that stayed idle through a whole round of idleTime.
func (m *Mux) rest(wp *worker) *Exchange {
	m.idleMu.Lock()
	if len(m.idle) >= maxIdle {
		m.idleMu.Unlock()
		return nil
	}
	if *wp == nil {
		*wp = make(worker, 1)
	}
	m.idle = append(m.idle, idler{*wp, m.round})
	if m.reaper == nil {
		m.reaper = time.AfterFunc(idleTime, m.reap)
	} else if !m.reaping {
		m.reaper.Reset(idleTime)
	}
	m.reaping = true
	m.idleMu.Unlock()
	return <-*wp
}

// reap ends the workers idle since before the last round (the first ones:
// the last idled are reused first) and rearms itself while any is idle.
func (m *Mux) reap() {
	m.idleMu.Lock()
	n := 0
	for n < len(m.idle) && m.idle[n].round != m.round {
		m.idle[n].w <- nil
		n++
	}
	m.idle = slices.Delete(m.idle, 0, n)
	m.round++
	m.reaping = len(m.idle) > 0
	if m.reaping {
		m.reaper.Reset(idleTime)
	}
	m.idleMu.Unlock()
}

type tagKey struct{}

// WithTag returns ctx carrying tag: an exchange opened with it hands the
// peer's Handler that tag (the host sends a request's Core scope so).
func WithTag(ctx context.Context, tag uint64) context.Context {
	return context.WithValue(ctx, tagKey{}, tag)
}

// Open starts an HTTP exchange (for Forward and Serve); it ends when ctx
// ends (noticed once it is used: registered on ctx by its first SendMsg,
// or watched by a RecvMsg waiting). It fails when the connections are
// gone.
func (m *Mux) Open(ctx context.Context) (Stream, error) {
	tag, _ := ctx.Value(tagKey{}).(uint64)
	return m.open(ctx, "", tag)
}

func (m *Mux) open(ctx context.Context, method string, tag uint64) (*Exchange, error) {
	n := uint32(len(m.conns))
	start := m.next.Add(1)
	for i := range n {
		cn := m.conns[(start+i)%n]
		x, err := cn.open(ctx, method, tag, 0)
		if err == nil || i == n-1 {
			return x, err
		}
	}
	return nil, ErrConnLost
}

// Call runs method on the peer with in and returns its reply; it ends early
// with ctx's error when ctx ends (the peer's handler sees its context end),
// and fails with ErrConnLost when the peer is gone, or with the error the
// peer's handler returned (its text).
func (m *Mux) Call(ctx context.Context, method string, in []byte) ([]byte, error) {
	x, err := m.open(ctx, method, 0)
	if err != nil {
		return nil, err
	}
	x.selfWatch = true
	return x.call(ctx, in)
}

// CallFor is Call made for exchange via, which the peer opened: the peer
// runs it in the goroutine that waits for via's messages (see RecvMsg), so
// that a call that parks (WaitForSignal) costs the peer no goroutine.
func CallFor(ctx context.Context, via *Exchange, method string, in []byte) ([]byte, error) {
	x, err := via.cn.open(ctx, method, 0, via.id)
	if err != nil {
		return nil, err
	}
	x.selfWatch = true
	return x.call(ctx, in)
}

func (x *Exchange) call(ctx context.Context, in []byte) ([]byte, error) {
	defer x.end()
	if err := x.SendMsg(&wire.Blob{Data: in}); err != nil {
		return nil, err
	}
	var out wire.Blob
	if err := x.RecvMsg(&out); err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	if len(out.Data) == 0 {
		return nil, errors.New("empty reply")
	}
	if out.Data[0] != 0 {
		return nil, errors.New(string(out.Data[1:]))
	}
	return out.Data[1:], nil
}

// ServeCall answers a call exchange with f's reply to its one message.
func ServeCall(ctx context.Context, x *Exchange, f func(ctx context.Context, in []byte) ([]byte, error)) error {
	var in wire.Blob
	if err := x.RecvMsg(&in); err != nil {
		return err
	}
	out, err := f(ctx, in.Data)
	return x.sendReply(out, err)
}

// ServeCallLater is ServeCall for a reply that may come later: f gets the
// call's one message and answers it by calling reply, exactly once, before
// it returns or later from any goroutine (until then the exchange stays
// open, and ctx ends if the peer abandons the call). A reply made later
// joins the connection's buffer and goes out with the next write, or
// soon: the replies of many calls answered together (a Signal's waiters)
// share writes.
func ServeCallLater(ctx context.Context, x *Exchange, f func(ctx context.Context, in []byte, reply func(out []byte, err error))) error {
	var in wire.Blob
	if err := x.RecvMsg(&in); err != nil {
		return err
	}
	x.later = true
	f(ctx, in.Data, x.replyLater)
	return nil
}

// replyLater answers a call served by ServeCallLater and ends it.
func (x *Exchange) replyLater(out []byte, err error) {
	_ = x.sendReply(out, err)
	x.finishWith(nil, false)
}

func (x *Exchange) sendReply(out []byte, err error) error {
	reply := make([]byte, 0, 1+len(out))
	if err != nil {
		reply = append(append(reply, 1), err.Error()...)
	} else {
		reply = append(append(reply, 0), out...)
	}
	// The reply goes out with the close frame that follows as
	// ServeCall's handler returns: one write, not two, per call (under a
	// Signal that wakes 10,000 parked calls, 10,000 fewer).
	return x.send(&wire.Blob{Data: reply}, true)
}

// conn is one connection of a Mux.
type conn struct {
	m   *Mux
	c   net.Conn
	rw  *rawio.Conn // c's reads and writes, with raw system calls
	shm *arena      // nil: bodies go inline

	mu     sync.Mutex
	nextID uint32
	xs     xtable
	err    error // set once the connection failed

	// Writing: whoever sends appends its frame to wbuf; if nobody is
	// writing, it writes wbuf and everything appended meanwhile, so
	// frames that are ready together go out in one write.
	wmu     sync.Mutex
	wbuf    []byte
	spare   []byte
	writing bool
	// flushing: a flushSoon goroutine is on its way.
	flushing bool
	werr     error
	// relBuffered: slots of the peer's half (bit i for slot i) whose
	// release releaseUnread buffered in wbuf, not yet taken for writing.
	// A slot frame naming one again before the release went out is
	// hostile (the peer cannot refill a slot it has not had back), so its
	// release is not buffered twice: a flood of late slot frames costs
	// the reader, which only buffers, at most one release per slot.
	relBuffered uint32
	refusals    int    // refusals buffered in wbuf, not yet taken (refuse)
	writes      uint64 // writes done, for checkStall

	// checkStall's, under wmu.
	lastWrites uint64
	progress   time.Time // when a write was last seen done, or none in progress

	served atomic.Int64 // exchanges the peer opened being served (accept)

	// Large messages (over maxSmallMessage) read and not yet consumed
	// (reserve, consumed).
	lmu   sync.Mutex
	large int           // their bytes: at most Mux.budget, or one message
	peak  int           // the most large has been (tests read it)
	lwait chan struct{} // closed when large drops, while the reader waits
	ldead bool          // the connection failed: the reader waits no more

	warnMu sync.Mutex
	warned map[string]uint64 // hostile's counts
}

// hostile logs what the peer did that no honest peer does and the
// connection survives (the frame was dropped, or the exchange ended): the
// first time, and then the 10th, 100th, ... time, so that a flood costs a
// few lines.
func (cn *conn) hostile(what string, args ...any) {
	cn.warnMu.Lock()
	if cn.warned == nil {
		cn.warned = map[string]uint64{}
	}
	cn.warned[what]++
	times := cn.warned[what]
	cn.warnMu.Unlock()
	n := times
	for n%10 == 0 {
		n /= 10
	}
	if n == 1 {
		cn.m.log.Warn("data-plane peer misbehaved: "+what, append(args, "times", times)...)
	}
}

// violation fails the connection for a frame no honest peer sends, one
// that leaves no exchange of it to trust (its flow control, its
// numbering), and logs what the peer did.
func (cn *conn) violation(what string, args ...any) {
	cn.m.log.Error("data-plane peer broke the protocol, connection closed: "+what, args...)
	cn.fail(errors.New("protocol violation: " + what))
	cn.m.brokeOnce.Do(func() { close(cn.m.broken) })
}

// relBuffered has a bit for every slot of a half.
const _ = uint32(1<<arenaSlots - 1)

func (cn *conn) open(ctx context.Context, method string, tag uint64, origin uint32) (*Exchange, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	x := newExchange(cn)
	// No watch registered on ctx (a context.AfterFunc cost two
	// allocations, and stopping it a third of ending the exchange): the
	// goroutine that receives waits for ctx too (wait), and whoever
	// holds the exchange ends it (end).
	x.cctx = ctx
	cn.mu.Lock()
	if cn.err != nil {
		cn.mu.Unlock()
		return nil, cn.err
	}
	// IDs wrap after 2^31 exchanges: 0 is the connection's own, and one
	// still open (a long-lived tunnel) is skipped.
	for x.id = cn.nextID; x.id == 0 || cn.xs.get(x.id) != nil; x.id = cn.nextID {
		cn.nextID += 2
	}
	cn.nextID += 2
	cn.xs.put(x)
	cn.mu.Unlock()
	var p [binary.MaxVarintLen64]byte
	b := binary.AppendUvarint(p[:0], tag)
	b = binary.AppendUvarint(b, uint64(origin))
	b = append(b, method...)
	// The open frame goes out with the first message.
	if _, err := cn.write(x.id, typeOpen, b, nil, false); err != nil {
		cn.forget(x)
		return nil, err
	}
	return x, nil
}

// forget takes x out of the exchanges (if it is still there: once the
// connection failed, a new exchange may have its ID).
func (cn *conn) forget(x *Exchange) {
	cn.mu.Lock()
	cn.xs.del(x)
	cn.mu.Unlock()
}

// xtable holds a connection's open exchanges by ID: a slice indexed by
// the ID's low bits, at most half full, and a map for the IDs whose slot
// is taken. Written by hand rather than a map because IDs come nearly in
// sequence (each side numbers its own upwards), so they rarely collide,
// and a slice slot costs less to fill, find and clear than a map entry:
// ending an exchange (its delete from a map of 10,000) was a visible part
// of the host's CPU when a Signal woke 10,000 parked requests.
//
// The table follows what is open, both ways: it doubles when more than
// half full (then a quarter full) and halves when less than an eighth
// full (then under a quarter full), down to minSlots, so a peak's memory
// (256 KiB a connection after 10,000 parked requests) goes back as the
// exchanges end. Between two rebuilds the exchanges open must double or
// halve: a workload that stays within a factor of two rebuilds at most
// once, and a rebuild's cost, spread over the exchanges that opened or
// ended since the last, is a few slots each.
type xtable struct {
	slots []*Exchange
	more  map[uint32]*Exchange // IDs whose slot another holds
	n     int
}

// minSlots is the least size of a table that holds any exchange.
const minSlots = 64

func (t *xtable) get(id uint32) *Exchange {
	if len(t.slots) > 0 {
		if x := t.slots[id&uint32(len(t.slots)-1)]; x != nil && x.id == id {
			return x
		}
	}
	return t.more[id]
}

// put adds x, whose ID is not in t.
func (t *xtable) put(x *Exchange) {
	if 2*(t.n+1) > len(t.slots) {
		t.resize(max(minSlots, 2*len(t.slots)))
	}
	t.n++
	if i := x.id & uint32(len(t.slots)-1); t.slots[i] == nil {
		t.slots[i] = x
		return
	}
	if t.more == nil {
		t.more = map[uint32]*Exchange{}
	}
	t.more[x.id] = x
}

// del removes x, if t holds it.
func (t *xtable) del(x *Exchange) {
	if len(t.slots) == 0 {
		return
	}
	if i := x.id & uint32(len(t.slots)-1); t.slots[i] == x {
		t.slots[i] = nil
	} else if t.more[x.id] == x {
		delete(t.more, x.id)
	} else {
		return
	}
	t.n--
	if len(t.slots) > minSlots && 8*t.n < len(t.slots) {
		t.resize(len(t.slots) / 2)
	}
}

// resize moves t's exchanges to a table of size slots (a power of two,
// more than twice t.n); the map of those whose slot another holds is
// built anew too, since a Go map keeps its size once grown.
func (t *xtable) resize(size int) {
	old := *t
	*t = xtable{slots: make([]*Exchange, size)}
	for _, y := range old.slots {
		if y != nil {
			t.put(y)
		}
	}
	for _, y := range old.more {
		t.put(y)
	}
}

// all returns every exchange in t.
func (t *xtable) all() []*Exchange {
	xs := make([]*Exchange, 0, t.n)
	for _, x := range t.slots {
		if x != nil {
			xs = append(xs, x)
		}
	}
	for _, x := range t.more {
		xs = append(xs, x)
	}
	return xs
}

// write sends one frame: payload p, or m's encoding when m is not nil. It
// returns the payload's length. Without flush the frame only joins the
// buffer: it goes out with the next frame written with flush, which the
// caller sends soon.
func (cn *conn) write(id uint32, typ byte, p []byte, m any, flush bool) (int, error) {
	cn.wmu.Lock()
	return cn.writeLocked(id, typ, p, m, flush)
}

// writeLocked is write, called with wmu held, which it releases.
func (cn *conn) writeLocked(id uint32, typ byte, p []byte, m any, flush bool) (int, error) {
	if cn.werr != nil {
		err := cn.werr
		cn.wmu.Unlock()
		if f, ok := m.(*wire.Frame); ok {
			cn.giveSlot(f.Body)
		}
		return 0, err
	}
	start := len(cn.wbuf)
	cn.wbuf = append(cn.wbuf, 0, 0, 0, 0, byte(id>>24), byte(id>>16), byte(id>>8), byte(id), typ)
	// A large body that goes out now is written from where it is, after
	// what is buffered, in one writev; else it is copied into the buffer
	// (the caller reuses it once write returns).
	var tail []byte
	switch v := m.(type) {
	case nil:
		cn.wbuf = append(cn.wbuf, p...)
	case *wire.Frame:
		if i := cn.shm.slotOf(v.Body); i >= 0 {
			if len(v.Body) < directBody {
				// Not worth a slot: inline, and the slot is free again.
				cn.wbuf = v.AppendTo(cn.wbuf)
				cn.shm.giveBack(i)
				break
			}
			cn.wbuf[start+8] = typeSlot
			cn.wbuf = binary.AppendUvarint(cn.wbuf, uint64(i))
			cn.wbuf = binary.AppendUvarint(cn.wbuf, uint64(len(v.Body)))
			body := v.Body
			v.Body = nil
			cn.wbuf = v.AppendTo(cn.wbuf)
			v.Body = body
			cn.shm.sent(i)
		} else if flush && !cn.writing && len(v.Body) >= directBody && v.Flags&wire.FlagError == 0 {
			cn.wbuf = v.AppendHeadTo(cn.wbuf)
			tail = v.Body
		} else {
			cn.wbuf = v.AppendTo(cn.wbuf)
		}
	case *wire.Blob:
		cn.wbuf = append(cn.wbuf, v.Data...)
	default:
		cn.wbuf = cn.wbuf[:start]
		cn.wmu.Unlock()
		return 0, fmt.Errorf("transport: cannot send %T", m)
	}
	n := len(cn.wbuf) - start - headerLen + len(tail)
	binary.BigEndian.PutUint32(cn.wbuf[start:], uint32(n))
	if cn.writing || !flush {
		cn.wmu.Unlock()
		return n, nil
	}
	return n, cn.writeOut(tail)
}

// keepWrite is the largest write buffer a connection keeps once its
// writer is idle (it keeps two): a load whose writes stay under it
// allocates none, and a burst's larger buffers (up to 1 MiB, reused
// while the burst lasts) are not held after it.
const keepWrite = 64 << 10

// writeOut writes the buffer, then tail, then whatever was buffered
// meanwhile, until nothing is left. It is called with wmu held and nobody
// writing, and returns with wmu released; a failed write fails the
// connection.
func (cn *conn) writeOut(tail []byte) error {
	cn.writing = true
	for len(cn.wbuf) > 0 && cn.werr == nil {
		buf := cn.wbuf
		cn.wbuf = cn.spare[:0]
		cn.spare = nil
		cn.relBuffered = 0
		cn.refusals = 0
		cn.wmu.Unlock()
		var err error
		if tail != nil {
			bufs := net.Buffers{buf, tail}
			_, err = bufs.WriteTo(cn.c)
			tail = nil
		} else {
			_, err = cn.rw.Write(buf)
		}
		cn.wmu.Lock()
		cn.writes++
		if cap(buf) <= 1<<20 {
			cn.spare = buf[:0]
		}
		if err != nil {
			cn.werr = err
		}
	}
	cn.writing = false
	// Buffers a burst grew (replies answered together, many exchanges'
	// frames) are reused while the writer finds more to write, and go
	// back once it is idle: a connection holds no more than its usual
	// load's.
	if cap(cn.spare) > keepWrite {
		cn.spare = nil
	}
	if len(cn.wbuf) == 0 && cap(cn.wbuf) > keepWrite {
		cn.wbuf = nil
	}
	err := cn.werr
	cn.wmu.Unlock()
	if err != nil {
		cn.fail(err)
	}
	return err
}

// flushSoon writes what the reader goroutine buffered (it must not write
// itself: see read) from a goroutine of its own, unless a writer is at it
// already or one is on its way. Without it, a frame the reader buffers
// (the release of a late slot frame) waits for the next frame another
// goroutine writes, which may never come: the peer's slot stays out for
// good.
func (cn *conn) flushSoon() {
	cn.wmu.Lock()
	if cn.writing || cn.flushing || len(cn.wbuf) == 0 || cn.werr != nil {
		cn.wmu.Unlock()
		return
	}
	cn.flushing = true
	cn.wmu.Unlock()
	go func() {
		cn.wmu.Lock()
		cn.flushing = false
		if cn.writing {
			// The writer at it takes what is buffered.
			cn.wmu.Unlock()
			return
		}
		_ = cn.writeOut(nil)
	}()
}

// directBody is the body size from which a frame's body is not copied:
// write sends it from the caller's buffer, RecvMsg hands out the received
// payload.
const directBody = 16 << 10

// fail ends the connection: every exchange fails with ErrConnLost.
func (cn *conn) fail(cause error) {
	cn.mu.Lock()
	if cn.err != nil {
		cn.mu.Unlock()
		return
	}
	cn.err = fmt.Errorf("%w: %w", ErrConnLost, cause)
	xs := cn.xs.all()
	cn.xs = xtable{}
	cn.mu.Unlock()
	cn.wmu.Lock()
	if cn.werr == nil {
		cn.werr = cn.err
	}
	cn.wmu.Unlock()
	cn.c.Close()
	cn.shm.kill()
	cn.lmu.Lock()
	cn.ldead = true
	w := cn.lwait
	cn.lwait = nil
	cn.lmu.Unlock()
	if w != nil {
		close(w)
	}
	for _, x := range xs {
		x.fail(cn.err, false)
	}
	if cn.m.dead.Add(1) == int32(len(cn.m.conns)) {
		close(cn.m.done)
	}
}

// bufPools recycle received payloads by size class: powers of two from
// 32 bytes to 64 KiB, then a chunk's frame. The small classes keep what
// tiny messages cost down: a peer may have Window/minMessage of them
// queued on an exchange (a 3-byte message in a 512-byte buffer cost 170
// times its size, in a 32-byte one 11; most of them are packed instead,
// see maxPacked). Classes a factor of two apart
// keep any size from costing more than about twice its bytes: a window
// of messages one byte over the classes' sizes before (4 KiB + 1 in a
// buffer of a chunk's frame) held 33 windows of buffers.
var bufPools [13]sync.Pool

// bufSizes are bufPools' buffer sizes.
var bufSizes = [len(bufPools)]int{32, 64, 128, 256, 512, 1 << 10, 2 << 10, 4 << 10, 8 << 10, 16 << 10, 32 << 10, 64 << 10, wire.ChunkSize + 4<<10}

// bufClass returns the class of the buffers for n bytes, or -1 when n is
// larger than any (such a buffer is made to measure, not recycled).
func bufClass(n int) int {
	switch {
	case n <= 32:
		return 0
	case n <= 64<<10:
		return bits.Len(uint(n-1)) - 5
	case n <= bufSizes[len(bufSizes)-1]:
		return len(bufSizes) - 1
	}
	return -1
}

// getBuf returns a buffer of n bytes.
func getBuf(n int) *[]byte {
	i := bufClass(n)
	if i < 0 {
		b := make([]byte, n)
		return &b
	}
	if b, ok := bufPools[i].Get().(*[]byte); ok {
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, bufSizes[i])
	return &b
}

func putBuf(b *[]byte) {
	if i := bufClass(cap(*b)); i >= 0 && cap(*b) == bufSizes[i] {
		bufPools[i].Put(b)
	}
}

// maxSmallMessage bounds the messages that count only against their
// exchange's Window: every body frame an honest sender sends (at most
// wire.ChunkSize of body: Forward's request bodies, a handler's response
// writer, a hijacked connection's tunnel; larger bodies go in slots)
// with its few bytes of flags and lengths, and a head or last frame with
// such a body and up to 64 KiB of headers or trailers. Larger messages
// (heads with larger headers, calls with larger values: up to
// wire.MaxMessage) are large: they come out of their connection's
// budget too (Mux.budget, reserve). So one exchange holds at most Window
// plus one message of at most maxSmallMessage (the one that crosses the
// window), whatever the peer sends, and a connection at most maxLarge of
// large messages besides, whatever the number of its exchanges.
const maxSmallMessage = wire.ChunkSize + 64<<10

// maxLarge is the host's Mux.budget: what a connection may hold of large
// messages unconsumed, however many exchanges they came on. A message up
// to wire.MaxMessage is always taken when nothing else large is held.
const maxLarge = wire.MaxMessage

// reserve counts a large message of n bytes the reader is about to read
// against the connection's budget (Mux.budget). While the message does
// not fit beside those held (and some are held), the reader waits for
// exchanges to consume them: honest large messages (heads, calls) are
// consumed at once, by the goroutine waiting for them or serving them.
// A wait through Mux.stall with none consumed is a protocol violation
// (the peer sent large messages where they are not read). It returns
// false, the connection failed, then.
func (cn *conn) reserve(n int) bool {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	cn.lmu.Lock()
	for {
		budget := int(cn.m.budget.Load())
		if cn.ldead {
			cn.lmu.Unlock()
			return false
		}
		if budget <= 0 || cn.large == 0 || cn.large+n <= budget {
			break
		}
		if cn.lwait == nil {
			cn.lwait = make(chan struct{})
		}
		w := cn.lwait
		cn.lmu.Unlock()
		var expired <-chan time.Time
		if stall := time.Duration(cn.m.stall.Load()); stall > 0 {
			if timer == nil {
				timer = time.NewTimer(stall)
			} else {
				timer.Reset(stall)
			}
			expired = timer.C
		}
		select {
		case <-w:
		case <-expired:
			cn.violation("large messages left unconsumed beyond the connection's budget", "budget", budget, "message", n)
			return false
		}
		cn.lmu.Lock()
	}
	cn.large += n
	cn.peak = max(cn.peak, cn.large)
	cn.lmu.Unlock()
	return true
}

// consumed uncounts a message of n bytes the reader read that left the
// connection's hands (its exchange consumed it, or dropped it): a large
// one gives its budget back and wakes the reader waiting for it.
func (cn *conn) consumed(n int) {
	if n <= maxSmallMessage {
		return
	}
	cn.lmu.Lock()
	cn.large -= n
	w := cn.lwait
	cn.lwait = nil
	cn.lmu.Unlock()
	if w != nil {
		close(w)
	}
}

// drop gives back a payload the reader read that nobody consumes.
func (cn *conn) drop(p *[]byte) {
	cn.consumed(len(*p))
	putBuf(p)
}

// read demultiplexes the connection's frames until it fails. It never
// writes (so that two peers that both write a full socket still drain each
// other) and never waits for an exchange (flow control bounds what it
// queues), except, on the host's side, for room for a large message in
// the connection's budget (reserve), which honest peers' large messages
// leave at once.
func (cn *conn) read() {
	br := bufio.NewReaderSize(cn.rw, 64<<10)
	var hdr [headerLen]byte
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			cn.fail(err)
			return
		}
		n := binary.BigEndian.Uint32(hdr[0:4])
		id := binary.BigEndian.Uint32(hdr[4:8])
		switch {
		case n > wire.MaxMessage:
			cn.violation("frame larger than wire.MaxMessage", "bytes", n)
			return
		case hdr[8] == typeOpen && n > maxOpen:
			// Its method name would be kept as long as the exchange.
			cn.violation("open frame larger than maxOpen", "bytes", n)
			return
		case n > maxControl && hdr[8] >= typeClose && hdr[8] <= typeRelease && hdr[8] != typeSlot:
			cn.violation("control frame larger than maxControl", "type", hdr[8], "bytes", n)
			return
		}
		if n > maxSmallMessage && !cn.reserve(int(n)) {
			return
		}
		p := getBuf(int(n))
		if _, err := io.ReadFull(br, *p); err != nil {
			cn.consumed(int(n))
			cn.fail(err)
			return
		}
		if hdr[8] == typeOpen {
			if !cn.accept(id, p) {
				return
			}
			continue
		}
		if id == 0 {
			cn.control(hdr[8], *p)
			cn.drop(p)
			continue
		}
		cn.mu.Lock()
		x := cn.xs.get(id)
		cn.mu.Unlock()
		if x == nil {
			// An exchange this side has ended: late frames are dropped
			// (their slots given back).
			if hdr[8] == typeSlot {
				cn.releaseUnread(false, *p)
			}
			cn.drop(p)
			continue
		}
		switch hdr[8] {
		case typeMsg, typeSlot:
			if !x.push(p, hdr[8] == typeSlot) {
				cn.violation("messages beyond the exchange's window", "exchange", id, "window", Window)
				return
			}
			continue
		case typeClose:
			x.peerClosed()
		case typeCancel:
			x.reset()
		case typeWindow:
			if v, k := binary.Uvarint(*p); k > 0 && !x.credited(v) {
				cn.drop(p)
				cn.violation("window update beyond what was sent", "exchange", id, "bytes", v)
				return
			}
		}
		cn.drop(p)
	}
}

// writeStall is how long the host lets a write to the plugin's socket
// wait, the plugin reading nothing, before it fails the connection
// (Mux.stall): a plugin that stopped reading (hung, or hostile) would
// otherwise hold the writing goroutine for good, and everything other
// senders append to the buffer meanwhile. An honest plugin's reader
// never waits for its exchanges. stallCheck is how often the host looks.
const (
	writeStall = time.Minute
	stallCheck = time.Second
)

// checkStall runs every stallCheck on the host's side, until the
// connection fails: a write in progress with none done for Mux.stall
// fails the connection.
func (cn *conn) checkStall() {
	now := time.Now()
	cn.wmu.Lock()
	if !cn.writing || cn.writes != cn.lastWrites || cn.progress.IsZero() {
		cn.progress = now
	}
	progress := cn.progress
	cn.lastWrites = cn.writes
	failed := cn.werr != nil
	cn.wmu.Unlock()
	if failed {
		return
	}
	if stall := time.Duration(cn.m.stall.Load()); now.Sub(progress) >= stall {
		cn.violation("the peer read nothing while a write waited", "waited", stall)
		return
	}
	time.AfterFunc(stallCheck, cn.checkStall)
}

// maxOpen bounds an open frame: two uvarints and a method name (a Core
// call's, or none).
const maxOpen = 4 << 10

// maxControl bounds the frames that carry no message: close and cancel
// (empty), window (a uvarint), shm (shmParams), release (a uvarint per
// slot, arenaSlots at most). Larger ones would cost the reader an
// allocation of up to wire.MaxMessage each, for nothing.
const maxControl = 4 << 10

// accept serves an exchange the peer opened. An open this side cannot
// take (numbered as this side's, or as one open) is dropped; one beyond
// the host's limit (maxPeerExchanges) is refused, which the peer sees as
// a reset. It returns false when the connection failed because the peer
// does not read the refusals.
func (cn *conn) accept(id uint32, p *[]byte) bool {
	tag, k := binary.Uvarint(*p)
	var origin uint64
	if k > 0 {
		var k2 int
		origin, k2 = binary.Uvarint((*p)[k:])
		if k2 <= 0 {
			k = k2
		} else {
			k += k2
		}
	}
	if k <= 0 {
		putBuf(p)
		cn.hostile("open frame that does not parse", "exchange", id)
		return true
	}
	var method string
	if k < len(*p) {
		method = string((*p)[k:])
	}
	putBuf(p)
	x := newExchange(cn)
	x.id = id
	cn.mu.Lock()
	var bad string
	switch {
	case cn.err != nil:
	case id == 0 || id%2 == cn.nextID%2:
		bad = "open of an exchange numbered as this side's"
	case cn.xs.get(id) != nil:
		bad = "open of an exchange already open"
	}
	if cn.err != nil || bad != "" {
		cn.mu.Unlock()
		if bad != "" {
			cn.hostile(bad, "exchange", id)
		}
		return true
	}
	// Not a child of anything, but of the client's context of the
	// exchange the call is made for: fail ends every exchange of a failed
	// connection, so the context needs no parent to end with it (and
	// costs no registration in one); a call the goroutine waiting for
	// that exchange runs (runCall) ends with the client's context, which
	// that goroutine is not watching meanwhile.
	parent := context.Background()
	var via *Exchange
	if origin != 0 {
		via = cn.xs.get(uint32(origin))
		if via != nil && via.cctx != nil {
			parent = via.cctx
		}
	}
	ctx, cancel := context.WithCancel(parent)
	x.cancel = cancel
	cn.xs.put(x)
	cn.mu.Unlock()
	x.method, x.tag, x.ctx = method, tag, ctx
	if origin != 0 && via != nil && via.runCall(x) {
		return true
	}
	if max := cn.m.maxServed.Load(); max > 0 {
		if cn.served.Add(1) > max {
			cn.served.Add(-1)
			x.fail(errRefused, true)
			cn.hostile("more exchanges open at once than the limit; refused", "limit", max)
			return cn.refuse(id)
		}
		x.counted = true
	}
	cn.m.goServe(x)
	return true
}

// errRefused ends an exchange the peer opened beyond maxPeerExchanges.
var errRefused = errors.New("transport: too many exchanges open at once")

// refuse tells the peer exchange id is refused: a cancel, which the
// reader only buffers. A peer that opens on and on beyond the limit
// without reading the refusals (more than maxRefusals pile up unwritten)
// fails the connection: it returns false.
func (cn *conn) refuse(id uint32) bool {
	cn.wmu.Lock()
	cn.refusals++
	if cn.refusals > maxRefusals {
		cn.wmu.Unlock()
		cn.violation("exchanges opened beyond the limit while the refusals go unread", "limit", cn.m.maxServed.Load())
		return false
	}
	_, _ = cn.writeLocked(id, typeCancel, nil, nil, false)
	cn.flushSoon()
	return true
}

// maxRefusals bounds the refusals buffered and not yet written.
const maxRefusals = 1024

// serve runs the Handler for x, a served exchange, and ends x.
func (x *Exchange) serve() {
	err := x.cn.m.handler(x.ctx, x.method, x.tag, x)
	if x.later {
		return // replyLater ends it (ServeCallLater returned nil)
	}
	x.finishWith(err, true)
}

// uncount takes a served exchange that has ended out of its conn's count.
func (x *Exchange) uncount() {
	if x.counted {
		x.cn.served.Add(-1)
	}
}

// runCall queues c, a call made for x, for the goroutine that waits in x's
// RecvMsg to serve; it returns false when x is not a client exchange or has
// ended.
func (x *Exchange) runCall(c *Exchange) bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.cctx == nil || x.err != nil {
		return false
	}
	if len(x.calls) >= maxQueuedCalls {
		return false
	}
	x.calls = append(x.calls, c)
	x.wakeRecv()
	x.cond.Broadcast()
	return true
}

// maxQueuedCalls bounds the calls queued for one exchange's RecvMsg to
// serve; more run in goroutines of their own, as calls made for no
// exchange (and count against maxPeerExchanges).
const maxQueuedCalls = 64

// Exchange is one exchange of a Mux: a Stream of *wire.Frame (HTTP) or
// *wire.Blob (calls) messages. One goroutine may send while another
// receives.
type Exchange struct {
	cn *conn
	id uint32
	// cctx is the client side's context: when it ends, the exchange is
	// abandoned by the goroutine waiting in RecvMsg (wait), or by stop's
	// watch, which is registered only once the exchange is used without
	// that goroutine waiting (watch).
	cctx context.Context
	stop func() bool // stops the watch; guarded by mu
	// selfWatch: the client's own code (Forward, Call) waits in RecvMsg
	// whenever it waits, and SendMsg needs no watch. The opener's.
	selfWatch bool
	cancel    context.CancelFunc // served side: ends the handler's context
	counted   bool               // served side: counts in its conn's served

	// The served side's Handler arguments (serve).
	ctx    context.Context
	method string
	tag    uint64
	// later: the Handler answers after it returns (ServeCallLater), and
	// ends the exchange then. The serving goroutine's.
	later bool

	mu       sync.Mutex
	cond     sync.Cond
	q        []queued
	qh       int
	qa       [2]queued // q's first backing array
	pk       *packed   // q's packed messages, once it has had some
	qslots   int       // slot frames in q: at most slotWindow
	closed   bool      // the peer sent typeClose
	drain    bool      // RecvMsg returns err only once the queue is empty
	err      error     // the exchange failed or ended on this side
	credit   int
	consumed int
	// inflight counts the bytes of messages received and not yet
	// credited back (at least minMessage each): an honest peer sends a
	// message only while that is below Window (push).
	inflight int
	calls    []*Exchange // calls made for this exchange, served by RecvMsg
	// A client's RecvMsg waits on wake (from wakes, while waiting) and
	// cctx.Done() at once, not on cond: waiting says it is there, and
	// whoever changes what it waits for sends it one wake-up.
	waiting bool
	wake    chan struct{}

	// held is the payload of the last large *wire.Frame RecvMsg returned,
	// which its Body is a slice of; the next RecvMsg recycles it. Only the
	// receiving goroutine uses it.
	held *[]byte
	// heldSlot is the peer's slot the last Frame RecvMsg returned has
	// its Body in, or -1; the next RecvMsg, or the end of the exchange,
	// releases it. Guarded by mu.
	heldSlot int
	// shared: the last Frame RecvMsg returned had its Body in held or a
	// slot, which the caller may pass again: the next small message must
	// not be decoded into that Body's capacity (the buffer is back in its
	// pool, the slot back with the peer). The receiving goroutine's.
	shared bool
	// slotsOut counts this side's slots the exchange has taken and the
	// peer not released (at most slotWindow). Guarded by mu.
	slotsOut int
	// relPending counts releases buffered, not yet written (the
	// receiving goroutine's): they go out by slotWindow/2, with a window
	// update, or before RecvMsg waits.
	relPending int
}

// queued is a received message: a typeMsg or typeSlot frame's payload;
// or, with p nil, a run of n packed messages, in pk.
type queued struct {
	p    *[]byte
	n    uint32
	slot bool
}

// A message of at most maxPacked bytes that arrives while packAfter
// others are queued on its exchange is packed: its bytes are appended
// to the exchange's pk (packed), after its length, and its payload
// buffer goes back to its pool at once; its queue entry is only a run
// of such messages. A window of 3-byte messages (Window/minMessage of
// them) in buffers of their own cost about 6.7 MB an exchange with
// their queue entries (runtime.MemStats, TestHostileTinyFlood), 26
// windows; packed, a message costs its bytes and one of length, which
// pk holds in at most twice their size (pack): about 2.5 windows. A
// larger message costs at most about three times its bytes in a buffer
// of its own (bufPools) with its entry, and is not copied twice. The
// first few queued keep their buffers, so that an exchange whose
// reader keeps up (every honest one's, most of the time) packs nothing.
const (
	maxPacked = 64
	packAfter = 16
)

// packed holds an exchange's packed messages: b[h:], each after its
// length (a uvarint). Exchanges that never pack (most) have none, which
// keeps an Exchange in a smaller size class.
type packed struct {
	b []byte
	h int
}

// pack appends the message in p to pk, as the last of a run of packed
// messages in q. Called with mu held.
func (x *Exchange) pack(p []byte) {
	if x.pk == nil {
		x.pk = new(packed)
	}
	k := x.pk
	need := binary.MaxVarintLen32 + len(p)
	if len(k.b)+need > cap(k.b) {
		// b keeps at most twice the bytes of the messages it holds: it
		// is compacted in place while they fill at most half of it
		// (copying at most what was taken out since it last was), else
		// moved to a buffer twice their size.
		live := len(k.b) - k.h
		if live+need <= cap(k.b)/2 {
			k.b = k.b[:copy(k.b, k.b[k.h:])]
		} else {
			k.b = append(make([]byte, 0, 2*(live+need)), k.b[k.h:]...)
		}
		k.h = 0
	}
	k.b = binary.AppendUvarint(k.b, uint64(len(p)))
	k.b = append(k.b, p...)
	if last := len(x.q) - 1; last >= x.qh && x.q[last].p == nil {
		x.q[last].n++
		return
	}
	x.q = append(x.q, queued{n: 1})
}

// unpack takes the first packed message out of pk into a buffer of its
// own, as if it had never been packed. Called with mu held.
func (x *Exchange) unpack() *[]byte {
	k := x.pk
	n, l := binary.Uvarint(k.b[k.h:])
	p := getBuf(int(n))
	k.h += l + copy(*p, k.b[k.h+l:])
	if k.h == len(k.b) {
		// Nothing left packed: a burst's buffer is not kept.
		k.b, k.h = k.b[:0], 0
		if cap(k.b) > maxPacked*packAfter {
			k.b = nil
		}
	}
	return p
}

func newExchange(cn *conn) *Exchange {
	x := &Exchange{cn: cn, credit: Window, heldSlot: -1}
	x.q = x.qa[:0]
	x.cond.L = &x.mu
	return x
}

// minMessage is the least a received message counts against Window
// here: a wire.Frame's encoding is at least 3 bytes (flags, trailer
// count, body length), and a call's one message each way, which may be
// empty, is the first of its exchange. It bounds the messages a peer may
// have queued on an exchange, whatever their size, to Window/minMessage.
const minMessage = 3

// push queues a message the peer sent (the reader's), or drops it when
// the exchange has ended here. It returns false, queueing nothing, when
// the peer sent it beyond the Window it was given: only a hostile peer
// does (see inflight), and the reader fails the connection.
func (x *Exchange) push(p *[]byte, slot bool) bool {
	x.mu.Lock()
	if x.err == nil && x.inflight >= Window {
		x.mu.Unlock()
		x.cn.drop(p)
		return false
	}
	over := x.err == nil && slot && x.qslots >= slotWindow
	if x.err != nil || over {
		x.mu.Unlock()
		if slot {
			x.cn.releaseUnread(false, *p)
		}
		x.cn.drop(p)
		if over {
			// The peer sent more slots than it may have out: a hostile
			// peer's. The exchange ends, as if the peer had cancelled
			// it, and the peer is told (the reader only buffers what it
			// writes).
			x.cn.hostile("more slot frames queued on an exchange than its slot window", "slot_window", slotWindow)
			x.failed(errSlotWindow, true, false)
			_, _ = x.cn.write(x.id, typeCancel, nil, nil, false)
			x.cn.flushSoon()
		}
		return true
	}
	if slot {
		x.qslots++
	}
	x.inflight += max(len(*p), minMessage)
	packed := !slot && len(*p) <= maxPacked && len(x.q)-x.qh >= packAfter
	if packed {
		x.pack(*p)
	} else {
		x.q = append(x.q, queued{p: p, slot: slot})
	}
	x.wakeRecv()
	x.mu.Unlock()
	x.cond.Broadcast()
	if packed {
		putBuf(p)
	}
	return true
}

// errSlotWindow ends an exchange whose peer sent more slot frames than
// slotWindow before this side read them.
var errSlotWindow = errors.New("transport: the peer sent more slots than its window")

func (x *Exchange) peerClosed() {
	x.mu.Lock()
	x.closed = true
	x.wakeRecv()
	x.mu.Unlock()
	x.cond.Broadcast()
}

// maxCredit bounds an exchange's credit: a peer returns only what it
// consumed, so the credit is at most Window, and Window plus one message
// for the moment between a message's write and SendMsg counting it.
const maxCredit = Window + wire.MaxMessage

// credited adds n bytes the peer consumed to x's credit; it returns false,
// adding nothing, when that would take the credit past maxCredit (only a
// hostile peer credits more than was sent).
func (x *Exchange) credited(n uint64) bool {
	x.mu.Lock()
	ok := n <= maxCredit && x.credit+int(n) <= maxCredit
	if ok {
		x.credit += int(n)
	}
	x.mu.Unlock()
	x.cond.Broadcast()
	return ok
}

// fail ends the exchange with err; with reset, the peer ended it (the
// served side's context ends).
func (x *Exchange) fail(err error, reset bool) { x.failed(err, reset, true) }

// failed is fail; without flush, the releases of the slots nobody will
// read are written by another goroutine (the reader calls it so).
func (x *Exchange) failed(err error, reset, flush bool) {
	x.mu.Lock()
	if x.err == nil {
		x.err = err
	}
	x.drain = false
	q := x.q[x.qh:]
	x.q, x.qh, x.qslots = nil, 0, 0
	x.pk = nil
	calls := x.calls
	x.calls = nil
	x.wakeRecv()
	x.mu.Unlock()
	for _, c := range calls {
		x.cn.m.goServe(c)
	}
	// The slots of messages nobody will read go back now (fail runs on
	// the reader's goroutine only once the connection failed, when the
	// write fails at once).
	var unread [][]byte
	for _, e := range q {
		if e.slot {
			unread = append(unread, *e.p)
		}
	}
	if len(unread) > 0 {
		x.cn.releaseUnread(flush, unread...)
	}
	for _, e := range q {
		if e.p != nil {
			x.cn.drop(e.p)
		}
	}
	x.cond.Broadcast()
	if x.cancel != nil {
		x.cancel()
	}
	if reset {
		x.cn.forget(x)
	}
}

// reset ends the exchange the peer abandoned: what it sent before is still
// received (a handler that failed after it had answered in part, as a gRPC
// status after messages), then RecvMsg fails with ErrReset.
func (x *Exchange) reset() {
	x.mu.Lock()
	if x.err == nil {
		x.err, x.drain = ErrReset, true
	}
	calls := x.calls
	x.calls = nil
	x.wakeRecv()
	x.mu.Unlock()
	for _, c := range calls {
		x.cn.m.goServe(c)
	}
	x.cond.Broadcast()
	if x.cancel != nil {
		x.cancel()
	}
	x.cn.forget(x)
}

// abandon ends a client exchange when its context ends: the peer is told
// unless it is done already.
func (x *Exchange) abandon(err error) {
	x.mu.Lock()
	tell := x.err == nil && !x.closed
	x.mu.Unlock()
	x.fail(err, true)
	if tell {
		_, _ = x.cn.write(x.id, typeCancel, nil, nil, true)
	}
}

// end ends a client exchange (Forward and Call end theirs when done with
// them): the peer is told unless it is done already. Only the receiving
// goroutine may call it, and it receives no more (another goroutine ends
// the exchange with cancelled).
func (x *Exchange) end() {
	// The receiving goroutine is not waiting (it is here), so nothing
	// sends on wake once it is taken, abandon's wake-up included.
	x.mu.Lock()
	stop, w := x.stop, x.wake
	x.wake = nil
	x.mu.Unlock()
	if stop == nil || stop() {
		x.abandon(errCancelled)
	}
	if w != nil {
		wakes.Put(w)
	}
}

// watch registers a watch on a client's context, unless one is: from
// now on the exchange is used while nobody waits in its RecvMsg for the
// context to end (Open's caller sent a message, or Forward writes a
// response that is not over to the client), and the context's end must
// still reach the peer promptly.
func (x *Exchange) watch() {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.stop != nil || x.err != nil || x.cctx.Done() == nil {
		return
	}
	ctx := x.cctx
	x.stop = context.AfterFunc(ctx, func() { x.abandon(fmt.Errorf("%w: %w", errCancelled, context.Cause(ctx))) })
}

// cancelled ends a client exchange from a goroutine other than the one
// receiving (Forward's body pump, when the client is gone).
func (x *Exchange) cancelled() { x.abandon(errCancelled) }

// wakes recycle client exchanges' wake channels, empty.
var wakes = sync.Pool{New: func() any { return make(chan struct{}, 1) }}

// wakeRecv wakes a client's RecvMsg waiting in wait. Called with mu held.
func (x *Exchange) wakeRecv() {
	if x.waiting {
		x.waiting = false
		x.wake <- struct{}{}
	}
}

// wait waits, called by RecvMsg with mu held, until what RecvMsg waits
// for may have changed. A client's RecvMsg waits for its context too,
// and when that ends abandons the exchange (the peer's handler sees its
// context end).
func (x *Exchange) wait() {
	var done <-chan struct{}
	if x.cctx != nil {
		done = x.cctx.Done()
	}
	if done == nil {
		x.cond.Wait()
		return
	}
	if x.stop != nil {
		// This goroutine watches the context while it waits: the watch
		// registered for while nobody does (watch) goes now, not when the
		// exchange ends, which for a request parked in the peer is when
		// one signal wakes thousands (watch registers it again if the
		// exchange is used so again). stop runs no callback, so mu may
		// be held; if the watch fired, its abandon ends the wait below.
		x.stop()
		x.stop = nil
	}
	if x.wake == nil {
		x.wake = wakes.Get().(chan struct{})
	}
	w := x.wake
	x.waiting = true
	x.mu.Unlock()
	select {
	case <-w:
		x.mu.Lock()
		return
	case <-done:
	}
	x.mu.Lock()
	if !x.waiting {
		<-w // sent by a wakeRecv meanwhile
	}
	x.waiting = false
	if x.err != nil {
		return
	}
	x.mu.Unlock()
	x.abandon(fmt.Errorf("%w: %w", errCancelled, context.Cause(x.cctx)))
	x.mu.Lock()
}

// finishWith ends a served exchange when its handler returned (or its
// later reply was sent): typeClose after a clean return, typeCancel after
// a failed one, and takes it out of its conn's count (uncount). Without
// flush the close frame joins the buffer, which goes out soon (flushSoon).
func (x *Exchange) finishWith(herr error, flush bool) {
	if herr != nil && !errors.Is(herr, ErrConnLost) && !errors.Is(herr, ErrReset) {
		x.cn.m.log.Debug("data-plane exchange failed", "method", x.method, "error", herr)
	}
	x.release(false)
	x.mu.Lock()
	tell := x.err == nil
	x.mu.Unlock()
	x.fail(io.EOF, true)
	if tell {
		typ := typeClose
		if herr != nil {
			typ = typeCancel
		}
		_, _ = x.cn.write(x.id, typ, nil, nil, flush)
		if !flush {
			x.cn.flushSoon()
		}
	}
	x.uncount()
}

// SendMsg sends m (*wire.Frame or *wire.Blob). It waits while the peer has
// not consumed a window's worth of what was sent. It returns io.EOF when
// the served side has ended the exchange, else the exchange's error. A
// Frame whose Body is in a slot (TakeSlot) gives the slot up, sent or not.
func (x *Exchange) SendMsg(m any) error {
	// A served side's last message goes out with the close frame that
	// follows it as the handler returns.
	f, _ := m.(*wire.Frame)
	if x.cctx != nil && !x.selfWatch {
		x.watch()
	}
	return x.send(m, x.cancel != nil && f != nil && f.Flags&wire.FlagEnd != 0)
}

// send is SendMsg; m is a served side's last message when last is set.
func (x *Exchange) send(m any, last bool) error {
	x.mu.Lock()
	for x.credit <= 0 && x.err == nil && !x.closed {
		x.cond.Wait()
	}
	f, _ := m.(*wire.Frame)
	switch {
	case x.err != nil:
		err := x.err
		x.mu.Unlock()
		if f != nil {
			x.cn.giveSlot(f.Body)
		}
		return err
	case x.closed:
		x.mu.Unlock()
		if f != nil {
			x.cn.giveSlot(f.Body)
		}
		return io.EOF
	}
	x.mu.Unlock()
	n, err := x.cn.write(x.id, typeMsg, nil, m, !last)
	x.mu.Lock()
	x.credit -= n
	x.mu.Unlock()
	return err
}

// RecvMsg receives the next message into m (*wire.Frame or *wire.Blob). It
// returns io.EOF after the last message of a served side that ended
// cleanly, and the exchange's error when it failed. While it waits, it
// runs the calls the peer makes for the exchange (CallFor). A Frame's Body
// is valid until the next RecvMsg on x (it is not copied out of the
// received payload).
func (x *Exchange) RecvMsg(m any) error {
	if x.held != nil {
		putBuf(x.held)
		x.held = nil
	}
	// The slot the last message's Body was in goes back with the window
	// update, or before waiting.
	x.mu.Lock()
	rel := x.heldSlot
	x.heldSlot = -1
	for x.qh == len(x.q) && x.err == nil && !x.closed {
		if rel >= 0 || x.relPending > 0 {
			x.mu.Unlock()
			x.sendRelease(rel, true)
			rel = -1
			x.mu.Lock()
			continue
		}
		if len(x.calls) > 0 {
			c := x.calls[0]
			x.calls[0] = nil
			x.calls = x.calls[1:]
			x.mu.Unlock()
			c.serve()
			x.mu.Lock()
			continue
		}
		x.wait()
	}
	if x.err != nil && !(x.drain && x.qh < len(x.q)) {
		err := x.err
		x.mu.Unlock()
		x.sendRelease(rel, true)
		return err
	}
	if x.qh == len(x.q) {
		x.mu.Unlock()
		x.sendRelease(rel, true)
		return io.EOF
	}
	e := x.q[x.qh]
	p := e.p
	if p == nil {
		p = x.unpack()
		x.q[x.qh].n--
	}
	if e.p != nil || e.n == 1 {
		x.q[x.qh] = queued{}
		x.qh++
	}
	if e.slot {
		x.qslots--
	}
	if x.qh == len(x.q) {
		x.q, x.qh = x.q[:0], 0
	} else if 2*x.qh >= len(x.q) {
		// A reader that stays behind (flow control waits for it) may
		// never empty the queue: what it has taken goes, else the queue
		// would keep an entry for every message the exchange received.
		n := copy(x.q, x.q[x.qh:])
		clear(x.q[n:])
		x.q, x.qh = x.q[:n], 0
	}
	x.consumed += len(*p)
	var credit int
	if x.consumed >= Window/2 && !x.closed {
		credit, x.consumed = x.consumed, 0
		x.inflight -= credit
	}
	x.mu.Unlock()
	x.cn.consumed(len(*p))
	var err error
	switch v := m.(type) {
	case *wire.Frame:
		// A large body is not copied out; a small one is, so that the
		// payload goes back to its pool now (an exchange's last frame is
		// often followed by no RecvMsg that would recycle it).
		if e.slot {
			err = x.recvSlot(v, *p)
			x.shared = true
		} else if len(*p) >= directBody {
			err = v.DecodeShared(*p)
			x.held, p = p, nil
			x.shared = true
		} else {
			if x.shared {
				v.Body = nil
				x.shared = false
			}
			err = v.Decode(*p)
		}
	case *wire.Blob:
		if e.slot {
			x.cn.releaseUnread(true, *p)
			err = errors.New("transport: a call message in a slot")
			break
		}
		v.Data = append(v.Data[:0], *p...)
	default:
		err = fmt.Errorf("transport: cannot receive %T", m)
	}
	if p != nil {
		putBuf(p)
	}
	if rel >= 0 {
		x.sendRelease(rel, credit == 0 && x.relPending+1 >= slotWindow/2)
	}
	if credit > 0 {
		var b [binary.MaxVarintLen64]byte
		_, _ = x.cn.write(x.id, typeWindow, binary.AppendUvarint(b[:0], uint64(credit)), nil, true)
		x.relPending = 0
	}
	if f, ok := m.(*wire.Frame); ok && x.cctx != nil && f.Flags&wire.FlagEnd == 0 {
		// The caller goes to pass the message on (Forward, to its
		// client) and the exchange is not over.
		x.watch()
	}
	return err
}

// recvSlot decodes a typeSlot payload into f, whose Body is then the
// peer's slot, held until release.
func (x *Exchange) recvSlot(f *wire.Frame, p []byte) error {
	i, k := binary.Uvarint(p)
	if k <= 0 {
		return errors.New("transport: bad slot frame")
	}
	n, k2 := binary.Uvarint(p[k:])
	if k2 <= 0 || x.cn.shm == nil {
		return errors.New("transport: bad slot frame")
	}
	if err := f.DecodeShared(p[k+k2:]); err != nil {
		x.cn.releaseUnread(true, p)
		return err
	}
	body := x.cn.shm.hold(int(i), int(n))
	if body == nil {
		if x.cn.shm.isDead() {
			return ErrConnLost
		}
		return errors.New("transport: bad slot frame")
	}
	f.Body = body
	x.mu.Lock()
	x.heldSlot = int(i)
	x.mu.Unlock()
	return nil
}

// release gives the peer back the slot the last received Frame's Body is
// in, if any: the receiver is done with it. Only the receiving goroutine
// may call it. Without flush the release goes out with the next frame
// written.
func (x *Exchange) release(flush bool) {
	x.mu.Lock()
	i := x.heldSlot
	x.heldSlot = -1
	x.mu.Unlock()
	x.sendRelease(i, flush)
}

// sendRelease releases the peer's slot i, if i is not -1; with flush,
// it writes the releases buffered before too (with i -1, only them).
func (x *Exchange) sendRelease(i int, flush bool) {
	var b []byte
	if i >= 0 {
		x.cn.shm.unhold()
		var p [binary.MaxVarintLen64]byte
		b = binary.AppendUvarint(p[:0], uint64(i))
		x.relPending++
	}
	if x.relPending == 0 || len(b) == 0 && !flush {
		return
	}
	if flush {
		x.relPending = 0
	}
	_, _ = x.cn.write(0, typeRelease, b, nil, flush)
}

// slotWindow is how many slots one exchange may have taken and not had
// released: its sender runs that far ahead of its receiver. It is the
// slots' window; a slot frame counts only its few bytes against Window.
const slotWindow = arenaSlots / 2

// TakeSlot returns an empty buffer of a slot's capacity (256 KiB) in shared
// memory for the bytes of a Frame's Body that SendMsg will then send
// without copying them, or nil when there is no shared memory, or no free
// slot and none of the exchange's to wait for. It waits while the
// exchange has slotWindow slots the peer has not released, and while all
// are taken and the peer has some of the exchange's to release. A slot
// taken and not sent goes back with GiveSlot.
func (x *Exchange) TakeSlot() []byte {
	a := x.cn.shm
	if a == nil {
		return nil
	}
	for {
		x.mu.Lock()
		for x.slotsOut >= slotWindow && x.err == nil && !x.closed {
			x.cond.Wait()
		}
		out := x.slotsOut
		if x.err != nil || x.closed {
			x.mu.Unlock()
			return nil
		}
		x.slotsOut++ // the slot take finds
		x.mu.Unlock()
		if b := a.take(x); b != nil {
			return b
		}
		x.mu.Lock()
		x.slotsOut--
		if out == 0 {
			x.mu.Unlock()
			return nil
		}
		for x.slotsOut == out && x.err == nil && !x.closed {
			x.cond.Wait()
		}
		x.mu.Unlock()
	}
}

// slotDone: one of x's slots is free again.
func (x *Exchange) slotDone() {
	if x == nil {
		return
	}
	x.mu.Lock()
	x.slotsOut--
	x.mu.Unlock()
	x.cond.Broadcast()
}

// GiveSlot gives back a slot TakeSlot returned and SendMsg was not given;
// anything else it ignores.
func (x *Exchange) GiveSlot(b []byte) { x.cn.giveSlot(b) }

func (cn *conn) giveSlot(b []byte) {
	if i := cn.shm.slotOf(b); i >= 0 {
		cn.shm.giveBack(i)
	}
}

// releaseUnread gives the peer back the slots of typeSlot payloads that
// nobody here will read. Without flush the release joins the buffer and
// another goroutine writes it (the reader goroutine, which must not write,
// calls it so).
func (cn *conn) releaseUnread(flush bool, payloads ...[]byte) {
	var slots uint32
	for _, p := range payloads {
		if i, k := binary.Uvarint(p); k > 0 && i < arenaSlots {
			slots |= 1 << i
		}
	}
	// Marked and buffered at once: a writer taking the buffer between
	// the two would clear the mark of a release it did not take.
	cn.wmu.Lock()
	dup := slots & cn.relBuffered
	slots &^= dup
	cn.relBuffered |= slots
	if slots == 0 {
		cn.wmu.Unlock()
	} else {
		var b []byte
		for i := range uint64(arenaSlots) {
			if slots&(1<<i) != 0 {
				b = binary.AppendUvarint(b, i)
			}
		}
		_, _ = cn.writeLocked(0, typeRelease, b, nil, flush)
		if !flush {
			cn.flushSoon()
		}
	}
	if dup != 0 {
		cn.hostile("slot frame naming a slot whose release is on its way", "slots", fmt.Sprintf("%#x", dup))
	}
}

// control handles a frame of exchange 0: the shared memory's.
func (cn *conn) control(typ byte, p []byte) {
	if cn.shm == nil {
		return
	}
	switch typ {
	case typeShm:
		if string(p) == string(shmParams()) {
			cn.shm.mu.Lock()
			cn.shm.peer = true
			cn.shm.mu.Unlock()
		}
	case typeRelease:
		for len(p) > 0 {
			i, k := binary.Uvarint(p)
			if k <= 0 {
				return
			}
			cn.shm.released(int(i))
			p = p[k:]
		}
	}
}

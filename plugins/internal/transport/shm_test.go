package transport

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/hashicorp/go-hclog"
	"github.com/paster-dev/paster/internal/testsync"
	"github.com/paster-dev/paster/plugins/internal/wire"
)

// shmPair is muxPair over one connection that must have shared memory.
func shmPair(t *testing.T, h Handler) (*Mux, *Mux) {
	t.Helper()
	if _, err := NewArena(); err != nil {
		t.Skip("no shared memory here:", err)
	}
	client, server := muxPair(t, 1, h)
	waitPeerMapped(t, client)
	waitPeerMapped(t, server)
	return client, server
}

// waitPeerMapped waits until m's peer has said it mapped the shared
// memory of m's first connection.
func waitPeerMapped(t *testing.T, m *Mux) {
	t.Helper()
	testsync.WaitFor(t, "the peer's shared memory", func() bool {
		a := m.conns[0].shm
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.peer
	})
}

// idle reports whether m's shared memory has no slot taken, sent or held.
func idle(m *Mux) bool {
	a := m.conns[0].shm
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.free) == arenaSlots && a.refs == 0
}

// unmapped reports whether m's shared memory is unmapped.
func unmapped(m *Mux) bool {
	a := m.conns[0].shm
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.mem == nil
}

// inRecv reports whether b is in the peer's half of a.
func inRecv(a *arena, b []byte) bool {
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	base := uintptr(unsafe.Pointer(unsafe.SliceData(a.recv)))
	return p >= base && p+uintptr(len(b)) <= base+uintptr(len(a.recv))
}

// TestMuxSlots: body frames in slots arrive with their bytes, the
// receiver's Body is the slot itself (not a copy), and once the exchange
// is over every slot is free on both sides; closing unmaps both.
func TestMuxSlots(t *testing.T) {
	t.Parallel()
	const chunks = 64
	var inSlot atomic.Int32
	client, server := shmPair(t, func(ctx context.Context, _ string, _ uint64, x *Exchange) error {
		var f wire.Frame
		for i := 0; ; i++ {
			if err := x.RecvMsg(&f); err != nil {
				return err
			}
			if f.Flags&wire.FlagEnd != 0 {
				return x.SendMsg(&wire.Frame{Flags: wire.FlagHead | wire.FlagEnd, Status: i})
			}
			if len(f.Body) != slotSize || !bytes.Equal(f.Body, bytes.Repeat([]byte{byte(i)}, slotSize)) {
				return x.SendMsg(&wire.Frame{Flags: wire.FlagHead | wire.FlagEnd, Status: -1})
			}
			if inRecv(x.cn.shm, f.Body) {
				inSlot.Add(1)
			}
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	x, err := client.open(ctx, "bulk", 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range chunks {
		b := x.TakeSlot()
		if b == nil {
			t.Fatal("no slot")
		}
		b = append(b, bytes.Repeat([]byte{byte(i)}, slotSize)...)
		if err := x.SendMsg(&wire.Frame{Body: b}); err != nil {
			t.Fatal(err)
		}
	}
	if err := x.SendMsg(&wire.Frame{Flags: wire.FlagEnd}); err != nil {
		t.Fatal(err)
	}
	var f wire.Frame
	if err := x.RecvMsg(&f); err != nil || f.Status != chunks {
		t.Fatalf("answer %d %v, want %d chunks", f.Status, err, chunks)
	}
	x.release(true)
	x.end()
	if n := inSlot.Load(); n != chunks {
		t.Fatalf("%d of %d bodies were received in slots", n, chunks)
	}
	testsync.WaitFor(t, "every slot free", func() bool { return idle(client) && idle(server) })
	client.Close()
	testsync.WaitFor(t, "the shared memory unmapped", func() bool { return unmapped(client) && unmapped(server) })
}

// TestSlotsHTTP: an upload streamed through Forward to a handler that
// echoes it back, over shared memory both ways, read with Read and with
// WriteTo (io.Copy): the bytes arrive intact each way, and afterwards
// every slot is free on both sides.
func TestSlotsHTTP(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		echo func(w http.ResponseWriter, r *http.Request) error
	}{
		{"Read", func(w http.ResponseWriter, r *http.Request) error {
			buf := make([]byte, 50000) // writes that straddle slots
			_, err := io.CopyBuffer(struct{ io.Writer }{w}, struct{ io.Reader }{r.Body}, buf)
			return err
		}},
		{"WriteTo", func(w http.ResponseWriter, r *http.Request) error {
			if _, ok := r.Body.(io.WriterTo); !ok {
				return errors.New("the body is no io.WriterTo")
			}
			_, err := io.Copy(w, r.Body)
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if err := tc.echo(w, r); err != nil {
					w.Header().Set("Trailer", "Error")
					w.Header().Set("Error", err.Error())
				}
			})
			client, server := shmPair(t, func(ctx context.Context, _ string, _ uint64, x *Exchange) error {
				return Serve(ctx, x, func(uint64) http.Handler { return echo }, hclog.NewNullLogger())
			})
			body := make([]byte, 8<<20+12345)
			rng := rand.NewChaCha8([32]byte{1})
			_, _ = rng.Read(body)
			r := httptest.NewRequest("POST", "/", struct{ io.Reader }{bytes.NewReader(body)})
			w := httptest.NewRecorder()
			if err := Forward(w, r, client, 1); err != nil {
				t.Fatal(err)
			}
			if e := w.Result().Trailer.Get("Error"); e != "" {
				t.Fatal("handler:", e)
			}
			if got, want := sha256.Sum256(w.Body.Bytes()), sha256.Sum256(body); w.Code != 200 || got != want {
				t.Fatalf("status %d, %d bytes back of %d, same: %v", w.Code, w.Body.Len(), len(body), got == want)
			}
			testsync.WaitFor(t, "every slot free", func() bool { return idle(client) && idle(server) })
		})
	}
}

// TestSlotHeldAcrossConnLoss: a slot a handler holds stays mapped and
// intact after the connection failed, until the handler is done; then the
// shared memory is unmapped.
func TestSlotHeldAcrossConnLoss(t *testing.T) {
	t.Parallel()
	got, proceed, checked := make(chan struct{}), make(chan struct{}), make(chan bool, 1)
	client, server := shmPair(t, func(ctx context.Context, _ string, _ uint64, x *Exchange) error {
		var f wire.Frame
		if err := x.RecvMsg(&f); err != nil {
			return err
		}
		close(got)
		<-proceed
		checked <- inRecv(x.cn.shm, f.Body) && bytes.Equal(f.Body, bytes.Repeat([]byte{7}, slotSize))
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	x, err := client.open(ctx, "held", 0)
	if err != nil {
		t.Fatal(err)
	}
	b := append(x.TakeSlot(), bytes.Repeat([]byte{7}, slotSize)...)
	if err := x.SendMsg(&wire.Frame{Body: b}); err != nil {
		t.Fatal(err)
	}
	<-got
	client.Close()
	<-server.Done()
	if unmapped(server) {
		t.Fatal("unmapped while a handler holds a slot")
	}
	close(proceed)
	if !<-checked {
		t.Fatal("the held slot changed after the connection failed")
	}
	testsync.WaitFor(t, "the shared memory unmapped", func() bool { return unmapped(client) && unmapped(server) })
}

// TestSlotWindow: an exchange whose reader does not read holds at most
// slotWindow slots; another exchange on the connection still gets slots.
func TestSlotWindow(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	client, _ := shmPair(t, func(ctx context.Context, method string, _ uint64, x *Exchange) error {
		if method == "slow" {
			<-release
		}
		return readToEnd(x)
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	send := func(x *Exchange, chunks int, sent *atomic.Int32) error {
		for range chunks {
			b := x.TakeSlot()
			if b == nil {
				return io.ErrShortBuffer
			}
			if err := x.SendMsg(&wire.Frame{Body: b[:slotSize]}); err != nil {
				return err
			}
			sent.Add(1)
		}
		return x.SendMsg(&wire.Frame{Flags: wire.FlagEnd})
	}
	slow, err := client.open(ctx, "slow", 0)
	if err != nil {
		t.Fatal(err)
	}
	var slowSent atomic.Int32
	done := make(chan error, 1)
	go func() { done <- send(slow, 4*slotWindow, &slowSent) }()
	testsync.WaitFor(t, "the slow exchange's slots all sent", func() bool { return slowSent.Load() >= slotWindow })
	// It stays there: the sender waits in TakeSlot for a release.
	runtime.Gosched()
	time.Sleep(10 * time.Millisecond) // not synchronisation: a chance to overrun, checked below
	if n := slowSent.Load(); n != slotWindow {
		t.Fatalf("the slow exchange sent %d slots, window %d", n, slotWindow)
	}
	fast, err := client.open(ctx, "fast", 0)
	if err != nil {
		t.Fatal(err)
	}
	var fastSent atomic.Int32
	if err := send(fast, 3*slotWindow, &fastSent); err != nil {
		t.Fatal("beside a stalled exchange:", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// bulkSize is what one op of the bulk benchmarks carries.
const bulkSize = 16 << 20

// BenchmarkMuxUpload: a 16 MiB request body streamed through Forward, the
// Mux and Serve to a handler that discards it (bench/benchdist's sink):
// bytes per second through the shared-memory slots.
func BenchmarkMuxUpload(b *testing.B) {
	sink := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	})
	m := httpPair(b, sink)
	body := make([]byte, bulkSize)
	b.SetBytes(bulkSize)
	b.ReportAllocs()
	for b.Loop() {
		r := httptest.NewRequest("POST", "/", struct{ io.Reader }{bytes.NewReader(body)})
		w := httptest.NewRecorder()
		if err := Forward(w, r, m, 1); err != nil || w.Code != 200 {
			b.Fatal(w.Code, err)
		}
	}
}

// BenchmarkMuxDownload: a 16 MiB response written in 64 KiB writes
// (bench/benchdist's source) through Serve, the Mux and Forward to a
// writer that discards it.
func BenchmarkMuxDownload(b *testing.B) {
	chunk := make([]byte, 64<<10)
	source := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for range bulkSize / len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	m := httpPair(b, source)
	r := httptest.NewRequest("GET", "/", nil)
	b.SetBytes(bulkSize)
	b.ReportAllocs()
	for b.Loop() {
		w := discardWriter{h: http.Header{}}
		if err := Forward(&w, r, m, 1); err != nil || w.n != bulkSize {
			b.Fatal(w.n, err)
		}
	}
}

// discardWriter is an http.ResponseWriter that counts and drops the body.
type discardWriter struct {
	h http.Header
	n int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(int)             {}
func (w *discardWriter) Write(p []byte) (int, error) { w.n += len(p); return len(p), nil }

// TestArenaSealed: the peer cannot shrink or grow the shared memory (the
// host would fault on a slot past the end of a shrunk file).
func TestArenaSealed(t *testing.T) {
	t.Parallel()
	f, err := NewArena()
	if err != nil {
		t.Skip("no shared memory here:", err)
	}
	defer f.Close()
	for _, size := range []int64{0, ArenaSize / 2, 2 * ArenaSize} {
		if err := f.Truncate(size); err == nil {
			t.Errorf("truncated to %d bytes", size)
		}
	}
}

// TestSlotsUnreadReleased: slots the receiver never reads (its handler
// returned before the rest of the body) go back to the sender all the
// same.
func TestSlotsUnreadReleased(t *testing.T) {
	t.Parallel()
	got := make(chan struct{})
	client, server := shmPair(t, func(ctx context.Context, _ string, _ uint64, x *Exchange) error {
		var f wire.Frame
		if err := x.RecvMsg(&f); err != nil {
			return err
		}
		<-got // more slot frames are queued meanwhile
		return x.SendMsg(&wire.Frame{Flags: wire.FlagHead | wire.FlagEnd, Status: 200})
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	x, err := client.open(ctx, "early", 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range slotWindow {
		b := x.TakeSlot()
		if b == nil {
			t.Fatal("no slot")
		}
		if err := x.SendMsg(&wire.Frame{Body: b[:slotSize]}); err != nil {
			t.Fatal(i, err)
		}
	}
	close(got)
	var f wire.Frame
	if err := x.RecvMsg(&f); err != nil || f.Status != 200 {
		t.Fatalf("answer %d %v", f.Status, err)
	}
	x.end()
	testsync.WaitFor(t, "every slot free", func() bool { return idle(client) && idle(server) })
}

// TestSlotsExhausted: more concurrent echoes on one connection than the
// arena has slots for: bodies go in slots and inline by turns, every byte
// arrives in order each way, and afterwards every slot is free.
func TestSlotsExhausted(t *testing.T) {
	t.Parallel()
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(w, r.Body)
	})
	client, server := shmPair(t, func(ctx context.Context, _ string, _ uint64, x *Exchange) error {
		return Serve(ctx, x, func(uint64) http.Handler { return echo }, hclog.NewNullLogger())
	})
	const exchanges = 6
	errs := make(chan error, exchanges)
	for i := range exchanges {
		go func() {
			body := make([]byte, 3<<20+i*1000)
			rng := rand.NewChaCha8([32]byte{byte(i)})
			_, _ = rng.Read(body)
			r := httptest.NewRequest("POST", "/", struct{ io.Reader }{bytes.NewReader(body)})
			w := httptest.NewRecorder()
			if err := Forward(w, r, client, 1); err != nil {
				errs <- err
				return
			}
			if !bytes.Equal(w.Body.Bytes(), body) {
				errs <- errors.New("the echo differs")
				return
			}
			errs <- nil
		}()
	}
	for range exchanges {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	testsync.WaitFor(t, "every slot free", func() bool { return idle(client) && idle(server) })
}

// TestSmallFrameAfterSlot: a small message received into the Frame whose
// Body was the peer's slot gets a body of its own: decoding it does not
// write into the slot (released by then, and the peer's to fill again).
func TestSmallFrameAfterSlot(t *testing.T) {
	t.Parallel()
	client, _ := shmPair(t, func(ctx context.Context, _ string, _ uint64, x *Exchange) error {
		var f wire.Frame // one frame for every message, as Forward and body do
		for {
			if err := x.RecvMsg(&f); err != nil {
				return err
			}
			if f.Flags&wire.FlagEnd != 0 {
				return x.SendMsg(&wire.Frame{Flags: wire.FlagHead | wire.FlagEnd, Status: 200})
			}
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	x, err := client.open(ctx, "small", 0)
	if err != nil {
		t.Fatal(err)
	}
	slot := append(x.TakeSlot(), bytes.Repeat([]byte{7}, slotSize)...)
	if err := x.SendMsg(&wire.Frame{Body: slot}); err != nil {
		t.Fatal(err)
	}
	if err := x.SendMsg(&wire.Frame{Flags: wire.FlagEnd, Body: []byte("small")}); err != nil {
		t.Fatal(err)
	}
	var f wire.Frame
	if err := x.RecvMsg(&f); err != nil || f.Status != 200 {
		t.Fatalf("answer %d %v", f.Status, err)
	}
	if !bytes.Equal(slot[:8], bytes.Repeat([]byte{7}, 8)) {
		t.Fatalf("the released slot was written by its receiver: %q", slot[:8])
	}
}

package rawio

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// pair returns both ends of a connected socket of the network: the
// accepted one (the one tests read and write) and the dialled one (the
// peer).
func pair(t *testing.T, network string) (net.Conn, net.Conn) {
	t.Helper()
	addr := "127.0.0.1:0"
	if network == "unix" {
		addr = filepath.Join(t.TempDir(), "s")
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.Dial(network, ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); peer.Close() })
	return c, peer
}

// rw is what a test reads and writes c with: c itself (the reference) or
// its Conn.
type rw interface {
	io.Reader
	io.Writer
}

var ways = []struct {
	name string
	wrap func(c net.Conn) rw
}{
	{"net.Conn", func(c net.Conn) rw { return c }},
	{"rawio", func(c net.Conn) rw { return New(c) }},
}

// each runs f for every way over TCP and over unix sockets, in parallel.
func each(t *testing.T, f func(t *testing.T, c net.Conn, x rw, peer net.Conn)) {
	for _, network := range []string{"tcp", "unix"} {
		for _, w := range ways {
			t.Run(network+"/"+w.name, func(t *testing.T) {
				t.Parallel()
				c, peer := pair(t, network)
				x := w.wrap(c)
				if w.name == "rawio" && !raw(x.(*Conn)) {
					t.Fatalf("a %T is not read with raw system calls", c)
				}
				f(t, c, x, peer)
			})
		}
	}
}

// wantOpError fails unless err is a *net.OpError of op wrapping target.
func wantOpError(t *testing.T, err error, op string, target error) {
	t.Helper()
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != op || !errors.Is(err, target) {
		t.Fatalf("error %#v (%v): want a *net.OpError %q of %v", err, err, op, target)
	}
}

// wantTimeout fails unless err is a deadline's, as net/http and callers
// of errors.Is tell one.
func wantTimeout(t *testing.T, err error, op string) {
	t.Helper()
	wantOpError(t, err, op, os.ErrDeadlineExceeded)
	if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("error %v: not a net.Error whose Timeout() is true", err)
	}
}

// TestReadDeadline: a read waiting for bytes ends at the read deadline, a
// read after it ends at once though bytes are there, and a cleared
// deadline lets the bytes be read: as net.Conn's Read. A raw read that
// ignored the deadline would block until the test's timeout.
func TestReadDeadline(t *testing.T) {
	each(t, func(t *testing.T, c net.Conn, x rw, peer net.Conn) {
		c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		_, err := x.Read(make([]byte, 10))
		wantTimeout(t, err, "read")
		if _, err := peer.Write([]byte("hello")); err != nil {
			t.Fatal(err)
		}
		_, err = x.Read(make([]byte, 10))
		wantTimeout(t, err, "read")
		c.SetReadDeadline(time.Time{})
		buf := make([]byte, 10)
		n, err := x.Read(buf)
		if err != nil || string(buf[:n]) != "hello" {
			t.Fatalf("read %q, %v after the deadline was cleared", buf[:n], err)
		}
	})
}

// TestWriteDeadline: a write the peer does not read ends at the write
// deadline with what it wrote, as net.Conn's Write.
func TestWriteDeadline(t *testing.T) {
	each(t, func(t *testing.T, c net.Conn, x rw, peer net.Conn) {
		c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
		p := make([]byte, 32<<20) // more than both socket buffers hold
		n, err := x.Write(p)
		wantTimeout(t, err, "write")
		if n >= len(p) {
			t.Fatalf("wrote %d of %d bytes", n, len(p))
		}
	})
}

// TestCloseWakesRead: closing the conn ends a read waiting for bytes with
// net.ErrClosed.
func TestCloseWakesRead(t *testing.T) {
	each(t, func(t *testing.T, c net.Conn, x rw, peer net.Conn) {
		done := make(chan error, 1)
		go func() {
			_, err := x.Read(make([]byte, 10))
			done <- err
		}()
		// Close while the read waits, or before it starts: either way
		// it must end.
		c.Close()
		wantOpError(t, <-done, "read", net.ErrClosed)
	})
}

// TestWholeWrite: a write larger than the socket buffers, which the
// system call takes in parts, is written whole while the peer reads, and
// the peer's end of stream reads as io.EOF.
func TestWholeWrite(t *testing.T) {
	each(t, func(t *testing.T, c net.Conn, x rw, peer net.Conn) {
		p := make([]byte, 8<<20)
		for i := range p {
			p[i] = byte(i * 7)
		}
		got := make(chan []byte, 1)
		go func() {
			b, _ := io.ReadAll(peer)
			got <- b
		}()
		n, err := x.Write(p)
		if err != nil || n != len(p) {
			t.Fatalf("wrote %d of %d bytes: %v", n, len(p), err)
		}
		c.(interface{ CloseWrite() error }).CloseWrite()
		if b := <-got; !bytes.Equal(b, p) {
			t.Fatalf("the peer read %d bytes, not the %d written", len(b), len(p))
		}
		peer.Close()
		if n, err := x.Read(make([]byte, 10)); n != 0 || err != io.EOF {
			t.Fatalf("read %d, %v at the end of the stream; want io.EOF", n, err)
		}
	})
}

// TestReset: a reset by the peer reads as net.Conn reads it, a
// *net.OpError of ECONNRESET.
func TestReset(t *testing.T) {
	for _, w := range ways {
		t.Run(w.name, func(t *testing.T) {
			t.Parallel()
			c, peer := pair(t, "tcp")
			x := w.wrap(c)
			peer.(*net.TCPConn).SetLinger(0)
			peer.Close()
			_, err := x.Read(make([]byte, 10))
			wantOpError(t, err, "read", syscall.ECONNRESET)
		})
	}
}

// TestConcurrentWrites: writes from two goroutines at once each reach the
// peer whole, not interleaved, as net.Conn's do.
func TestConcurrentWrites(t *testing.T) {
	each(t, func(t *testing.T, c net.Conn, x rw, peer net.Conn) {
		const size, per = 1 << 20, 4
		got := make(chan []byte, 1)
		go func() {
			b, _ := io.ReadAll(peer)
			got <- b
		}()
		errs := make(chan error, 2)
		for _, v := range []byte{'a', 'b'} {
			go func() {
				p := bytes.Repeat([]byte{v}, size)
				for range per {
					if _, err := x.Write(p); err != nil {
						errs <- err
						return
					}
				}
				errs <- nil
			}()
		}
		for range 2 {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		c.(interface{ CloseWrite() error }).CloseWrite()
		b := <-got
		if len(b) != 2*per*size {
			t.Fatalf("the peer read %d bytes, want %d", len(b), 2*per*size)
		}
		for i := 0; i < len(b); i += size {
			if chunk := b[i : i+size]; !bytes.Equal(chunk, bytes.Repeat(chunk[:1], size)) {
				t.Fatalf("the write at offset %d is interleaved with another", i)
			}
		}
	})
}

// wrapped keeps bytes of its own ahead of the socket's, as a connection
// that peeked at its first bytes does.
type wrapped struct {
	*net.TCPConn
	kept []byte
}

func (w *wrapped) Read(p []byte) (int, error) {
	if len(w.kept) > 0 {
		n := copy(p, w.kept)
		w.kept = w.kept[n:]
		return n, nil
	}
	return w.TCPConn.Read(p)
}

// TestWrapperKeepsItsRead: a conn that is not itself a socket's (here one
// embedding *net.TCPConn, so a syscall.Conn) is read through its own Read.
func TestWrapperKeepsItsRead(t *testing.T) {
	t.Parallel()
	c, peer := pair(t, "tcp")
	x := New(&wrapped{TCPConn: c.(*net.TCPConn), kept: []byte("kept")})
	if _, err := peer.Write([]byte("sent")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	for _, want := range []string{"kept", "sent"} {
		if _, err := io.ReadFull(x, buf); err != nil || string(buf) != want {
			t.Fatalf("read %q, %v; want %q", buf, err, want)
		}
	}
}

package rawio

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
)

// maxRW bounds one system call, as net.Conn does (internal/poll's maxRW).
const maxRW = 1 << 30

// Conn is c's socket read and written with raw system calls (see the
// package doc). Its Read and Write may be called from any goroutines, as a
// net.Conn's; each is done whole under its own lock.
type Conn struct {
	c  net.Conn
	rc syscall.RawConn // nil: through c
	r  reader
	w  writer
}

// New returns c's Conn. It makes no system call and cannot fail: a conn
// whose socket it cannot reach is read and written through c.
func New(c net.Conn) *Conn {
	x := &Conn{c: c}
	var sc syscall.Conn
	switch t := c.(type) {
	case *net.TCPConn:
		sc = t
	case *net.UnixConn:
		sc = t
	default:
		return x
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return x
	}
	x.rc = rc
	// The functions RawConn calls are bound once, so that a Read or
	// Write allocates nothing.
	x.r.fn = x.r.read
	x.w.fn = x.w.write
	return x
}

// reader and writer hold one call's state each, under their mutex.
type reader struct {
	mu    sync.Mutex
	fn    func(fd uintptr) bool
	p     []byte
	n     int
	errno syscall.Errno
}

type writer struct {
	mu      sync.Mutex
	fn      func(fd uintptr) bool
	p       []byte
	written int
	errno   syscall.Errno
	short   bool // a write wrote nothing and failed not
}

// Read reads into p as c.Read would: at most len(p) bytes once some are
// there, io.EOF at the end of the stream, or a *net.OpError.
func (x *Conn) Read(p []byte) (int, error) {
	if x.rc == nil {
		return x.c.Read(p)
	}
	if len(p) == 0 {
		return 0, nil
	}
	r := &x.r
	r.mu.Lock()
	r.p, r.n, r.errno = p[:min(len(p), maxRW)], 0, 0
	err := x.rc.Read(r.fn)
	n, errno := r.n, r.errno
	r.p = nil
	r.mu.Unlock()
	switch {
	case err != nil:
		return 0, x.opError("read", err)
	case errno != 0:
		return 0, x.opError("read", os.NewSyscallError("read", errno))
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

func (r *reader) read(fd uintptr) bool {
	for {
		r.n, r.errno = sysRead(fd, r.p)
		if r.errno != syscall.EINTR {
			return r.errno != syscall.EAGAIN
		}
	}
}

// Write writes all of p as c.Write would, or returns how much it wrote
// and a *net.OpError.
func (x *Conn) Write(p []byte) (int, error) {
	if x.rc == nil {
		return x.c.Write(p)
	}
	w := &x.w
	w.mu.Lock()
	w.p, w.written, w.errno, w.short = p, 0, 0, false
	err := x.rc.Write(w.fn)
	n, errno, short := w.written, w.errno, w.short
	w.p = nil
	w.mu.Unlock()
	switch {
	case err != nil:
		return n, x.opError("write", err)
	case errno != 0:
		return n, x.opError("write", os.NewSyscallError("write", errno))
	case short:
		return n, x.opError("write", io.ErrUnexpectedEOF)
	}
	return n, nil
}

func (w *writer) write(fd uintptr) bool {
	for w.written < len(w.p) {
		n, e := sysWrite(fd, w.p[w.written:min(len(w.p), w.written+maxRW)])
		switch e {
		case 0:
			if n == 0 { // not from a socket; net.Conn's answer to it
				w.short = true
				return true
			}
			w.written += n
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			w.errno = e
			return true
		}
	}
	return true
}

// opError returns err as net.Conn's Read or Write returns it: RawConn's
// errors (a deadline, a closed conn) are already *net.OpError, with the
// op "raw-read" or "raw-write", renamed; an errno is wrapped.
func (x *Conn) opError(op string, err error) error {
	if oe, ok := err.(*net.OpError); ok {
		oe.Op = op
		return oe
	}
	la := x.c.LocalAddr()
	return &net.OpError{Op: op, Net: la.Network(), Source: la, Addr: x.c.RemoteAddr(), Err: err}
}

package transport

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// rawIO returns c's reader and writer for the data plane: reads and writes
// of the socket (non-blocking, as every socket the netpoller watches) made
// with syscall.RawSyscall, and waits for readiness left to the netpoller
// (syscall.RawConn). A read or write through net.Conn enters the
// scheduler's syscall state, which in a process that was idle a moment
// before (every P idle, sysmon asleep) wakes sysmon: a futex wake-up, and
// a thread that then polls every 20 µs for a while, per request. perf,
// hello plugin at 16k req/s: sysmon 8.8% and futex 11% of the plugin's
// CPU, most of the futex calls sysmon's and entersyscallWakeSysmon's.
// The calls never block, so they need no handing off of the P. A conn
// that is not a syscall.Conn (net.Pipe) keeps its own Read and Write.
func rawIO(c net.Conn) (io.Reader, io.Writer) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c, c
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return c, c
	}
	r := &rawReader{rc: rc}
	r.fn = r.read
	w := &rawWriter{rc: rc}
	w.fn = w.write
	return r, w
}

// rawReader and rawWriter serve one goroutine at a time (the connection's
// reader; the writer of the moment): their state lives in them, and the
// function RawConn calls is bound once, so a call allocates nothing.
type rawReader struct {
	rc    syscall.RawConn
	fn    func(fd uintptr) bool
	p     []byte
	n     uintptr
	errno syscall.Errno
}

func (r *rawReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	r.p = p
	err := r.rc.Read(r.fn)
	r.p = nil
	switch {
	case err != nil:
		return 0, err
	case r.errno != 0:
		return 0, os.NewSyscallError("read", r.errno)
	case r.n == 0:
		return 0, io.EOF
	}
	return int(r.n), nil
}

func (r *rawReader) read(fd uintptr) bool {
	for {
		r.n, _, r.errno = syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&r.p[0])), uintptr(len(r.p)))
		if r.errno != syscall.EINTR {
			return r.errno != syscall.EAGAIN
		}
	}
}

type rawWriter struct {
	rc      syscall.RawConn
	fn      func(fd uintptr) bool
	p       []byte
	written int
	errno   syscall.Errno
}

func (w *rawWriter) Write(p []byte) (int, error) {
	w.p, w.written, w.errno = p, 0, 0
	err := w.rc.Write(w.fn)
	w.p = nil
	switch {
	case err != nil:
		return w.written, err
	case w.errno != 0:
		return w.written, os.NewSyscallError("write", w.errno)
	}
	return w.written, nil
}

func (w *rawWriter) write(fd uintptr) bool {
	for w.written < len(w.p) {
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&w.p[w.written])), uintptr(len(w.p)-w.written))
		switch e {
		case 0:
			w.written += int(n)
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

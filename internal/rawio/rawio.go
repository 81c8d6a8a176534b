// Package rawio reads and writes a connected stream socket (TCP, unix)
// with raw system calls on Linux, leaving only the waits for readiness to
// the runtime's netpoller (syscall.RawConn).
//
// Why: a read or write through net.Conn enters the scheduler's syscall
// state, which in a process that was idle a moment before (every P idle,
// sysmon asleep) wakes sysmon: a futex wake-up, and a thread that then
// polls every 20 µs for a while, per request. perf, hello plugin at 16k
// req/s: sysmon 8.8% and futex 11% of the plugin's CPU, most of the futex
// calls sysmon's and entersyscallWakeSysmon's. The sockets the netpoller
// watches are non-blocking, so the calls never block and need no handing
// off of the P.
//
// A Conn behaves as the net.Conn's own Read and Write: the conn's
// deadlines bound the waits and fail with an error for which
// errors.Is(err, os.ErrDeadlineExceeded) holds and which is a net.Error
// whose Timeout() is true; closing the conn wakes a blocked call with
// net.ErrClosed; errors are *net.OpError with Op "read" or "write"
// (io.EOF as such); a write returns only once all of p is written or it
// failed; EINTR is retried and EAGAIN waits. Elsewhere than Linux, and for
// a conn other than a *net.TCPConn or *net.UnixConn (a wrapper may keep
// bytes of its own, so its Read must run), a Conn reads and writes through
// the conn itself.
//
// Under the race detector the same path runs with syscall.Read and
// syscall.Write in place of the raw calls: they tell the detector what
// net.Conn's reads and writes tell it (the buffer's accesses, and an order
// between every write and later read of the process), without which tests
// that order their goroutines by a socket report false races.
//
// A process that serves its requests itself, busy, is better served by
// net.Conn's own path: a system call the kernel holds up (a write to a
// loopback TCP peer does the peer's receiving too) lets the runtime hand
// the call's P to another thread, and sysmon is awake anyway. Measured
// with bench/cmd/load alternating with and without raw calls on the HTTP
// server's client connections, two CPUs shared with other work: hello
// compiled in, busy on both Ps, served 0.945 of plain net/http against
// 0.972 (within a percent of it on a quiet machine), while a host in front
// of a CPU-bound plugin (bench/run.sh cpu), mostly idle between requests,
// used 38 µs of CPU per request against 51 (its sysmon thread 20 against
// 300 ms and 1,648 against 25,104 context switches in 5 s). So the HTTP
// server reads and writes its connections through a Conn only while
// SetDirect is on (package plugins sets it in a host of plugin processes
// and in a plugin), and through net.Conn otherwise; the plugin data
// plane's sockets always go through one.
package rawio

import "sync/atomic"

// direct is SetDirect's.
var direct atomic.Bool

// SetDirect says whether the process's HTTP server connections are to be
// read and written through a Conn (on) or through net.Conn (off, the
// default). Either may serve any call: a connection may switch between
// two calls.
func SetDirect(on bool) { direct.Store(on) }

// Direct reports what SetDirect said last.
func Direct() bool { return direct.Load() }

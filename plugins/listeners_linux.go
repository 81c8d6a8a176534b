package plugins

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/paster-dev/paster/plugins/internal/wire"
	"github.com/paster-dev/paster/runner"
)

// lendSupported: Linux passes file descriptors over SOCK_SEQPACKET unix
// sockets, whose packets keep each message and its descriptor together.
const lendSupported = true

// maxLendMsg bounds one lending message (a JSON LendMsg).
const maxLendMsg = 64 << 10

// lendCloseTimeout bounds how long a plugin listener's Close waits for the
// host to confirm it, so that the host has released the listener when the
// server's Run ends.
const lendCloseTimeout = 5 * time.Second

// sendLend sends m on c, with fd attached when fd >= 0. Packets on a
// SOCK_SEQPACKET socket are atomic; mu serialises the writers anyway.
func sendLend(c *net.UnixConn, mu *sync.Mutex, m wire.LendMsg, fd int) error {
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	var oob []byte
	if fd >= 0 {
		oob = syscall.UnixRights(fd)
	}
	mu.Lock()
	defer mu.Unlock()
	_, _, err = c.WriteMsgUnix(data, oob, nil)
	return err
}

// sendConnLend sends m with the file descriptor of cn attached.
func sendConnLend(c *net.UnixConn, mu *sync.Mutex, m wire.LendMsg, cn net.Conn) error {
	sc, ok := cn.(syscall.Conn)
	if !ok {
		return fmt.Errorf("a %T has no file descriptor to pass", cn)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = sendLend(c, mu, m, int(fd)) }); err != nil {
		return err
	}
	return serr
}

// recvLend reads one message and the descriptors it carries (received
// close-on-exec). A closed peer is io.EOF.
func recvLend(c *net.UnixConn, buf, oob []byte) (wire.LendMsg, []int, error) {
	var m wire.LendMsg
	n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return m, nil, err
	}
	if n == 0 && oobn == 0 {
		return m, nil, io.EOF
	}
	var fds []int
	if oobn > 0 {
		cmsgs, err := syscall.ParseSocketControlMessage(oob[:oobn])
		if err == nil {
			for i := range cmsgs {
				if got, err := syscall.ParseUnixRights(&cmsgs[i]); err == nil {
					fds = append(fds, got...)
				}
			}
		}
	}
	if err := json.Unmarshal(buf[:n], &m); err != nil {
		closeFDs(fds)
		return m, nil, fmt.Errorf("bad lending message: %w", err)
	}
	return m, fds, nil
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		syscall.Close(fd)
	}
}

// fdConn makes a net.Conn of a received descriptor (and closes fd).
func fdConn(fd int) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), "lent connection")
	defer f.Close()
	return net.FileConn(f)
}

func lendBuffers() ([]byte, []byte) {
	return make([]byte, maxLendMsg), make([]byte, syscall.CmsgSpace(4*4))
}

// lender is the host side of one plugin process's lending socket: it answers
// the plugin's listen, accept, close and return messages with the listeners
// of the Runs the plugin's servers were started for (Host.lends).
type lender struct {
	h     *Host
	log   hclog.Logger
	conn  *net.UnixConn
	child *os.File // the plugin's end until the process started

	wmu sync.Mutex

	mu     sync.Mutex
	closed bool
	next   uint64
	// handles are the listeners lent, by handle. A closed one stays, so
	// that a connection the plugin hands back after closing it finds its
	// socket; the lender lives as long as the process.
	handles map[uint64]net.Listener
}

// newLender makes the lending socket pair of a plugin process that cmd is
// about to start: the plugin's end becomes one of cmd's ExtraFiles, and
// wire.EnvLendFD in cmd's environment names it. Call started once the
// process has started (or failed to), and close when it has exited.
func (h *Host) newLender(cmd *exec.Cmd, log hclog.Logger) (*lender, error) {
	c, child, err := socketPair(syscall.SOCK_SEQPACKET, "paster lend")
	if err != nil {
		return nil, fmt.Errorf("socket pair for lending listeners: %w", err)
	}
	cmd.ExtraFiles = append(cmd.ExtraFiles, child)
	// ExtraFiles[i] is descriptor 3+i in the child.
	cmd.Env = append(cmd.Env, wire.EnvLendFD+"="+strconv.Itoa(2+len(cmd.ExtraFiles)))
	l := &lender{h: h, log: log, conn: c.(*net.UnixConn), child: child, handles: map[uint64]net.Listener{}}
	go l.serve()
	return l, nil
}

// started closes the host's copy of the plugin's end.
func (l *lender) started() {
	if l != nil {
		l.child.Close()
	}
}

// close ends the lending: every listener lent to the process is closed.
func (l *lender) close() {
	if l == nil {
		return
	}
	l.child.Close()
	l.conn.Close()
	l.mu.Lock()
	l.closed = true
	lns := make([]net.Listener, 0, len(l.handles))
	for _, ln := range l.handles {
		lns = append(lns, ln)
	}
	l.mu.Unlock()
	for _, ln := range lns {
		ln.Close()
	}
}

func (l *lender) serve() {
	defer l.close()
	buf, oob := lendBuffers()
	for {
		m, fds, err := recvLend(l.conn, buf, oob)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				l.log.Warn("lending listeners to the plugin stopped", "error", err)
			}
			return
		}
		switch m.Op {
		case wire.LendListen:
			l.listen(m)
		case wire.LendAccept:
			go l.accept(m.Handle)
		case wire.LendClose:
			if ln := l.handle(m.Handle); ln != nil {
				ln.Close()
			}
			l.send(wire.LendMsg{Op: wire.LendClosed, ID: m.ID})
		case wire.LendReturn:
			l.takeBack(m.Handle, fds)
			fds = nil
		default:
			l.log.Warn("unknown lending message from the plugin", "op", m.Op)
		}
		closeFDs(fds)
	}
}

func (l *lender) send(m wire.LendMsg) {
	if err := sendLend(l.conn, &l.wmu, m, -1); err != nil && !errors.Is(err, net.ErrClosed) {
		l.log.Debug("lending message not sent", "op", m.Op, "error", err)
	}
}

func (l *lender) handle(id uint64) net.Listener {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.handles[id]
}

// listen takes a listener on m.Addr from the Run's source.
func (l *lender) listen(m wire.LendMsg) {
	reply := wire.LendMsg{Op: wire.LendListen, ID: m.ID}
	src, ok := l.h.lends.load(m.Run)
	if !ok {
		reply.Err = fmt.Sprintf("http: listen on %s: the host lends no listeners to this server (it is not running)", m.Addr)
		l.send(reply)
		return
	}
	ln, err := src.Listen(m.Addr, runner.ListenOptions{SocketMode: fs.FileMode(m.Mode)})
	if err != nil {
		reply.Err = err.Error()
		l.send(reply)
		return
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		ln.Close()
		return
	}
	l.next++
	reply.Handle = l.next
	l.handles[reply.Handle] = ln
	l.mu.Unlock()
	reply.Addr, reply.Net = ln.Addr().String(), ln.Addr().Network()
	l.send(reply)
}

// accept accepts one connection on listener id for the plugin and passes it
// on; one the plugin cannot be sent goes back to the socket.
func (l *lender) accept(id uint64) {
	reply := wire.LendMsg{Op: wire.LendConn, Handle: id}
	ln := l.handle(id)
	if ln == nil {
		reply.Err, reply.Closed = fmt.Sprintf("no listener %d lent to this plugin", id), true
		l.send(reply)
		return
	}
	c, err := ln.Accept()
	if err != nil {
		reply.Err, reply.Closed = err.Error(), errors.Is(err, net.ErrClosed)
		l.send(reply)
		return
	}
	if err := sendConnLend(l.conn, &l.wmu, reply, runner.NetConn(c)); err != nil {
		runner.ReturnConn(ln, c)
		return
	}
	// The plugin holds the connection now; the host's descriptor goes.
	c.Close()
}

// takeBack gives connections the plugin handed back to listener id's socket.
func (l *lender) takeBack(id uint64, fds []int) {
	ln := l.handle(id)
	for _, fd := range fds {
		c, err := fdConn(fd)
		if err != nil {
			l.log.Warn("a connection handed back by the plugin is unusable", "error", err)
			continue
		}
		if ln == nil {
			c.Close()
			continue
		}
		runner.ReturnConn(ln, c)
	}
}

// lendClient is the plugin side of the lending socket: the ListenerSource of
// the servers the host runs with lent listeners.
type lendClient struct {
	conn *net.UnixConn
	log  hclog.Logger
	wmu  sync.Mutex

	mu    sync.Mutex
	next  uint64
	calls map[uint64]chan wire.LendMsg
	lns   map[uint64]*lentListener
	err   error         // why the socket failed
	dead  chan struct{} // closed when it failed
}

// lendFromEnv opens the lending socket the host started the plugin with, or
// returns nil (the host lends nothing; servers bind their own sockets).
func lendFromEnv(log hclog.Logger) *lendClient {
	v := os.Getenv(wire.EnvLendFD)
	if v == "" {
		return nil
	}
	os.Unsetenv(wire.EnvLendFD)
	fd, err := strconv.Atoi(v)
	if err != nil {
		log.Warn("bad lending socket descriptor from the host; servers bind their own sockets", wire.EnvLendFD, v)
		return nil
	}
	f := os.NewFile(uintptr(fd), "paster lend")
	c, err := net.FileConn(f)
	f.Close()
	uc, ok := c.(*net.UnixConn)
	if err != nil || !ok {
		log.Warn("no lending socket from the host; servers bind their own sockets", "error", err)
		return nil
	}
	lc := &lendClient{conn: uc, log: log, calls: map[uint64]chan wire.LendMsg{}, lns: map[uint64]*lentListener{}, dead: make(chan struct{})}
	go lc.serve()
	return lc
}

// source returns the ListenerSource of Run token run, or nil when there is
// nothing to lend from (the server then binds its own socket).
func (c *lendClient) source(run uint64) runner.ListenerSource {
	if c == nil || run == 0 {
		return nil
	}
	return lentSource{c: c, run: run}
}

func (c *lendClient) serve() {
	buf, oob := lendBuffers()
	for {
		m, fds, err := recvLend(c.conn, buf, oob)
		if err != nil {
			c.fail(err)
			return
		}
		switch m.Op {
		case wire.LendListen, wire.LendClosed:
			c.mu.Lock()
			ch := c.calls[m.ID]
			delete(c.calls, m.ID)
			c.mu.Unlock()
			if ch != nil {
				ch <- m
			}
		case wire.LendConn:
			c.mu.Lock()
			ln := c.lns[m.Handle]
			c.mu.Unlock()
			if len(fds) == 0 {
				if ln != nil {
					ln.offer(lentResult{err: lendError(m)})
				}
				continue
			}
			for _, fd := range fds {
				cn, err := fdConn(fd)
				if err != nil {
					// Out of descriptors, most likely: the connection is
					// lost, but the server must ask again (with its
					// back-off) rather than wait for an answer that
					// already came.
					c.log.Warn("a lent connection is unusable", "error", err)
					if ln != nil {
						ln.offer(lentResult{err: lendTempError{"a lent connection is unusable: " + err.Error()}})
					}
					continue
				}
				if ln == nil || !ln.offer(lentResult{conn: cn}) {
					// The reader never writes: the host's reader, which
					// it drains, may be writing to us.
					go c.giveBack(m.Handle, cn)
				}
			}
		default:
			closeFDs(fds)
		}
	}
}

func lendError(m wire.LendMsg) error {
	if m.Closed {
		return fmt.Errorf("listener lent by the host: %s: %w", m.Err, net.ErrClosed)
	}
	if m.Err == "" {
		// The host sent a connection whose descriptor did not arrive: the
		// kernel drops it when this process has no descriptor left.
		return lendTempError{"a connection lent by the host did not arrive (out of file descriptors?)"}
	}
	return lendTempError{"the host could not accept a connection: " + m.Err}
}

// lendTempError is an Accept error a server should retry after backing off,
// as net/http's Serve does for a net.Error that is Temporary: the lent
// socket is still there; a connection (or a descriptor for it) was not.
type lendTempError struct{ msg string }

func (e lendTempError) Error() string   { return e.msg }
func (e lendTempError) Timeout() bool   { return false }
func (e lendTempError) Temporary() bool { return true }

func (c *lendClient) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return
	}
	if errors.Is(err, io.EOF) {
		err = net.ErrClosed
	}
	c.err = fmt.Errorf("the host's lending socket: %w", err)
	close(c.dead)
}

func (c *lendClient) deadErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *lendClient) send(m wire.LendMsg) error {
	return sendLend(c.conn, &c.wmu, m, -1)
}

// call sends m with a new ID and waits for the reply, at most until timeout
// (0: no limit) or until the socket fails.
func (c *lendClient) call(m wire.LendMsg, timeout time.Duration) (wire.LendMsg, error) {
	ch := make(chan wire.LendMsg, 1)
	c.mu.Lock()
	c.next++
	m.ID = c.next
	c.calls[m.ID] = ch
	c.mu.Unlock()
	forget := func() {
		c.mu.Lock()
		delete(c.calls, m.ID)
		c.mu.Unlock()
	}
	if err := c.send(m); err != nil {
		forget()
		return m, err
	}
	var expire <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expire = t.C
	}
	select {
	case r := <-ch:
		return r, nil
	case <-c.dead:
		forget()
		return m, c.deadErr()
	case <-expire:
		forget()
		return m, fmt.Errorf("the host did not answer %s within %s", m.Op, timeout)
	}
}

// giveBack hands cn back to the host, for another server on listener
// handle's socket, and closes it here.
func (c *lendClient) giveBack(handle uint64, cn net.Conn) {
	defer cn.Close()
	if err := sendConnLend(c.conn, &c.wmu, wire.LendMsg{Op: wire.LendReturn, Handle: handle}, cn); err != nil {
		c.log.Warn("could not hand a connection back to the host; it is closed", "error", err)
	}
}

// lentSource asks the host for listeners of one Run.
type lentSource struct {
	c   *lendClient
	run uint64
}

// Listen returns a listener on the host's socket for addr, which the host
// binds (with opt) if no server listens there yet; a bind failure names the
// address.
func (s lentSource) Listen(addr string, opt runner.ListenOptions) (net.Listener, error) {
	r, err := s.c.call(wire.LendMsg{Op: wire.LendListen, Run: s.run, Addr: addr, Mode: uint32(opt.SocketMode)}, 0)
	if err != nil {
		return nil, fmt.Errorf("http: listen on %s: %w", addr, err)
	}
	if r.Err != "" {
		return nil, errors.New(r.Err)
	}
	l := &lentListener{c: s.c, handle: r.Handle, addr: lentAddr(r.Net, r.Addr),
		conns: make(chan lentResult, 16), done: make(chan struct{}), detached: make(chan struct{})}
	s.c.mu.Lock()
	s.c.lns[r.Handle] = l
	s.c.mu.Unlock()
	return l, nil
}

// lentAddr is the address of the host's socket as the host reported it.
func lentAddr(network, s string) net.Addr {
	if network == "unix" {
		return &net.UnixAddr{Name: s, Net: network}
	}
	if a, err := net.ResolveTCPAddr("tcp", s); err == nil {
		return a
	}
	return &net.TCPAddr{}
}

type lentResult struct {
	conn net.Conn
	err  error
}

// lentListener is a plugin server's listener on a socket of the host. Each
// Accept asks the host for one connection. Like a runner.ListenerPool's
// listeners, it can be detached before its server shuts down (Detach), and
// a connection that arrives once it is detached or closed goes back to the
// host for another server on the socket.
type lentListener struct {
	c      *lendClient
	handle uint64
	addr   net.Addr
	conns  chan lentResult

	mu         sync.Mutex
	isClosed   bool
	isDetached bool
	done       chan struct{} // closed by Close
	detached   chan struct{} // closed by Detach
	closeOnce  sync.Once
	// fresh counts the connections handed out whose first request has not
	// reached a handler yet.
	fresh atomic.Int64
}

// offer hands r to a waiting Accept; it reports false when the listener
// takes no connection (closed or detached), which the caller gives back.
func (l *lentListener) offer(r lentResult) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.isClosed || l.isDetached {
		return false
	}
	select {
	case l.conns <- r:
		return true
	default:
		return false
	}
}

// Accept asks the host for a connection and waits for it. A detached
// listener takes none and waits for Close; a closed one fails with
// net.ErrClosed, as does Accept when the host closed the socket.
func (l *lentListener) Accept() (net.Conn, error) {
	for {
		l.mu.Lock()
		closed, detached := l.isClosed, l.isDetached
		l.mu.Unlock()
		if closed {
			return nil, net.ErrClosed
		}
		if detached {
			<-l.done
			return nil, net.ErrClosed
		}
		if err := l.c.send(wire.LendMsg{Op: wire.LendAccept, Handle: l.handle}); err != nil {
			return nil, fmt.Errorf("asking the host for a connection: %w", err)
		}
		select {
		case r := <-l.conns:
			if r.err != nil {
				return nil, r.err
			}
			l.mu.Lock()
			ok := !l.isClosed && !l.isDetached
			if ok {
				l.fresh.Add(1)
			}
			l.mu.Unlock()
			if ok {
				return &lentConn{Conn: r.conn, l: l}, nil
			}
			l.c.giveBack(l.handle, r.conn)
		case <-l.detached:
		case <-l.done:
			return nil, net.ErrClosed
		case <-l.c.dead:
			return nil, l.c.deadErr()
		}
	}
}

// giveBackQueued hands the connections that arrived but were not accepted
// back to the host.
func (l *lentListener) giveBackQueued() {
	for {
		select {
		case r := <-l.conns:
			if r.conn != nil {
				l.c.giveBack(l.handle, r.conn)
			}
		default:
			return
		}
	}
}

// Detach stops the listener from taking connections (the other servers on
// the socket get them) and waits, at most d, until those it took have had
// their first request reach a handler (runner.FreshConn); it reports
// whether they all had. runner's HTTPServer calls it before shutting down.
func (l *lentListener) Detach(d time.Duration) bool {
	l.mu.Lock()
	if !l.isDetached {
		l.isDetached = true
		close(l.detached)
	}
	l.mu.Unlock()
	l.giveBackQueued()
	deadline := time.Now().Add(d)
	for l.fresh.Load() > 0 {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// Close stops the listener and tells the host, which releases its listener
// on the socket; the socket stays open for other servers.
func (l *lentListener) Close() error {
	var err error
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.isClosed = true
		close(l.done)
		l.mu.Unlock()
		l.giveBackQueued()
		_, err = l.c.call(wire.LendMsg{Op: wire.LendClose, Handle: l.handle}, lendCloseTimeout)
		l.c.mu.Lock()
		delete(l.c.lns, l.handle)
		l.c.mu.Unlock()
		if errors.Is(err, net.ErrClosed) {
			err = nil // the host is gone, and with it the listener
		}
	})
	return err
}

// Addr returns the address of the host's socket.
func (l *lentListener) Addr() net.Addr { return l.addr }

// lentConn counts, for Detach, a connection until its first request reaches
// a handler, it fails to read, or it is closed: what runner's ListenerPool
// does for its own listeners (its counting type belongs to its socket
// handles and is not exported).
type lentConn struct {
	net.Conn
	l    *lentListener
	done atomic.Bool
}

func (c *lentConn) settle() {
	if c.done.CompareAndSwap(false, true) {
		c.l.fresh.Add(-1)
	}
}

// FirstRequest implements runner.FreshConn: the plugin's HTTPServer calls
// it when the connection's first request reaches a handler.
func (c *lentConn) FirstRequest() { c.settle() }

func (c *lentConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if err != nil {
		c.settle()
	}
	return n, err
}

func (c *lentConn) Close() error {
	c.settle()
	return c.Conn.Close()
}

// ReadFrom keeps sendfile for responses (net/http's response body copy).
func (c *lentConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

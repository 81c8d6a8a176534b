package runner

import (
	"io"
	"net"
	"sync"
)

// capListener is a net.Listener that holds at most cap connections open at
// once: at the cap, Accept waits for one of them to close before it
// accepts again, so that further connections wait in the kernel's listen
// backlog (max_connections).
//
// It is golang.org/x/net/netutil.LimitListener written again because that
// one's connections hide everything but the net.Conn methods: net/http
// would lose sendfile (io.ReaderFrom) and the half-close before a
// "Connection: close" (CloseWrite).
type capListener struct {
	net.Listener
	slots  chan struct{} // one token per open connection
	closed chan struct{}
	once   sync.Once
}

func newCapListener(ln net.Listener, n int) *capListener {
	return &capListener{Listener: ln, slots: make(chan struct{}, n), closed: make(chan struct{})}
}

// Accept waits for a free slot, then accepts. It returns net.ErrClosed once
// the listener is closed, also while it waits.
func (l *capListener) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.closed:
		return nil, net.ErrClosed
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &capConn{keptConn: keptConn{c}, l: l}, nil
}

// Close closes the listener and wakes a waiting Accept; connections already
// accepted stay open and keep their slots until they close.
func (l *capListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// capConn gives its slot back when it is closed.
type capConn struct {
	keptConn
	l    *capListener
	once sync.Once
}

func (c *capConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { <-c.l.slots })
	return err
}

// keptConn is embedded by the server's connection wrappers (capConn,
// rejectConn) to keep what net/http looks for beyond net.Conn.
type keptConn struct{ net.Conn }

// ReadFrom keeps sendfile for responses (net/http's response body copy).
func (c keptConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

// CloseWrite half-closes the connection where it can, as net/http does
// before closing a connection whose response said "Connection: close".
func (c keptConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

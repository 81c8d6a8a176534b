package runner

import "net"

// Lending a pool's sockets to another process. paster serve owns every
// listening socket and lends it to the servers that run in plugin processes:
// it accepts a connection through a listener of its pool on the plugin
// server's behalf and passes the connection's file descriptor on. These two
// functions are what that needs from the pool.

// NetConn returns the connection c wraps when c was accepted through a
// listener of a ListenerPool (whose connections count, for Detach, until
// their first byte), else c itself. Pass its file descriptor on, then
// Close c: that counts it as delivered.
func NetConn(c net.Conn) net.Conn {
	if tc, ok := c.(*trackedConn); ok {
		return tc.Conn
	}
	return c
}

// ReturnConn gives c, a connection that a server will not serve, to the
// socket of ln, a listener from a ListenerPool (closed or not): another
// listener on the socket accepts it, or it is closed with the socket. c is
// one that ln accepted, or another descriptor of it (a connection handed
// back by a plugin process). With any other listener, c is closed.
func ReturnConn(ln net.Listener, c net.Conn) {
	h, ok := ln.(*sockHandle)
	if !ok {
		c.Close()
		return
	}
	if tc, ok := c.(*trackedConn); ok {
		tc.settle()
		c = tc.Conn
	}
	go h.s.requeue(c)
}

package runner

import (
	"crypto/tls"
	"net"
)

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

// FreshConn is a connection that a pooled or lent listener counts, for
// Detach, until its first request reaches a handler. Reading the first
// bytes is not enough: net/http closes, without an answer, a connection
// whose request it finishes reading after Shutdown began, so a server is
// shut down only once every connection it took has a request being
// handled (or was closed). HTTPServer calls FirstRequest as each request
// starts; a plugin's lent connections implement it too.
type FreshConn interface {
	net.Conn
	FirstRequest()
}

// freshConnOf returns the FreshConn beneath the server's own connection
// wrappers, or nil.
func freshConnOf(c net.Conn) FreshConn {
	for {
		switch t := c.(type) {
		case FreshConn:
			return t
		case *rejectConn:
			c = t.Conn
		case *capConn:
			c = t.Conn
		case *tls.Conn:
			c = t.NetConn()
		default:
			return nil
		}
	}
}

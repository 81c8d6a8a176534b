//go:build !linux

package rawio

import "net"

// Conn reads and writes through the net.Conn it was made for: the raw
// system calls are Linux's (see the package doc).
type Conn struct{ c net.Conn }

// New returns c's Conn.
func New(c net.Conn) *Conn { return &Conn{c: c} }

// Read is c.Read.
func (x *Conn) Read(p []byte) (int, error) { return x.c.Read(p) }

// Write is c.Write.
func (x *Conn) Write(p []byte) (int, error) { return x.c.Write(p) }

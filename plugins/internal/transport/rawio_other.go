//go:build !linux

package transport

import (
	"io"
	"net"
)

// rawIO returns c itself as the data plane's reader and writer (see
// rawio_linux.go).
func rawIO(c net.Conn) (io.Reader, io.Writer) { return c, c }

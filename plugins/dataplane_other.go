//go:build !linux

package plugins

import (
	"net"
	"os/exec"
)

// dataPlane: socket pairs are made on Linux only; elsewhere plugins are
// reached through gRPC streams.
type dataPlane struct{ conns []net.Conn }

func newDataPlane(*exec.Cmd) (*dataPlane, error) { return nil, nil }
func (dp *dataPlane) started()                   {}
func (dp *dataPlane) close()                     {}

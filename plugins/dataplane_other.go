//go:build !linux

package plugins

import (
	"net"
	"os/exec"

	"github.com/hashicorp/go-hclog"
	"github.com/paster-dev/paster/plugins/internal/transport"
)

// dataPlane: socket pairs are made on Linux only; elsewhere plugins are
// reached through gRPC streams.
type dataPlane struct{ conns []net.Conn }

func newDataPlane(*exec.Cmd) (*dataPlane, error) { return nil, nil }
func (dp *dataPlane) started()                   {}
func (dp *dataPlane) close()                     {}
func (dp *dataPlane) closeArenas()               {}
func (dp *dataPlane) mux(transport.Handler, hclog.Logger) *transport.Mux {
	return nil
}

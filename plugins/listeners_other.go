//go:build !linux

package plugins

import (
	"os/exec"

	"github.com/hashicorp/go-hclog"
	"github.com/paster-dev/paster/runner"
)

// lendSupported: passing sockets to plugins is implemented for Linux only;
// elsewhere a plugin server binds its own socket.
const lendSupported = false

type lender struct{}

func (h *Host) newLender(*exec.Cmd, hclog.Logger) (*lender, error) { return nil, nil }
func (l *lender) started()                                         {}
func (l *lender) close()                                           {}

type lendClient struct{}

func lendFromEnv(hclog.Logger) *lendClient                { return nil }
func (c *lendClient) source(uint64) runner.ListenerSource { return nil }

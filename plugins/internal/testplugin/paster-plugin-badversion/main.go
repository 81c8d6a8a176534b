// Command paster-plugin-badversion speaks another paster plugin protocol
// version; the tests check the host refuses it clearly.
package main

import (
	"context"

	"github.com/hashicorp/go-plugin"
	"github.com/paster-dev/paster/plugins/internal/wire"
	"google.golang.org/grpc"
)

type nothing struct{ plugin.NetRPCUnsupportedPlugin }

func (nothing) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error { return nil }
func (nothing) GRPCClient(context.Context, *plugin.GRPCBroker, *grpc.ClientConn) (any, error) {
	return nil, nil
}

func main() {
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: plugin.HandshakeConfig{
			ProtocolVersion:  wire.ProtocolVersion + 98,
			MagicCookieKey:   wire.MagicCookieKey,
			MagicCookieValue: wire.MagicCookieValue,
		},
		VersionedPlugins: map[int]plugin.PluginSet{wire.ProtocolVersion + 98: {wire.PluginName: nothing{}}},
		GRPCServer:       plugin.DefaultGRPCServer,
	})
}

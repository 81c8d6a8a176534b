package natscore

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Embedded configures the nats-server New starts inside the process, so that
// a small cluster needs no separate NATS install: each paster node runs one,
// and the servers route to each other.
type Embedded struct {
	// Listen is host:port for NATS clients (port 0: any free port).
	Listen string
	// StoreDir is where JetStream keeps the topics (required).
	StoreDir string
	// ClusterListen is host:port where the other nodes' servers connect
	// (empty: no cluster, this server alone).
	ClusterListen string
	// Routes are the other servers' cluster URLs (nats://host:port).
	Routes []string
	// ClusterName names the NATS cluster; default "paster".
	ClusterName string
}

// embeddedStartTimeout bounds how long New waits for the embedded server to
// accept clients, and, in a cluster, for JetStream to have a leader.
const embeddedStartTimeout = 30 * time.Second

// startEmbedded starts the server e describes, named name, and returns it.
func startEmbedded(e Embedded, name string) (*server.Server, error) {
	if e.StoreDir == "" {
		return nil, fmt.Errorf("natscore: embedded nats-server: no store directory")
	}
	host, port, err := splitHostPort(e.Listen, "127.0.0.1", 4222)
	if err != nil {
		return nil, fmt.Errorf("natscore: embedded nats-server listen %q: %w", e.Listen, err)
	}
	o := &server.Options{ServerName: name, Host: host, Port: port, JetStream: true, StoreDir: e.StoreDir, NoSigs: true, NoLog: true}
	if e.ClusterListen != "" {
		ch, cp, err := splitHostPort(e.ClusterListen, "127.0.0.1", 6222)
		if err != nil {
			return nil, fmt.Errorf("natscore: embedded nats-server cluster_listen %q: %w", e.ClusterListen, err)
		}
		o.Cluster = server.ClusterOpts{Name: e.ClusterName, Host: ch, Port: cp}
		if o.Cluster.Name == "" {
			o.Cluster.Name = "paster"
		}
		o.Routes = server.RoutesFromStr(strings.Join(e.Routes, ","))
	}
	s, err := server.NewServer(o)
	if err != nil {
		return nil, fmt.Errorf("natscore: embedded nats-server: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(embeddedStartTimeout) {
		s.Shutdown()
		return nil, fmt.Errorf("natscore: embedded nats-server on %s did not start within %v", e.Listen, embeddedStartTimeout)
	}
	return s, nil
}

// splitHostPort splits host:port, with defaults for empty parts; port 0 is
// any free port (-1 for nats-server).
func splitHostPort(s, defHost string, defPort int) (string, int, error) {
	if s == "" {
		return defHost, defPort, nil
	}
	host, ps, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, err
	}
	if host == "" {
		host = defHost
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port %q", ps)
	}
	if port == 0 {
		port = -1
	}
	return host, port, nil
}

// waitJetStream waits until JetStream answers (in a cluster, until it has a
// leader), at most embeddedStartTimeout.
func (c *Core) waitJetStream() error {
	deadline := time.Now().Add(embeddedStartTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := c.js.AccountInfo(ctx)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond) // JetStream elects a leader; poll for it
	}
}

// ClientURL returns the client URL of the embedded nats-server, or "" when
// the Core has none.
func (c *Core) ClientURL() string {
	if c.srv == nil {
		return ""
	}
	return c.srv.ClientURL()
}

package natscore

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
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

// embeddedStartTimeout bounds how long Start waits for the embedded server to
// accept clients, and, in a cluster, for JetStream to have a leader.
const embeddedStartTimeout = 30 * time.Second

// servers are the embedded nats-servers of this process, by store
// directory. Cores that ask for the same server (the same Embedded and node
// name) share it: a reload that changes a core section's other keys makes
// a new Core while the old one still serves, and both use the one server
// (whose socket and store could not be opened twice), which shuts down when
// the last of them is closed.
var servers = struct {
	sync.Mutex
	m map[string]*sharedServer
}{m: map[string]*sharedServer{}}

// sharedServer is an embedded nats-server and the Cores using it.
type sharedServer struct {
	srv     *server.Server
	conf    Embedded
	name    string
	payload int32 // its max_payload
	refs    int
}

// acquireEmbedded returns the embedded server e describes, named name,
// whose max_payload is at least payload: the one this process runs for e's
// store directory, or a new one. A server running there with other
// settings, or a smaller max_payload, is an error: changing them takes a
// restart of the process. releaseEmbedded gives it back.
func acquireEmbedded(e Embedded, name string, payload int32, log hclog.Logger) (*server.Server, error) {
	if e.StoreDir == "" {
		return nil, fmt.Errorf("natscore: embedded nats-server: no store directory")
	}
	key, err := filepath.Abs(e.StoreDir)
	if err != nil {
		return nil, fmt.Errorf("natscore: embedded nats-server store_dir %q: %w", e.StoreDir, err)
	}
	servers.Lock()
	defer servers.Unlock()
	if sh := servers.m[key]; sh != nil {
		if sh.name != name || !reflect.DeepEqual(sh.conf, e) {
			return nil, fmt.Errorf("natscore: the embedded nats-server of store_dir %s runs in this process with other settings (listen, cluster_listen, routes, cluster_name or name); changing them takes a restart", key)
		}
		if sh.payload < payload {
			return nil, fmt.Errorf("natscore: the embedded nats-server of store_dir %s runs in this process with max_payload %d, started for a smaller core_max_value than this one, which needs %d; raising core_max_value takes a restart", key, sh.payload, payload)
		}
		sh.refs++
		return sh.srv, nil
	}
	srv, err := startEmbedded(e, name, payload, log)
	if err != nil {
		return nil, err
	}
	servers.m[key] = &sharedServer{srv: srv, conf: e, name: name, payload: payload, refs: 1}
	return srv, nil
}

// releaseEmbedded drops a Core's use of srv and shuts srv down, waiting for
// it, when no Core uses it any more.
func releaseEmbedded(srv *server.Server) {
	servers.Lock()
	last := false
	for key, sh := range servers.m {
		if sh.srv == srv {
			sh.refs--
			if last = sh.refs == 0; last {
				delete(servers.m, key)
			}
			break
		}
	}
	servers.Unlock()
	if last {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
}

// startEmbedded starts the server e describes, named name, with
// max_payload payload, and returns it once it accepts clients. It fails at
// once, with the server's reason, when the server cannot listen (an
// address in use).
func startEmbedded(e Embedded, name string, payload int32, log hclog.Logger) (*server.Server, error) {
	host, port, err := splitHostPort(e.Listen, "127.0.0.1", 4222)
	if err != nil {
		return nil, fmt.Errorf("natscore: embedded nats-server listen %q: %w", e.Listen, err)
	}
	o := &server.Options{ServerName: name, Host: host, Port: port, JetStream: true, StoreDir: e.StoreDir, NoSigs: true, NoLog: true,
		// max_pending, the bytes the server holds for a client that
		// reads slowly, must be at least max_payload: room for a few
		// Fetch answers of the largest value (base64 encoded).
		MaxPayload: payload, MaxPending: max(server.MAX_PENDING_SIZE, 4*int64(payload))}
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
	sl := &serverLog{log: log.Named("nats-server"), fatal: make(chan string, 1)}
	s.SetLogger(sl, false, false)
	go s.Start()
	ready := make(chan bool, 1)
	go func() { ready <- s.ReadyForConnections(embeddedStartTimeout) }()
	select {
	case ok := <-ready:
		if ok {
			return s, nil
		}
		err = fmt.Errorf("natscore: embedded nats-server on %s did not start within %v", e.Listen, embeddedStartTimeout)
	case msg := <-sl.fatal:
		err = fmt.Errorf("natscore: embedded nats-server (listen %q, cluster_listen %q): %s", e.Listen, e.ClusterListen, msg)
	}
	s.Shutdown()
	s.WaitForShutdown()
	return nil, err
}

// serverLog is the embedded nats-server's logger: its lines go to the
// Core's logger, and its first fatal error (it cannot listen) to fatal,
// where startEmbedded takes it instead of waiting for a server that will
// never be ready (nats-server's own logger would exit the process).
type serverLog struct {
	log   hclog.Logger
	fatal chan string
}

func (l *serverLog) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l *serverLog) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l *serverLog) Errorf(format string, v ...any)  { l.log.Error(fmt.Sprintf(format, v...)) }
func (l *serverLog) Debugf(format string, v ...any)  {}
func (l *serverLog) Tracef(format string, v ...any)  {}
func (l *serverLog) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.log.Error(msg)
	select {
	case l.fatal <- msg:
	default:
	}
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

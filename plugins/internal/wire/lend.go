package wire

// Lending listening sockets. paster serve owns every listening socket (its
// runner.ListenerPool) and lends them to the servers that run in plugin
// processes, so that a server moving between processes never closes the
// socket. The host starts each plugin with one end of a unix SOCK_SEQPACKET
// socket pair as file descriptor EnvLendFD names; each packet is one LendMsg
// in JSON, and a packet with op "conn" or "return" carries one connection's
// file descriptor (SCM_RIGHTS).
//
// The plugin asks, the host answers:
//
//	listen {id, run, addr, mode} → listen {id, handle, addr, net} or {id, err}
//	accept {handle}          → conn {handle} + fd, or conn {handle, err}
//	close {id, handle}       → closed {id}
//	return {handle} + fd       (a connection the plugin will not serve)
//
// run is RunRequest.Listeners of the Run whose server listens. Every accept
// asks for one connection, so the host hands a plugin server a connection
// only when it is ready to take one, as in-process servers take theirs.

// EnvLendFD names the plugin's file descriptor of the lending socket pair.
const EnvLendFD = "PASTER_PLUGIN_LEND_FD"

// LendMsg is one message of the lending protocol.
type LendMsg struct {
	Op     string `json:"op"`
	ID     uint64 `json:"id,omitempty"`
	Run    uint64 `json:"run,omitempty"`
	Handle uint64 `json:"handle,omitempty"`
	Addr   string `json:"addr,omitempty"`
	// Mode is the file mode of a unix socket the host binds for the
	// listen (runner.ListenOptions.SocketMode); 0 is the default.
	Mode uint32 `json:"mode,omitempty"`
	// Net is the network of the listener's address in a listen reply
	// ("tcp", "unix"), so that the plugin reports the address as the host
	// does.
	Net string `json:"net,omitempty"`
	Err string `json:"err,omitempty"`
	// Closed says that Err is the listener's end (net.ErrClosed).
	Closed bool `json:"closed,omitempty"`
}

// Ops of LendMsg.
const (
	LendListen = "listen"
	LendAccept = "accept"
	LendConn   = "conn"
	LendClose  = "close"
	LendClosed = "closed"
	LendReturn = "return"
)

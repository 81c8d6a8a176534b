package runner

// Connection budget: how many connections a server may hold by default,
// given the process's open-file limit.
const (
	// connHeadroomMin is the least number of file descriptors
	// DefaultMaxConnections leaves for everything that is not a client
	// connection: listening sockets, log files, plugin pipes and
	// connections, and a reload's second generation of those.
	connHeadroomMin = 32
	// unlimitedFiles stands for an open-file limit that is not set.
	unlimitedFiles = 1 << 20
)

// DefaultMaxConnections returns the default of max_connections: the
// process's open-file limit (RLIMIT_NOFILE, as Go raised it at start-up)
// less a quarter of it, and at least 32, kept for listening sockets, log
// files, plugins and reloads; at least 1. It assumes one server per
// process: with several, give each a max_connections so that they add up
// to less than the limit.
func DefaultMaxConnections() int {
	n := openFileLimit()
	return max(n-max(n/4, connHeadroomMin), 1)
}

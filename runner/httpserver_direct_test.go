package runner

import (
	"testing"

	"github.com/paster-dev/paster/internal/rawio"
)

// The server's tests of what it does with its connections' reads and
// writes (deadlines, timeouts, cut clients, net/http's own replies,
// hijacks) pass as well with the connections read and written with raw
// system calls, as in a host of plugin processes (rawio.SetDirect).
//
// Not parallel, so that no other test's connections switch with it: the
// parallel subtests run while this test waits for them, before any other
// top-level parallel test.
func TestServingDirect(t *testing.T) {
	defer rawio.SetDirect(rawio.Direct())
	rawio.SetDirect(true)
	t.Run("direct", func(t *testing.T) {
		for name, test := range map[string]func(*testing.T){
			"IdleTimeoutClosesKeepAlive":       TestIdleTimeoutClosesKeepAlive,
			"IdleTimeoutLeavesHijackedConn":    TestIdleTimeoutLeavesHijackedConn,
			"ReadHeaderTimeoutPlain":           TestReadHeaderTimeoutPlain,
			"IdleTimeoutAfterBusyConns":        TestIdleTimeoutAfterBusyConns,
			"ServeShutdownTimeoutCutsRequests": TestServeShutdownTimeoutCutsRequests,
			"MaxBodyBytes":                     TestMaxBodyBytes,
			"LongPollOutlivesTimeouts":         TestLongPollOutlivesTimeouts,
			"WriteTimeoutCutsStalledClient":    TestWriteTimeoutCutsStalledClient,
			"WriteTimeoutEveryRequest":         TestWriteTimeoutEveryRequest,
			"WriteTimeoutWriters":              TestWriteTimeoutWriters,
			"ReadTimeoutCutsSlowBody":          TestReadTimeoutCutsSlowBody,
			"RejectObserver":                   TestRejectObserver,
			"RejectObserverTLS":                TestRejectObserverTLS,
		} {
			t.Run(name, test)
		}
	})
}

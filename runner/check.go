package runner

import "context"

type checkKey struct{}

// WithCheck returns a copy of ctx that asks a server to check its settings
// and return without binding, serving or starting anything: paster check
// calls every server runner (compiled in or in a plugin process) with it,
// so that what serve would refuse makes check fail.
func WithCheck(ctx context.Context) context.Context {
	return context.WithValue(ctx, checkKey{}, true)
}

// Checking reports whether ctx comes from WithCheck. A server runner called
// with such a context must read and validate its settings and return the
// first problem (nil when there is none) without binding a socket, serving or
// starting coroutines. Runner.Run and HTTPServer.Serve do this, so a runner
// that builds its Runner (New) or HTTPServer (NewHTTPServer) and runs it
// checks for free; a runner that binds its own sockets returns early itself:
//
//	if runner.Checking(ctx) {
//		return nil // settings read and valid; bind nothing
//	}
func Checking(ctx context.Context) bool {
	v, _ := ctx.Value(checkKey{}).(bool)
	return v
}

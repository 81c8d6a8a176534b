// Package runner serves applications: the HTTP server, the scheduler that
// supervises coroutines, and the Core of asynchronous operations (sleep,
// signals, publish/subscribe) that handlers and coroutines reach through
// CoreFrom(ctx).
//
// # Generations
//
// A reload replaces what a server serves without touching the server: the
// server is given a Front, which hands each request to the current Mount
// (one generation's app, with a CoreScope of its own), and a reload swaps
// the Mount; requests already in the old Mount finish there, and
// Mount.Drain bounds how long they may take before their parked waits are
// answered with ErrClosed. When the server itself must change, a
// ListenerPool (WithListeners) lets the new HTTPServer take the old one's
// socket while the old one still serves, so no connection is refused; a
// server in a plugin process takes it from the host's pool too (package
// plugins lends it: NetConn, ReturnConn). Package engine builds generations on these.
package runner

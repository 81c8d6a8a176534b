// Package runner serves applications: the HTTP server, the scheduler that
// supervises coroutines, and the Core of asynchronous operations (sleep,
// signals, publish/subscribe) that handlers and coroutines reach through
// CoreFrom(ctx).
package runner

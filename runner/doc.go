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
//
// # What the Core holds
//
// The Core is shared by every app of the process and, through the plugin
// host, by plugin processes, so what a caller can make it hold is bounded
// (CoreOptions; the server section's keys, CoreOptionsFromLocal):
//
//   - a value given to Publish, Signal or SignalAtLeast is at most MaxValue
//     (core_max_value, default 1 MiB), and a signal or topic name at most
//     MaxNameSize (1 KiB); a larger one is refused with an error wrapping
//     ErrTooLarge, in process and across the plugin boundary alike, and
//     nothing of it is kept;
//   - a topic keeps at most RetainCount messages (pubsub_retain_count,
//     1000), for at most RetainAge (pubsub_retain_age, 10m), and at most
//     RetainBytes (pubsub_retain_bytes, 64 MiB) of them, oldest dropped
//     first;
//   - all topics of a LocalCore keep at most RetainTotalBytes together
//     (pubsub_retain_total_bytes, 256 MiB, counting each message's data
//     plus MessageOverhead and each topic's name plus TopicOverhead): past
//     it the oldest message of any topic is dropped first, and a topic left
//     with no message and no subscription is forgotten, so topics that hold
//     nothing cost nothing. Subscribers behind a dropped message get a
//     *GapError, as with the other bounds.
//
// Parked waits are bounded by their callers (a goroutine or, for a
// plugin's, the host's data-plane budgets), not by the Core. The NATS Core
// (package natscore) applies the same value, name and per-topic limits; its
// topics are JetStream streams kept by the NATS server, so
// RetainTotalBytes does not apply there, and a value is also bounded by the
// server's max_payload.
package runner

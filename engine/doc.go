// Package engine serves a paster configuration as a sequence of
// generations, and checks one without serving it. paster serve and paster
// check (package cmd) are thin layers over it; a program of its own can
// use it the same way:
//
//	e, err := engine.New(engine.Config{
//		ConfigURI: "config:site.ini",
//		ServerURI: "config:site.ini#main",
//		AppURI:    "config:site.ini#main",
//	})
//	...
//	err = e.Run(ctx, reload) // a value on reload reloads; ctx's end shuts down
//
// # A generation's lifecycle
//
// A generation is one complete load of the configuration with a fresh
// entrypoints.Session. It goes through five phases; a failure in the first
// two releases everything the generation made so far and leaves the
// generation before it serving (on a reload) or ends Run (on the first
// load, unless Config.ReloadInterval asks to wait for a fix).
//
// Build. The server section is loaded first, then the app, as PasteScript
// does, with Config.Vars as global conf: every factory is called, every
// plugin the configuration names is started or, when its binary is
// unchanged, reused (a process of the plugins.Pool shared between
// generations; the generation's instances are created on its own scopes of
// the pool, one for the server section and one for the app), the
// server section's own settings (shutdown_timeout, ready_timeout, the
// Core's keys) and every startup coroutine's policy are read, and a new Core
// is made if the core's configuration changed (see below). Nothing is
// bound. Check stops here, has the server runner check its own settings
// (runner.WithCheck), and releases what it built: that is why paster check
// reports every error paster serve would report before binding.
//
// Ready. The generation's startup coroutines start on a scheduler of its
// own; the required ones must report ready (runner.Ready) within
// ready_timeout.
//
// Swap. If the server section is unchanged (same entry point,
// configuration and, for a server in a plugin, the same binary), the Front
// — the http.Handler every server is given — is switched to the new
// generation's Mount: the server, its socket and its connections are
// untouched, requests already in the old generation finish there. If it
// changed, the new server is started beside the old one, taking its socket
// from the ListenerPool (the same socket when the address is unchanged),
// and once it reports that it listens the Front is switched and the old
// server, detached from the socket first, shut down gracefully. No
// connection is refused, wherever the two servers run: a server in a
// plugin process gets its socket from the ListenerPool too, which the host
// lends it, so the socket never leaves this process.
//
// Drain. The old generation takes no new requests; its requests may finish
// until shutdown_timeout, less a margin after which those still parked on
// the Core are answered with ErrClosed and the contexts of the rest
// cancelled (runner.Mount.Drain); its coroutines are stopped with
// shutdown_timeout as grace.
//
// Close. What the drained generation made is released: every app, filter
// and filtered handler its factories made that implements io.Closer is
// closed (entrypoints.Session.Close), and its plugin scopes are closed
// (plugins.Scope.Close): the instances they made are destroyed in plugin
// processes a newer generation still uses — closing those that implement
// io.Closer there — and the plugin processes no scope holds any more are
// stopped after their requests have ended. The server section's scope is
// the exception while that server serves a newer generation: it closes
// once the server has stopped. A build that fails takes the same path for
// what it made so far.
//
// Shutdown (the end of Run's context) takes the same path for the last
// generation, except that parked waits are answered at once, since no newer
// generation will signal them; then older generations finish draining and
// every plugin process is stopped.
//
// # What outlives a generation
//
// The Core, for as long as the core's configuration is unchanged (the core
// key of the server section and its [core:NAME] section, or the in-memory
// Core's keys of the server section): a reload that keeps it hands the same
// Core to the new generation, so a request parked in an old generation is
// woken by a signal or a message from the new one, pub/sub topics keep their
// sequence numbers and a Core on NATS keeps its connection and
// subscriptions. A reload that changes it makes a new Core while building
// the new generation (a failure to make it fails the reload) and restarts
// the server with it; the old Core drains with the old generation — its
// parked waits end with the drain, as any request of that generation — and
// is closed once no generation uses it. Plugin processes are served the Core
// of the generation being built or serving.
//
// For the whole of Run: the Front; the ListenerPool,
// which owns every listening socket, those of servers in plugin processes
// included; the plugins.Pool, whose processes live as long as a scope
// holds them; and the observe.Registry behind egg:paster#metrics and
// #health.
package engine

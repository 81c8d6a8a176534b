package pastercmd

// systemd integration of paster serve, with github.com/coreos/go-systemd/v22.
// Outside systemd (no LISTEN_FDS, no NOTIFY_SOCKET) all of it does nothing.
//
// Socket activation: the listening sockets systemd passed (LISTEN_FDS, for
// this process by LISTEN_PID, named by LISTEN_FDNAMES, which a .socket
// unit's FileDescriptorName= sets) are handed to the engine, whose
// ListenerPool adopts them: a server section takes one by host =
// systemd:NAME, or by naming its address (host and port, or unix:PATH), so
// an unchanged configuration runs under socket activation. Adopted sockets
// are kept across reloads and lent to plugin servers like bound ones.
//
// sd_notify (Type=notify or Type=notify-reload): READY=1 once the first
// generation serves; RELOADING=1 (with MONOTONIC_USEC) when a reload
// starts and READY=1 with a STATUS= line when it has ended, failed or not
// (the previous generation serves on); STOPPING=1 when SIGTERM or SIGINT
// starts the shutdown; WATCHDOG=1 every half WATCHDOG_USEC while the
// process runs (WatchdogSec=). The variables are kept from plugin
// processes (plugins.HostOptions strips them), which systemd would not
// listen to anyway with NotifyAccess=main.

import (
	"context"
	"net"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/hashicorp/go-hclog"
)

// activatedSockets returns the listening sockets systemd passed to this
// process, by name, and removes LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES
// from the environment. A passed descriptor that is not a listening stream
// socket is left out (with a warning).
func activatedSockets(log hclog.Logger) map[string][]net.Listener {
	named, _ := activation.ListenersWithNames() // its error is always nil
	for name, lns := range named {
		for _, ln := range lns {
			log.Info("socket passed by systemd", "name", name, "addr", ln.Addr().Network()+":"+ln.Addr().String())
		}
	}
	return named
}

// notifier sends sd_notify messages to systemd; without NOTIFY_SOCKET it
// sends nothing.
type notifier struct{ log hclog.Logger }

func (n notifier) send(state string) {
	if _, err := daemon.SdNotify(false, state); err != nil {
		n.log.Warn("telling systemd failed", "state", strings.ReplaceAll(state, "\n", " "), "error", err)
	}
}

func (n notifier) ready() { n.send(daemon.SdNotifyReady + "\nSTATUS=serving") }
func (n notifier) reloading() {
	n.send(daemon.SdNotifyReloading + "\n" + daemon.SdNotifyMonotonicUsec() + "STATUS=reloading")
}

func (n notifier) reloaded(err error) {
	status := "serving (reloaded)"
	if err != nil {
		status = "serving the previous configuration: reload failed: " + strings.ReplaceAll(err.Error(), "\n", " ")
	}
	n.send(daemon.SdNotifyReady + "\nSTATUS=" + status)
}

// stopping sends STOPPING=1 once ctx ends; call the returned function to
// forget it.
func (n notifier) stopping(ctx context.Context) func() bool {
	return context.AfterFunc(ctx, func() { n.send(daemon.SdNotifyStopping + "\nSTATUS=stopping") })
}

// watchdog sends WATCHDOG=1 every half the interval systemd asked for
// (WATCHDOG_USEC, when WATCHDOG_PID is unset or this process) until ctx
// ends, which serve makes the end of the process's shutdown (systemd
// keeps watching while the service stops). A bad WATCHDOG_USEC is logged
// and no watchdog is kept.
func (n notifier) watchdog(ctx context.Context) {
	every, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		n.log.Warn("systemd watchdog not kept", "error", err)
		return
	}
	if every <= 0 {
		return
	}
	n.log.Info("keeping systemd's watchdog", "every", every/2)
	go func() {
		t := time.NewTicker(every / 2)
		defer t.Stop()
		for {
			n.send(daemon.SdNotifyWatchdog)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

// Package wsecho is an example dist with a WebSocket echo app; it builds to
// the plugin binary paster-plugin-wsecho and shows that protocol upgrades
// work through the plugin boundary.
package wsecho

import (
	"net/http"

	"github.com/gorilla/websocket"
	"github.com/hashicorp/go-hclog"
	"github.com/paster-dev/paster/entrypoints"
)

// Dist is the wsecho distribution: app main upgrades to WebSocket and sends
// every message back; a plain GET without upgrade gets a short text.
var Dist = &entrypoints.Dist{
	Name:    "wsecho",
	Version: "0.1.0",
	Apps:    map[string]entrypoints.AppFactory{"main": newApp},
}

func newApp(_ map[string]string, _ entrypoints.Local) (http.Handler, error) {
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !websocket.IsWebSocketUpgrade(r) {
			_, _ = w.Write([]byte("wsecho: connect with a WebSocket client\n"))
			return
		}
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			hclog.L().Warn("upgrade failed", "error", err)
			return
		}
		defer c.Close()
		for {
			mt, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			if err := c.WriteMessage(mt, msg); err != nil {
				return
			}
		}
	}), nil
}

package runner

import (
	"bytes"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/paster-dev/paster/entrypoints"
)

// TestUnshadowRedacts (issue 8.10): the log line of a server setting taken
// from the global conf shows no value of a key named like a secret
// (entrypoints.IsSecret), and other values as they are.
func TestUnshadowRedacts(t *testing.T) {
	t.Parallel()
	at := entrypoints.Location{File: "dev.ini", Line: 4, Section: "server:main"}
	cases := []struct {
		key, global, local string
		want               string
		secret             bool
	}{
		{"ssl_key", "/etc/global.pem", "/etc/local.pem", "key=ssl_key value=[redacted] instead_of=[redacted]", true},
		{"admin_token", "g-tok-1", "l-tok-2", "key=admin_token value=[redacted] instead_of=[redacted]", true},
		{"port", "9000", "8080", "key=port value=9000 instead_of=8080", false},
	}
	for _, tc := range cases {
		t.Run(tc.key, func(t *testing.T) {
			t.Parallel()
			var logs bytes.Buffer
			local := entrypoints.NewLocal().WithShadow(entrypoints.Shadow{Key: tc.key, Value: tc.local, Global: tc.global, At: at})
			if got := Unshadow(local, hclog.New(&hclog.LoggerOptions{Output: &logs})).Get(tc.key); got != tc.global {
				t.Errorf("%s = %q, want the global's %q", tc.key, got, tc.global)
			}
			if !strings.Contains(logs.String(), tc.want) {
				t.Errorf("log %q does not contain %q", logs.String(), tc.want)
			}
			if tc.secret && (strings.Contains(logs.String(), tc.global) || strings.Contains(logs.String(), tc.local)) {
				t.Errorf("log shows a secret: %s", logs.String())
			}
		})
	}
}

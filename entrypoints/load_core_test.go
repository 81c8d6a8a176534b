package entrypoints

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
)

type testCore struct{ local Local }

func (*testCore) Close() error { return nil }

// TestServerCore: a server section's core key names a [core:NAME] section
// (or a URI), resolved with the server and made only by CoreSpec.Make.
func TestServerCore(t *testing.T) {
	t.Parallel()
	made := 0
	reg := &Registry{}
	if err := reg.Add(&Dist{
		Name: "cores",
		Servers: map[string]ServerFactory{"srv": func(map[string]string, Local) (Server, error) {
			return func(context.Context, http.Handler) error { return nil }, nil
		}},
		Cores: map[string]CoreFactory{
			"mem": func(_ map[string]string, local Local) (Core, error) {
				made++
				if local.Get("fail") != "" {
					return nil, local.Errorf("fail", "told to fail")
				}
				return &testCore{local: local}, nil
			},
		},
	}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, ini string
		want      string // the core's key k, "" for no core
		loadErr   string // parts of the load error
		makeErr   string // parts of Make's error
	}{
		{"section", "[server:main]\nuse = egg:cores#srv\ncore = c\n\n[core:c]\nuse = egg:cores#mem\nk = v\n", "v", "", ""},
		{"uri", "[server:main]\nuse = egg:cores#srv\ncore = egg:cores#mem\n", "", "", ""},
		{"none", "[server:main]\nuse = egg:cores#srv\n", "-", "", ""},
		{"missing section", "[server:main]\nuse = egg:cores#srv\ncore = nope\n", "", "a.ini:3 [server:main] core", ""},
		{"unknown entry point", "[server:main]\nuse = egg:cores#srv\ncore = c\n[core:c]\nuse = egg:cores#nats\n", "", "core:c", ""},
		{"factory fails", "[server:main]\nuse = egg:cores#srv\ncore = c\n[core:c]\nuse = egg:cores#mem\nfail = yes\n", "", "", "core:c"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			made = 0
			dir := writeINI(t, "a.ini", tc.ini)
			s := &Session{Registry: reg}
			_, err := s.LoadServer("config:a.ini", dir, nil)
			if tc.loadErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.loadErr) || !strings.Contains(err.Error(), "a.ini") {
					t.Fatalf("LoadServer = %v; want an error naming a.ini and %q", err, tc.loadErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == "-" {
				if s.Core != nil {
					t.Fatalf("Session.Core = %+v without a core key", s.Core)
				}
				return
			}
			if s.Core == nil || made != 0 {
				t.Fatalf("Session.Core = %v, factory called %d times before Make", s.Core, made)
			}
			c, err := s.Core.Make()
			if tc.makeErr != "" {
				var e *Error
				if !errors.As(err, &e) || !strings.Contains(err.Error(), tc.makeErr) || !strings.Contains(err.Error(), "fail") {
					t.Fatalf("Make = %v; want an *Error naming %q and the key", err, tc.makeErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := c.(*testCore).local.Get("k"); got != tc.want {
				t.Fatalf("core key k = %q, want %q", got, tc.want)
			}
			if !strings.HasPrefix(s.Core.EntryPoint, "egg:cores#mem") {
				t.Fatalf("EntryPoint = %q", s.Core.EntryPoint)
			}
		})
	}
}

package entrypoints

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestShadowedServerKeys: a key a section writes that a global hides stays
// out of the local conf (PasteDeploy's rule), but the factory learns it as
// a Shadow with the global's value, and Unshadow gives the global's value
// at the section's location, naming both in errors.
func TestShadowedServerKeys(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ini := "[DEFAULT]\nhost = 0.0.0.0\n\n[server:main]\nuse = egg:sh#run\nhost = 127.0.0.1\nport = 8080\nidle = 5\n"
	if err := os.WriteFile(filepath.Join(dir, "a.ini"), []byte(ini), 0o644); err != nil {
		t.Fatal(err)
	}
	var got Local
	reg := &Registry{}
	if err := reg.Add(&Dist{Name: "sh", Runners: map[string]ServerRunner{
		"run": func(_ context.Context, _ http.Handler, _ map[string]string, local Local) error {
			got = local
			return nil
		},
	}}); err != nil {
		t.Fatal(err)
	}
	s := &Session{Registry: reg}
	srv, err := s.LoadServer("config:a.ini", dir, map[string]string{"port": "9000"})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv(context.Background(), http.NotFoundHandler()); err != nil {
		t.Fatal(err)
	}

	if keys := strings.Join(got.Keys(), ","); keys != "idle" {
		t.Errorf("local keys %q, want idle only (the rule)", keys)
	}
	want := []Shadow{
		{Key: "host", Value: "127.0.0.1", Global: "0.0.0.0", At: Location{File: "a.ini", Line: 6, Section: "server:main"}},
		{Key: "port", Value: "8080", Global: "9000", At: Location{File: "a.ini", Line: 7, Section: "server:main"}},
	}
	shadows := got.Shadows()
	if len(shadows) != len(want) {
		t.Fatalf("shadows %+v, want %+v", shadows, want)
	}
	for i := range want {
		if shadows[i] != want[i] {
			t.Errorf("shadow %d: %+v, want %+v", i, shadows[i], want[i])
		}
	}
	if n := s.Root[0].Conf().Shadows(); len(n) != 2 {
		t.Errorf("the server node's Conf has %d shadows, want 2", len(n))
	}

	un, applied := got.Unshadow()
	if len(applied) != 2 || un.Get("port") != "9000" || un.Get("host") != "0.0.0.0" || un.Get("idle") != "5" {
		t.Fatalf("Unshadow: %v, applied %+v", un.Map(), applied)
	}
	if w := un.Where("port"); w != want[1].At {
		t.Errorf("Where(port) = %v, want %v", w, want[1].At)
	}
	err = un.Errorf("port", "bad")
	if msg := `a.ini:7 [server:main] port (the global value, which hides the section's "8080"): bad`; err.Error() != msg {
		t.Errorf("Errorf: %q, want %q", err, msg)
	}
	if _, again := un.Unshadow(); len(again) != 0 {
		t.Errorf("a second Unshadow applied %+v", again)
	}
	if e := un.With("port", "1", Location{}).Errorf("port", "bad"); strings.Contains(e.Error(), "global") {
		t.Errorf("a key set again is no longer the global's: %v", e)
	}
	without := got.Without("port")
	if _, ok := without.Shadowed("port"); ok {
		t.Error("Without(port) kept port's Shadow")
	}
	if v, _ := without.Unshadow(); v.Get("port") != "" || v.Get("host") != "0.0.0.0" {
		t.Errorf("Without(port) then Unshadow: %v", v.Map())
	}
}

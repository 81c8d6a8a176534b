package builtin

import (
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/paster-dev/paster/entrypoints"
)

// TestPasteAliases: a configuration naming egg:Paste#... and
// egg:PasteDeploy#... entry points loads and serves with paster's own.
func TestPasteAliases(t *testing.T) {
	t.Parallel()
	dir, err := filepath.Abs("testdata")
	if err != nil {
		t.Fatal(err)
	}
	s := &entrypoints.Session{}
	app, err := s.LoadApp("config:paste.ini", dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.LoadServer("config:paste.ini", dir, nil); err != nil {
		t.Fatal(err)
	}
	base := serveHTTP(t, app)
	resp, err := http.Get(base + "/paste.ini")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "egg:Paste#urlmap") {
		t.Errorf("GET /paste.ini: %s %q", resp.Status, body)
	}
	if got := s.Root[0].Children[1].EntryPoint; got != "filter-app" {
		t.Errorf("the /mounted child is %q, want a filter-app", got)
	}

	_, err = entrypoints.LoadApp("egg:Paste#evalerror", dir, nil)
	if err == nil || !strings.Contains(err.Error(), "has: cascade, static, urlmap") {
		t.Errorf("a Paste entry point paster lacks: %v", err)
	}
}

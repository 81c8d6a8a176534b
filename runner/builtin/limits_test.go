package builtin

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestLimits(t *testing.T) {
	t.Parallel()
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Write(b)
	})
	if _, err := limitsFactory(echo, nil, localOf()); err == nil {
		t.Error("max_body_bytes missing: no error")
	}
	if _, err := limitsFactory(echo, nil, localOf("max_body_bytes", "lots")); err == nil || !strings.Contains(err.Error(), "test.ini:3") {
		t.Errorf("bad size: %v", err)
	}
	h, err := limitsFactory(echo, nil, localOf("max_body_bytes", "1k"))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	post := func(body io.Reader, length int64) (int, string) {
		req, _ := http.NewRequest("POST", srv.URL, body)
		req.ContentLength = length
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := post(strings.NewReader("small"), 5); code != 200 || body != "small" {
		t.Errorf("small body: %d %q", code, body)
	}
	big := strings.Repeat("x", 2048)
	if code, _ := post(strings.NewReader(big), int64(len(big))); code != 413 {
		t.Errorf("declared large body: %d", code)
	}
	// Chunked (length unknown): the read fails and the app's 400 becomes 413.
	if code, body := post(io.MultiReader(strings.NewReader(big)), -1); code != 413 || !strings.Contains(body, "max_body_bytes") {
		t.Errorf("chunked large body: %d %q", code, body)
	}
}

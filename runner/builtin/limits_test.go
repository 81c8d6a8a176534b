package builtin

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
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
		t.Error("max_body_bytes and request_timeout missing: no error")
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

// TestLimitsRequestTimeout bounds an app that never answers with
// request_timeout: 503 naming the key, and the app's context cancelled with
// cause http.ErrHandlerTimeout. Bad values name the key.
func TestLimitsRequestTimeout(t *testing.T) {
	t.Parallel()
	causes := make(chan error, 1)
	never := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
		causes <- context.Cause(r.Context())
	})
	for _, bad := range []struct{ key, value string }{{"request_timeout", "0"}, {"request_timeout", "soon"}} {
		_, err := limitsFactory(never, nil, localOf(bad.key, bad.value))
		if err == nil || !strings.Contains(err.Error(), "test.ini:3") || !strings.Contains(err.Error(), bad.key) {
			t.Errorf("%s = %s: %v, want an error naming the place and key", bad.key, bad.value, err)
		}
	}
	h, err := limitsFactory(never, nil, localOf("request_timeout", "200ms"))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	client := &http.Client{Timeout: 30 * time.Second} // the app alone would hang
	resp, err := client.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(b), "request_timeout (200ms)") {
		t.Errorf("got %d %q, want 503 naming request_timeout", resp.StatusCode, b)
	}
	select {
	case cause := <-causes:
		if !errors.Is(cause, http.ErrHandlerTimeout) {
			t.Errorf("the app's context ended with %v, want http.ErrHandlerTimeout", cause)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the app's context was not cancelled")
	}
}

// TestLimitsInformational: an app behind egg:paster#limits that sends an
// informational response (103 Early Hints, 100 Continue) before its final
// one keeps its final status. Before, the 1xx counted as the header: the
// app's 404 was dropped and the client got 200, and a body over the limit
// read after a 103 no longer turned the answer into 413.
func TestLimitsInformational(t *testing.T) {
	t.Parallel()
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		if _, err := io.ReadAll(r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		http.Error(w, "not here", http.StatusNotFound)
	})
	h, err := limitsFactory(app, nil, localOf("max_body_bytes", "1k"))
	if err != nil {
		t.Fatal(err)
	}
	url := start(t, h).URL
	for _, tt := range []struct {
		body   io.Reader
		status int
	}{
		{strings.NewReader("small"), 404},
		{io.MultiReader(strings.NewReader(strings.Repeat("x", 2048))), 413},
	} {
		status, body, _ := do(t, nil, newRequest(t, "POST", url, tt.body))
		if status != tt.status {
			t.Errorf("status %d %q, want %d", status, body, tt.status)
		}
	}
}

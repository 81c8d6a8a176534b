package upload

import (
	"bytes"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/paster-dev/paster/entrypoints"
)

// TestFormPostsWhatItShows: the page's form uses an enctype browsers know,
// and what that form posts is read and counted.
func TestFormPostsWhatItShows(t *testing.T) {
	h, err := newApp(nil, entrypoints.Local{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()

	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`<form[^>]*enctype="([^"]+)"`).FindSubmatch(page)
	valid := map[string]bool{"application/x-www-form-urlencoded": true, "multipart/form-data": true, "text/plain": true}
	if m == nil || !valid[string(m[1])] {
		t.Fatalf("form enctype %q is not one a browser sends; page:\n%s", m, page)
	}

	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	fw, _ := mw.CreateFormFile("f", "a.txt")
	fw.Write([]byte("hello, upload"))
	mw.Close()
	resp, err = http.Post(srv.URL, mw.FormDataContentType(), bytes.NewReader(body.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(string(got), "read "+strconv.Itoa(body.Len())+" bytes") {
		t.Errorf("form post: %d %q; want the %d bytes sent counted", resp.StatusCode, got, body.Len())
	}
}

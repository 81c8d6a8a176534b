package builtin

import (
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/paster-dev/paster/entrypoints"
)

// staticFactory is egg:paster#static, Paste's static file app. Keys:
//
//	document_root  directory to serve (required); a relative path is
//	               relative to the global conf's "here" (the INI file's
//	               directory) when present, else the working directory
//	cache_max_age  seconds; sets "Cache-Control: max-age=N" on files
//	serve_hidden   bool, default false: serve dotfiles (.env, .htpasswd)
//	               and anything under a dot-directory (.git/); when false
//	               they are 404, except under /.well-known/ (RFC 8615)
//
// GET and HEAD only (405 otherwise). A directory is answered with its
// index.html; a directory asked for without a trailing slash is first
// redirected (301) to the slash form of its cleaned path under
// ScriptName(r), always a path on this site (GET //host/.. is redirected to
// /, never to //host/../); a missing file or
// a directory without index.html is 404 (no listings). Ranges, conditional
// requests and content types are http.ServeContent's. Files are opened
// through an os.Root, so no path (.., encoded traversal, or a symlink
// pointing outside) reaches anything outside document_root.
//
// Errors: document_root missing, not a directory or not openable, a bad
// cache_max_age or serve_hidden, each naming the key. The root stays open for the life of
// the process.
func staticFactory(global map[string]string, local entrypoints.Local) (http.Handler, error) {
	dir := strings.TrimSpace(local.Get("document_root"))
	if dir == "" {
		return nil, local.Errorf("document_root", "required: the directory to serve")
	}
	if !filepath.IsAbs(dir) && global["here"] != "" {
		dir = filepath.Join(global["here"], dir)
	}
	for _, k := range local.Keys() {
		if k != "document_root" && k != "cache_max_age" && k != "serve_hidden" {
			logger().Warn("static: unknown key ignored", "key", k, "at", local.Where(k).String(), "known", "document_root, cache_max_age, serve_hidden")
		}
	}
	serveHidden, err := local.Bool("serve_hidden", false)
	if err != nil {
		return nil, err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, local.Errorf("document_root", "%w", err)
	}
	s := &static{root: root.FS(), serveHidden: serveHidden}
	age, err := local.Int("cache_max_age", -1)
	if err != nil {
		return nil, err
	}
	if age >= 0 {
		s.cacheControl = "max-age=" + strconv.Itoa(age)
	}
	return s, nil
}

type static struct {
	root         fs.FS
	cacheControl string
	serveHidden  bool
}

func (s *static) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !onlyGetHead(w, r, "405 Method Not Allowed") {
		return
	}
	p := r.URL.Path
	if p == "" {
		p = "/"
	}
	if strings.Contains(p, "\x00") {
		http.Error(w, "400 Bad Request", http.StatusBadRequest)
		return
	}
	name := strings.TrimPrefix(path.Clean("/"+p), "/")
	if name == "" {
		name = "."
	}
	if !s.serveHidden && isHidden(name) {
		http.Error(w, "404 Not Found", http.StatusNotFound)
		return
	}
	f, err := s.root.Open(name)
	if err != nil {
		s.error(w, err)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		s.error(w, err)
		return
	}
	if fi.IsDir() {
		if !clientPathHasSlash(r) {
			// The target is built from the cleaned name, never from the
			// path as sent: "//host/.." names the root, and is redirected
			// to "/", not to "//host/../".
			siteRedirect(w, r, ScriptName(r)+"/"+name+"/", r.URL.RawQuery, http.StatusMovedPermanently)
			return
		}
		f.Close()
		if f, err = s.root.Open(path.Join(name, "index.html")); err != nil {
			s.error(w, err)
			return
		}
		defer f.Close()
		if fi, err = f.Stat(); err != nil || fi.IsDir() {
			http.Error(w, "404 Not Found", http.StatusNotFound)
			return
		}
	} else if strings.HasSuffix(p, "/") {
		http.Error(w, "404 Not Found", http.StatusNotFound) // a file is not a directory
		return
	}
	if s.cacheControl != "" {
		w.Header().Set("Cache-Control", s.cacheControl)
	}
	rs, ok := f.(io.ReadSeeker)
	if !ok {
		http.Error(w, "500 Internal Server Error", http.StatusInternalServerError)
		return
	}
	http.ServeContent(w, r, fi.Name(), fi.ModTime(), rs)
}

// isHidden reports whether the cleaned, relative name is a dotfile or
// lies under a dot-directory, other than /.well-known/ (RFC 8615's
// directory for files meant to be public).
func isHidden(name string) bool {
	for i, seg := range strings.Split(name, "/") {
		if strings.HasPrefix(seg, ".") && seg != "." && (i > 0 || seg != ".well-known") {
			return true
		}
	}
	return false
}

// error answers 404 for anything that does not exist or lies outside the
// root, 403 for permissions, 500 otherwise (without details).
func (s *static) error(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, fs.ErrPermission):
		http.Error(w, "403 Forbidden", http.StatusForbidden)
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, fs.ErrInvalid), errors.Is(err, syscall.ENOTDIR), isEscape(err):
		http.Error(w, "404 Not Found", http.StatusNotFound)
	default:
		logger().Warn("static: cannot open file", "error", err)
		http.Error(w, "500 Internal Server Error", http.StatusInternalServerError)
	}
}

// isEscape reports whether err is os.Root refusing a path that leaves the
// root ("path escapes from parent"); treated as not found.
func isEscape(err error) bool {
	var pe *fs.PathError
	return errors.As(err, &pe) && strings.Contains(pe.Err.Error(), "escapes")
}

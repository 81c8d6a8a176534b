package builtin

import (
	"errors"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/paster-dev/paster/entrypoints"
)

// staticKeys are the local keys egg:paster#static reads (Keys).
var staticKeys = []string{"document_root", "cache_max_age", "serve_hidden", "precompressed"}

// staticFactory is egg:paster#static, Paste's static file app. Keys:
//
//	document_root  directory to serve (required); a relative path is
//	               relative to the global conf's "here" (the INI file's
//	               directory) when present, else the working directory
//	cache_max_age  seconds; sets "Cache-Control: max-age=N" on files
//	serve_hidden   bool, default false: serve dotfiles (.env, .htpasswd)
//	               and anything under a dot-directory (.git/); when false
//	               they are 404, except under /.well-known/ (RFC 8615)
//	precompressed  codings whose precompressed siblings are served, in
//	               order of preference: "br gzip" (default), "gzip",
//	               "br", or "none" (an empty value is none too)
//
// GET and HEAD only (405 otherwise). Only regular files are served (a
// named pipe, device or socket is 404, never waited on). A directory is
// answered with its index.html; a directory asked for without a trailing
// slash is first redirected (301) to the slash form of its cleaned path under
// ScriptName(r), always a path on this site (GET //host/.. is redirected to
// /, never to //host/../); a missing file, a name too long for the file
// system (over 4096 bytes once cleaned, or a component the file system
// refuses) or a directory without index.html is 404 (no listings).
//
// Every file is sent with a strong ETag (its modification time and size)
// and Last-Modified; If-None-Match and If-Modified-Since are answered 304,
// Range with 206 and If-Range honoured (http.ServeContent does these, see
// serveFile); a Range of more than 200 ranges gets the whole file (200).
// When the client accepts br or gzip and the file has a regular sibling
// name.br or name.gz, the sibling is sent instead, with
// Content-Encoding, the original's Content-Type and an ETag of its own;
// ranges then count compressed bytes (see servePrecompressed). Every
// response for a file with a sibling carries "Vary: Accept-Encoding". A
// client that does not accept the coding (or gives it q=0) gets the
// original; the sibling is never sent with a Content-Encoding to it (asked
// for by its own name, /app.js.gz is an ordinary file). A sibling without
// its original is not served in its place (404). Files are opened
// through an os.Root, so no path (.., encoded traversal, or a symlink
// pointing outside) reaches anything outside document_root.
//
// Errors: document_root missing, not a directory or not openable, a bad
// cache_max_age, serve_hidden or precompressed (an unknown coding), each
// naming the file, line, section and key. The root stays open for the life of
// the process.
func staticFactory(global map[string]string, local entrypoints.Local) (http.Handler, error) {
	dir := strings.TrimSpace(local.Get("document_root"))
	if dir == "" {
		return nil, local.Errorf("document_root", "required: the directory to serve")
	}
	if !filepath.IsAbs(dir) && global["here"] != "" {
		dir = filepath.Join(global["here"], dir)
	}
	warnUnknown("static", local, staticKeys)
	serveHidden, err := local.Bool("serve_hidden", false)
	if err != nil {
		return nil, err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, local.Errorf("document_root", "%w", err)
	}
	s := &static{root: root, serveHidden: serveHidden}
	age, err := local.Int("cache_max_age", -1)
	if err != nil {
		return nil, err
	}
	if age >= 0 {
		s.cacheControl = "max-age=" + strconv.Itoa(age)
	}
	pre := []string{"br", "gzip"}
	if _, ok := local.Lookup("precompressed"); ok {
		pre = listOf(local, "precompressed")
	}
	for _, name := range pre {
		c, ok := precompressedCodings[strings.ToLower(name)]
		if !ok {
			if strings.EqualFold(name, "none") && len(pre) == 1 {
				break
			}
			return nil, local.Errorf("precompressed", "unknown coding %q (want br, gzip, or none)", name)
		}
		if slices.Contains(s.precompressed, c) {
			return nil, local.Errorf("precompressed", "%q named twice", name)
		}
		s.precompressed = append(s.precompressed, c)
	}
	return s, nil
}

type static struct {
	root          *os.Root
	cacheControl  string
	serveHidden   bool
	precompressed []precompressedCoding // in order of preference
}

// precompressedCoding is a content coding and the file name extension of
// its precompressed siblings.
type precompressedCoding struct{ coding, ext string }

// precompressedCodings are the codings the precompressed key may name.
var precompressedCodings = map[string]precompressedCoding{
	"br":   {"br", ".br"},
	"gzip": {"gzip", ".gz"},
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
	if len(name) > maxPathLen {
		// No file has such a name; splitting it into its components
		// (isHidden, os.Root) would cost dozens of times its length.
		http.Error(w, "404 Not Found", http.StatusNotFound)
		return
	}
	if !s.serveHidden && isHidden(name) {
		http.Error(w, "404 Not Found", http.StatusNotFound)
		return
	}
	f, err := s.open(name)
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
	if !fi.IsDir() && !fi.Mode().IsRegular() {
		http.Error(w, "404 Not Found", http.StatusNotFound) // a pipe, a device, a socket
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
		name = path.Join(name, "index.html")
		if f, err = s.open(name); err != nil {
			s.error(w, err)
			return
		}
		defer f.Close()
		if fi, err = f.Stat(); err != nil || !fi.Mode().IsRegular() {
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
	if len(s.precompressed) > 0 {
		if ok := s.servePrecompressed(w, r, name, f, fi); ok {
			return
		}
	}
	serveFile(w, r, f, fi, "")
}

// serveFile answers with the file f (whose Stat is fi) through
// http.ServeContent, after setting a strong ETag made of the file's
// modification time and size, with "-"+coding appended for a precompressed
// representation so that each representation has its own (RFC 9110 8.8.3).
// ServeContent then does Last-Modified, the conditional requests
// (If-None-Match, If-Modified-Since, If-Match, If-Unmodified-Since: 304 or
// 412), Range and If-Range, and the Content-Type (from the name's
// extension, else sniffed) unless one is set.
//
// A Range header listing more than maxRanges ranges is ignored and the
// whole file sent (200), as Apache's MaxRanges does: ServeContent would
// write a multipart part, with a seek and a read, for each of them, so
// that one request of many tiny ranges costs far more CPU and output than
// the file itself.
func serveFile(w http.ResponseWriter, r *http.Request, f fs.File, fi fs.FileInfo, coding string) {
	rs, ok := f.(io.ReadSeeker)
	if !ok {
		http.Error(w, "500 Internal Server Error", http.StatusInternalServerError)
		return
	}
	tag := `"` + strconv.FormatInt(fi.ModTime().UnixNano(), 36) + "-" + strconv.FormatInt(fi.Size(), 36)
	if coding != "" {
		tag += "-" + coding
	}
	w.Header().Set("ETag", tag+`"`)
	if rg := r.Header.Get("Range"); strings.Count(rg, ",") >= maxRanges {
		// A copy: handlers outside (the access log) see the request as sent.
		r2 := *r
		r2.Header = r.Header.Clone()
		r2.Header.Del("Range")
		r = &r2
	}
	http.ServeContent(w, r, fi.Name(), fi.ModTime(), rs)
}

// maxPathLen is the longest name static looks up: Linux's PATH_MAX. A
// request path can be as long as max_header_bytes.
const maxPathLen = 4096

// maxRanges is the most ranges one Range header may ask static for; past
// it the whole file is sent (see serveFile). Apache's MaxRanges default.
const maxRanges = 200

// servePrecompressed answers with name's precompressed sibling (name.br,
// name.gz) when there is one, as a regular file, for a coding the client's
// Accept-Encoding gives a quality above 0: the highest quality wins, ties
// go to the order of the precompressed key. f and fi are the original's.
// It sets "Vary: Accept-Encoding" whenever a sibling exists, served or not,
// so that a cache keeps the representations apart. It reports whether it
// answered; when not, the caller serves the original.
//
// The answer has the original's Content-Type (from its extension, else
// sniffed from its first bytes), "Content-Encoding: gzip" or "br" and the
// sibling's own ETag; Range requests count bytes of the compressed file,
// the representation selected (as nginx's gzip_static and Caddy's
// precompressed do), and If-Range compares with that representation's ETag.
func (s *static) servePrecompressed(w http.ResponseWriter, r *http.Request, name string, f fs.File, fi fs.FileInfo) bool {
	accept := r.Header.Values("Accept-Encoding")
	var best fs.File
	var bestInfo fs.FileInfo
	bestCoding, bestQ, found := "", 0.0, false
	for _, c := range s.precompressed {
		sf, err := s.open(name + c.ext)
		if err != nil {
			continue
		}
		si, err := sf.Stat()
		if err != nil || !si.Mode().IsRegular() {
			sf.Close()
			continue
		}
		found = true
		if q := encodingQ(accept, c.coding); q > bestQ {
			if best != nil {
				best.Close()
			}
			best, bestInfo, bestCoding, bestQ = sf, si, c.coding, q
			continue
		}
		sf.Close()
	}
	h := w.Header()
	if found && !varyHas(h, "Accept-Encoding") {
		h.Add("Vary", "Accept-Encoding")
	}
	if best == nil {
		return false
	}
	defer best.Close()
	ct := mime.TypeByExtension(path.Ext(fi.Name()))
	if ct == "" {
		buf := make([]byte, 512)
		n, _ := io.ReadFull(f, buf)
		ct = http.DetectContentType(buf[:n])
	}
	h.Set("Content-Type", ct)
	h.Set("Content-Encoding", bestCoding)
	serveFile(w, r, best, bestInfo, bestCoding)
	return true
}

// open opens name under the root for reading without waiting: a named
// pipe opened for reading would block until some process opened it for
// writing, holding the request for good (the callers then refuse anything
// but regular files and directories). O_NONBLOCK changes nothing for
// those.
func (s *static) open(name string) (*os.File, error) {
	return s.root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK, 0)
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

// error answers 404 for anything that does not exist, lies outside the
// root or has a name the file system refuses as too long (as nginx: a
// client choosing such names must not fill the log with warnings), 403 for
// permissions, 500 otherwise (without details, and logged).
func (s *static) error(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, fs.ErrPermission):
		http.Error(w, "403 Forbidden", http.StatusForbidden)
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, fs.ErrInvalid), errors.Is(err, syscall.ENOTDIR),
		errors.Is(err, syscall.ENAMETOOLONG), isEscape(err):
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

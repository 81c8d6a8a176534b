package entrypoints

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
)

// Sentinel errors of the loader, for errors.Is. Every loader error is an
// *Error that also names where the problem is; ErrNoDist, ErrNoEntryPoint,
// ErrAmbiguousEntryPoint and ErrBadURI (registry and URI errors) arrive
// wrapped the same way, and a missing file wraps fs.ErrNotExist.
var (
	// ErrSyntax: a line that is not a section header, key = value, key: value,
	// blank or a comment, or a key before the first section header.
	ErrSyntax = errors.New("syntax error")
	// ErrDuplicate: a section header or a key within one section written twice.
	ErrDuplicate = errors.New("duplicate")
	// ErrInterpolation: a bad %(name)s reference, a lone '%', or nesting
	// deeper than 10 levels.
	ErrInterpolation = errors.New("interpolation error")
	// ErrNoSection: no section of the requested kind has the name.
	ErrNoSection = errors.New("no such section")
	// ErrAmbiguousSection: sections of two prefix groups match one name
	// ([app:main] and [composite:main]).
	ErrAmbiguousSection = errors.New("ambiguous section")
	// ErrNoLoader: a section has no use key.
	ErrNoLoader = errors.New("no loader")
	// ErrProtocolKey: a section names a factory with an explicit protocol key
	// (paste.app_factory = ...), which has no Go meaning.
	ErrProtocolKey = errors.New("explicit protocol key")
	// ErrMissingKey: a pipeline without pipeline, a filter-app without next.
	ErrMissingKey = errors.New("missing key")
	// ErrBadPipeline: a pipeline with other keys, or an empty one.
	ErrBadPipeline = errors.New("bad pipeline")
	// ErrNoGlobal: get LOCAL = NAME where NAME is no global.
	ErrNoGlobal = errors.New("no such global")
	// ErrCycle: references (use, next, filter-with, pipeline items, startup,
	// composite children) come back to a section already being loaded, nest
	// more than 100 deep, or number more than Session.MaxReferences.
	ErrCycle = errors.New("reference cycle")
	// ErrFactory: a factory returned an error, panicked, or returned nothing.
	ErrFactory = errors.New("factory failed")
	// ErrNoResolver: a plugin: URI was used by a Session without a Resolver.
	ErrNoResolver = errors.New("no plugin resolver")
)

// Step is one reference the loader followed: the key at Location whose value
// named the next thing to load (use=config:blog.ini#blog).
type Step struct {
	Location
	Key   string
	Value string
}

// Error is a loader error: what went wrong (Err, which wraps one of the
// sentinels), where (Location, Key) and through which references the loader
// got there (Chain, outermost first). Its message reads
//
//	development.ini:7 [app:main] use=config:svc/blog.ini#blog → svc/blog.ini:3 [app:blog] use=egg:Blog#main: application "mian" not found in dist Blog (has: admin, main); did you mean "main"?
//
// with file names relative to the base directory of the load.
type Error struct {
	Location
	Key   string
	Chain []Step
	Err   error
	base  string
}

func (e *Error) Error() string {
	var b strings.Builder
	for i, st := range e.Chain {
		if i > 0 {
			b.WriteString(" → ")
		}
		b.WriteString(formatStep(e.base, st))
	}
	var last Step
	if n := len(e.Chain); n > 0 {
		last = e.Chain[n-1]
	}
	if e.Location != last.Location || e.Key != last.Key {
		here := relLocation(e.base, e.Location).String()
		if e.Key != "" {
			here = strings.TrimSpace(here + " " + e.Key)
		}
		if here != "" {
			if b.Len() > 0 {
				b.WriteString(" → ")
			}
			b.WriteString(here)
		}
	}
	if b.Len() > 0 {
		b.WriteString(": ")
	}
	b.WriteString(e.Err.Error())
	return b.String()
}

// Unwrap returns Err.
func (e *Error) Unwrap() error { return e.Err }

func formatStep(base string, st Step) string {
	s := relLocation(base, st.Location).String()
	if st.Key != "" {
		s = strings.TrimSpace(s + " " + st.Key + "=" + Redact(st.Key, st.Value))
	}
	return s
}

// relLocation shows l's file relative to base when it lies below base.
func relLocation(base string, l Location) Location {
	if base != "" && l.File != "" {
		if r, err := filepath.Rel(base, l.File); err == nil && r != ".." && !strings.HasPrefix(r, "../") {
			l.File = r
		}
	}
	return l
}

// reason is an error message that also matches a sentinel with errors.Is.
type reason struct {
	kind error
	err  error
}

func (r *reason) Error() string   { return r.err.Error() }
func (r *reason) Unwrap() []error { return []error{r.kind, r.err} }

// because returns an error with the message format (which may use %w) that
// errors.Is also matches against kind.
func because(kind error, format string, args ...any) error {
	return &reason{kind: kind, err: fmt.Errorf(format, args...)}
}

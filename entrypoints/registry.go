package entrypoints

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
)

// Sentinel errors for conditions callers test with errors.Is.
var (
	// ErrNoDist means no compiled-in dist and no plugin binary has the name.
	ErrNoDist = errors.New("distribution not found")
	// ErrNoEntryPoint means the dist has no entry point of that name for the kind.
	ErrNoEntryPoint = errors.New("entry point not found")
	// ErrAmbiguousEntryPoint means the name exists in two groups of the kind.
	ErrAmbiguousEntryPoint = errors.New("ambiguous entry point")
	// ErrDuplicateDist means Register was given a name that is already registered.
	ErrDuplicateDist = errors.New("distribution already registered")
)

// Registry is a set of compiled-in dists, looked up by name. The zero value is
// empty and ready to use; it is safe for concurrent use.
type Registry struct {
	mu    sync.RWMutex
	dists map[string]*Dist
}

// Default is the registry that Register adds to and the loader searches when
// a Session names no other.
var Default = &Registry{}

// Register adds d to the Default registry. It is meant for init functions and
// panics if d has no name or its name is taken, as http.Handle does.
func Register(d *Dist) {
	if err := Default.Add(d); err != nil {
		panic(err)
	}
}

// Add adds d to the registry; it fails if d has no name or the name is taken.
func (r *Registry) Add(d *Dist) error {
	if d == nil || d.Name == "" {
		return errors.New("entrypoints: dist without a name")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.dists == nil {
		r.dists = map[string]*Dist{}
	}
	if _, ok := r.dists[d.Name]; ok {
		return fmt.Errorf("%w: %q", ErrDuplicateDist, d.Name)
	}
	r.dists[d.Name] = d
	return nil
}

// Dist returns the dist called name, or nil.
func (r *Registry) Dist(name string) *Dist {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.dists[name]
}

// Dists returns every registered dist, sorted by name.
func (r *Registry) Dists() []*Dist {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]*Dist, 0, len(r.dists))
	for _, d := range r.dists {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Find returns the group in which d has the entry point name for kind,
// following PasteDeploy: apps are searched in the app and composite groups,
// and a name present in both is ambiguous; filters and servers take the first
// group that has the name (filter before filter-app, server factory before
// server runner). A missing name is an ErrNoEntryPoint error that lists what
// the dist has for the kind and suggests a near miss.
func (d *Dist) Find(kind Kind, name string) (Protocol, error) {
	var found []Protocol
	for _, p := range kind.Protocols() {
		if d.Has(p, name) {
			found = append(found, p)
		}
	}
	switch {
	case len(found) == 0:
		have := d.EntryNames(kind)
		msg := fmt.Sprintf("%s %q not found in dist %s (has: %s)", kind, name, d.Name, listOrNone(have))
		if s := Suggest(name, have); s != "" {
			msg += fmt.Sprintf("; did you mean %q?", s)
		}
		return "", fmt.Errorf("%w: %s", ErrNoEntryPoint, msg)
	case len(found) > 1 && kind == KindApp:
		return "", fmt.Errorf("%w: %q in dist %s is in both %s and %s", ErrAmbiguousEntryPoint, name, d.Name, found[0], found[1])
	}
	return found[0], nil
}

// EntryNames returns the sorted names of the dist's entry points of kind.
func (d *Dist) EntryNames(kind Kind) []string {
	seen := map[string]bool{}
	var out []string
	for _, p := range kind.Protocols() {
		for _, n := range d.Names(p) {
			if !seen[n] {
				seen[n] = true
				out = append(out, n)
			}
		}
	}
	sort.Strings(out)
	return out
}

func listOrNone(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Suggest returns the candidate closest to name when it is a plausible
// misspelling (same letters ignoring case, or an edit distance of at most a
// third of the name's length), else "".
func Suggest(name string, candidates []string) string {
	best, bestDist := "", len(name)/3+1
	for _, c := range candidates {
		if strings.EqualFold(c, name) && c != name {
			return c
		}
		if d := editDistance(strings.ToLower(name), strings.ToLower(c)); d < bestDist && c != name {
			best, bestDist = c, d
		}
	}
	return best
}

// editDistance is the Damerau-Levenshtein distance (adjacent transpositions
// count as one edit, so "mian" is one edit from "main").
func editDistance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	d := make([][]int, len(ra)+1)
	for i := range d {
		d[i] = make([]int, len(rb)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(ra); i++ {
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(ra)][len(rb)]
}

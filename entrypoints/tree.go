package entrypoints

// Node is one object of a resolved composition: what paster check prints.
// Section, File and Line are where the object's section is (the outermost
// one when sections use each other; Via lists the ones behind it), or empty
// for an object loaded by URI alone.
type Node struct {
	// Kind is what was asked for: application, filter, server or coroutine.
	Kind    string `json:"kind"`
	Section string `json:"section,omitempty"`
	File    string `json:"file,omitempty"`
	Line    int    `json:"line,omitempty"`
	// EntryPoint is the factory (egg:paster#urlmap, plugin:/opt/blog#main),
	// or the composition: "pipeline" (children: the filters, outermost
	// first, then the application), "filter-with" and "filter-app"
	// (children: the filter, then what it wraps).
	EntryPoint string `json:"entry_point"`
	// Protocol is the entry point's group (paste.server_runner,
	// paste.app_factory, ...), empty for a composition.
	Protocol Protocol `json:"protocol,omitempty"`
	// Binary is where the entry point's dist came from: the plugin binary
	// whose process runs it (Dist.Binary, as the resolver found it), or ""
	// when the dist is compiled in and for a composition.
	Binary string `json:"binary,omitempty"`
	// Via lists the sections reached through use, outermost first, as
	// "FILE:LINE [SECTION]".
	Via []string `json:"via,omitempty"`
	// Global and Local are the configuration handed to the factory.
	Global map[string]string `json:"global,omitempty"`
	Local  []KV              `json:"local,omitempty"`
	// Children are the parts of a composition, the applications a composite
	// loaded, and the startup coroutines of a server.
	Children []*Node `json:"children,omitempty"`

	conf Local // the local conf, as the factory got it
}

// Conf returns the local configuration of the node's section as its
// factory got it (or would get it, from AppConfig), each key with where it
// was written and the keys a global hides (Local.Shadows); for a
// composition, that of its own section. Package engine reads the keys it
// applies to every server from a server node's.
func (n *Node) Conf() Local { return n.conf }

// KV is one local configuration key and its value.
type KV struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// shape is how a context makes its object.
type shape int

const (
	shapeEntry      shape = iota // a factory of a dist
	shapeFilterWith              // filter (outer) around next
	shapePipeline                // filters, first outermost, around next
	shapeFilterApp               // filter around the application next
)

// ctx is the unevaluated description of one object: PasteDeploy's context.
// The loader first builds the whole tree of contexts (reading, interpolating
// and looking up everything), then creates the objects from it.
type ctx struct {
	kind   Kind
	shape  shape
	global map[string]string
	local  Local
	loc    Location   // the section it was loaded as (outermost); zero for a bare URI
	via    []Location // sections behind loc through use, outermost first
	chain  []Step     // references followed to reach it

	// shapeEntry
	dist   *Dist
	proto  Protocol
	ref    URI         // egg:DIST#ENTRY or plugin:PATH#ENTRY
	loader *fileLoader // where a composite resolves names; nil: entry points of dist
	dir    string      // where a composite without loader resolves relative URIs

	filter  *ctx   // shapeFilterWith, shapeFilterApp
	next    *ctx   // the wrapped object (shapeFilterWith), the application (others)
	filters []*ctx // shapePipeline
	startup []startupCtx
	core    *startupCtx // a server section's core key
}

// startupCtx is one name of a server section's startup key.
type startupCtx struct {
	name string
	at   Location
	ctx  *ctx
}

// walk calls f on c and every context below it.
func (c *ctx) walk(f func(*ctx)) {
	f(c)
	for _, d := range c.parts() {
		d.walk(f)
	}
}

// parts returns the contexts c is made of, in the order of Node.Children.
func (c *ctx) parts() []*ctx {
	var out []*ctx
	switch c.shape {
	case shapeFilterWith, shapeFilterApp:
		out = append(out, c.filter, c.next)
	case shapePipeline:
		out = append(append(out, c.filters...), c.next)
	}
	for _, st := range c.startup {
		out = append(out, st.ctx)
	}
	return out
}

func (c *ctx) entryPoint() string {
	switch c.shape {
	case shapeFilterWith:
		return "filter-with"
	case shapePipeline:
		return "pipeline"
	case shapeFilterApp:
		return "filter-app"
	}
	return c.ref.String()
}

// node describes c alone, without children.
func (c *ctx) node() *Node {
	n := &Node{Kind: c.kind.String(), Section: c.loc.Section, File: c.loc.File, Line: c.loc.Line,
		EntryPoint: c.entryPoint(), Global: copyMap(c.global)}
	if c.shape == shapeEntry {
		n.Protocol = c.proto
		if c.dist != nil {
			n.Binary = c.dist.Binary
		}
	}
	for _, l := range c.via {
		n.Via = append(n.Via, l.String())
	}
	for _, k := range c.local.Keys() {
		n.Local = append(n.Local, KV{Key: k, Value: c.local.Get(k)})
	}
	return n
}

// node describes c alone, without children, with its local conf as a
// factory gets it (Session.shown).
func (s *Session) node(c *ctx) *Node {
	n := c.node()
	n.conf = s.shown(c.local)
	return n
}

// skeleton describes c and its parts, without creating anything (so without
// the children a composite would load).
func (s *Session) skeleton(c *ctx) *Node {
	n := s.node(c)
	for _, d := range c.parts() {
		n.Children = append(n.Children, s.skeleton(d))
	}
	return n
}

// label names c in coroutine names: its section, or its entry point.
func (c *ctx) label() string {
	if c.loc.Section != "" {
		return c.loc.Section
	}
	return c.ref.String()
}

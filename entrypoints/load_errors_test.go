package entrypoints

import (
	"errors"
	"fmt"
	"io/fs"
	"testing"
)

// TestLoadErrors covers spec §3 and §6.2: every error matches its sentinel
// and names file:line, section and key, the references followed, and what
// exists instead.
func TestLoadErrors(t *testing.T) {
	t.Parallel()
	dir := testdata(t)
	// at returns "FILE:LINE HEADER" for the first line starting with prefix
	// after header ("" prefix: the header's own line).
	at := func(file, header, prefix string) string {
		return fmt.Sprintf("%s:%d %s", file, lineOf(t, file, header, prefix), header)
	}
	cases := []struct {
		name string
		kind Kind
		uri  string
		base string // "" means testdata
		is   []error
		want []string
	}{
		// URIs (spec §1.4).
		{"no_scheme", KindApp, "basic.ini", "", []error{ErrBadURI}, []string{"URI has no scheme", `"basic.ini"`}},
		{"unknown_scheme", KindApp, "config:errors.ini#zip", "", []error{ErrBadURI},
			[]string{at("errors.ini", "[app:zip]", "use") + " use=zip:foo", "URI scheme not known"}},
		{"call refused", KindApp, "config:errors.ini#call", "", []error{ErrBadURI}, []string{"[app:call] use=call:", "use egg:DIST#NAME"}},
		{"relative_without_base", KindApp, "config:basic.ini", "-", []error{ErrBadURI}, []string{"no base directory"}},
		{"missing_file top-level", KindApp, "config:nosuch.ini", "", []error{fs.ErrNotExist}, []string{"nosuch.ini"}},
		{"missing_file referenced", KindApp, "config:errors.ini#nofile", "", []error{fs.ErrNotExist},
			[]string{at("errors.ini", "[app:nofile]", "use") + " use=config:nosuch.ini", "no such file"}},
		{"not a regular file", KindApp, "config:sub", "", nil, []string{"not a regular file"}},
		{"# comment on a config: line", KindApp, "config:errors.ini#hash", "", []error{ErrNoSection},
			[]string{at("errors.ini", "[app:hash]", "use"), `"the base app"`, "no inline comments"}},
		// Parsing (spec §1.1).
		{"syntax: no delimiter, every bad line", KindApp, "config:bad_syntax.ini", "", []error{ErrSyntax},
			[]string{"bad_syntax.ini:3", "this line has no delimiter", "also lines 5"}},
		{"syntax: no section header", KindApp, "config:bad_noheader.ini", "", []error{ErrSyntax}, []string{"bad_noheader.ini:2", "no section headers"}},
		{"duplicate section", KindApp, "config:bad_dupsection.ini", "", []error{ErrDuplicate},
			[]string{"bad_dupsection.ini:7 [app:main]", "first at line 1"}},
		{"duplicate key", KindApp, "config:bad_dupkey.ini", "", []error{ErrDuplicate},
			[]string{"bad_dupkey.ini:8 [app:main] key", "at line 6"}},
		{"duplicate key across [DEFAULT] headers", KindApp, "config:bad_defaultkey.ini", "", []error{ErrDuplicate},
			[]string{"bad_defaultkey.ini:8 [DEFAULT] a", "at line 2"}},
		{"parse error in a referenced file shows the chain", KindApp, "config:errors.ini#refbad", "", []error{ErrDuplicate},
			[]string{at("errors.ini", "[app:refbad]", "use") + " use=config:bad_dupkey.ini → bad_dupkey.ini:8 [app:main] key: key \"key\" already set"}},
		// Interpolation (spec §1.1).
		{"interpolation_missing", KindApp, "config:interp.ini#missing", "", []error{ErrInterpolation},
			[]string{at("interp.ini", "[app:missing]", "url") + " url", "%(prot)s", `did you mean "proto"?`}},
		{"interpolation_syntax", KindApp, "config:interp.ini#lone", "", []error{ErrInterpolation},
			[]string{at("interp.ini", "[app:lone]", "fmt") + " fmt", "'%' must be followed by '%' or '('", `"% off"`}},
		{"interpolation bad reference", KindApp, "config:interp.ini#badref", "", []error{ErrInterpolation},
			[]string{at("interp.ini", "[app:badref]", "fmt") + " fmt", "bad interpolation variable reference"}},
		{"interpolation depth", KindApp, "config:interp.ini#deep_bad", "", []error{ErrInterpolation},
			[]string{at("interp.ini", "[app:deep_bad]", "v0") + " v0", "recursion limit"}},
		{"interpolation grows too long", KindApp, "config:interp.ini#wide", "", []error{ErrInterpolation},
			[]string{at("interp.ini", "[app:wide]", "w0") + " w0", "longer than 1048576 bytes"}},
		{"interpolation loop", KindApp, "config:interp.ini#loop", "", []error{ErrInterpolation}, []string{"[app:loop] x", "recursion limit"}},
		{"broken [DEFAULT] fails every load", KindApp, "config:bad_default.ini", "", []error{ErrInterpolation},
			[]string{"bad_default.ini:3 [DEFAULT] broken"}},
		// Sections (spec §1.2).
		{"no_section with suggestion", KindApp, "config:prefixes.ini#mian", "", []error{ErrNoSection},
			[]string{`no application section "mian"`, "prefixes.ini", "[app:main]", `did you mean "main"?`}},
		{"no_section in an empty file", KindApp, "config:empty.ini", "", []error{ErrNoSection}, []string{"it has none"}},
		{"prefixes are case-sensitive", KindApp, "config:prefixes.ini#upper", "", []error{ErrNoSection},
			[]string{"[App:upper] does not count: prefixes are case-sensitive"}},
		{"a filter section is not an application", KindApp, "config:prefixes.ini#onlyfilter", "", []error{ErrNoSection},
			[]string{"[filter:onlyfilter] is not a section of kind application"}},
		{"a filter-app section is not a filter", KindFilter, "config:prefixes.ini#fa", "", []error{ErrNoSection},
			[]string{"(prefixed by filter)", "[filter-app:fa] is not a section of kind filter"}},
		{"bare [app] is not main for a top-level load", KindApp, "config:bare.ini", "", []error{ErrNoSection}, []string{`"main"`}},
		{"ambiguous_section", KindApp, "config:prefixes.ini#amb", "", []error{ErrAmbiguousSection},
			[]string{`"amb" is ambiguous`, "[app:amb] (line", "[composite:amb] (line"}},
		{"ambiguous default name: [app] and [app:main]", KindApp, "config:prefixes.ini#bare", "", []error{ErrAmbiguousSection},
			[]string{"[app] (line", "[app:main] (line"}},
		{"use names a misspelt section", KindApp, "config:errors.ini#misspelt", "", []error{ErrNoSection},
			[]string{at("errors.ini", "[app:misspelt]", "use") + " use=bsae", `did you mean "base"?`}},
		{"use finds only sections of the same kind", KindApp, "config:uses.ini#notfilter", "", []error{ErrNoSection},
			[]string{at("uses.ini", "[app:notfilter]", "use") + " use=f", "[filter:f] is not a section of kind application"}},
		// Loaders and protocols (spec §1.4, §1.6).
		{"no_loader", KindApp, "config:errors.ini#noloader", "", []error{ErrNoLoader},
			[]string{at("errors.ini", "[app:noloader]", ""), "no loader given in [app:noloader]"}},
		{"explicit protocol key", KindApp, "config:errors.ini#proto", "", []error{ErrProtocolKey},
			[]string{at("errors.ini", "[app:proto]", "paste") + " paste.app_factory", "use = egg:DIST#NAME"}},
		{"multiple_protocols", KindApp, "config:errors.ini#protos", "", []error{ErrProtocolKey},
			[]string{"paste.app_factory, paste.composite_factory"}},
		{"missing_distribution", KindApp, "config:errors.ini#nodist", "", []error{ErrNoDist},
			[]string{at("errors.ini", "[app:nodist]", "use") + " use=egg:Blgo#main", `dist "Blgo" not found`, `did you mean "Blog"?`}},
		{"missing_distribution in require", KindApp, "config:errors.ini#require_missing", "", []error{ErrNoDist},
			[]string{at("errors.ini", "[app:require_missing]", "require") + " require", `"nosuchdist"`}},
		{"no_entry_point", KindApp, "config:errors.ini#noentry", "", []error{ErrNoEntryPoint},
			[]string{at("errors.ini", "[app:noentry]", "use") + " use=egg:Blog#mian", "(has: admin, main)", `did you mean "main"?`}},
		{"ambiguous_entry_point", KindApp, "config:errors.ini#ambentry", "", []error{ErrAmbiguousEntryPoint}, []string{"[app:ambentry] use=egg:t#both"}},
		{"plugin: without a resolver", KindApp, "config:errors.ini#plugin", "", []error{ErrNoResolver}, []string{"[app:plugin] use=plugin:bin/blog#main"}},
		{"startup names a missing coroutine", KindServer, "config:errors.ini", "", []error{ErrNoSection},
			[]string{at("errors.ini", "[server:main]", "startup") + " startup=tikcer", `did you mean "ticker"?`}},
		// Set/get, pipelines, filter-apps (spec §1.5, §1.8, §1.9).
		{"get_missing_global", KindApp, "config:setget.ini#missing", "", []error{ErrNoGlobal},
			[]string{at("setget.ini", "[app:missing]", "get") + " get x", `no global "prot"`, `did you mean "port"?`}},
		{"pipeline_missing_pipeline", KindApp, "config:pipeline.ini#nokey", "", []error{ErrMissingKey},
			[]string{at("pipeline.ini", "[pipeline:nokey]", ""), "no pipeline key"}},
		{"pipeline_extra_settings", KindApp, "config:pipeline.ini#extra", "", []error{ErrBadPipeline},
			[]string{at("pipeline.ini", "[pipeline:extra]", "use") + " use", "it has use, other"}},
		{"pipeline_empty", KindApp, "config:pipeline.ini#empty", "", []error{ErrBadPipeline},
			[]string{at("pipeline.ini", "[pipeline:empty]", "pipeline") + " pipeline", "pipeline is empty"}},
		{"pipeline item missing", KindApp, "config:pipeline.ini#badfilter", "", []error{ErrNoSection},
			[]string{"[pipeline:badfilter] pipeline=nosuch", "no filter section"}},
		{"filter_app_missing_next", KindApp, "config:filterapp.ini#nonext", "", []error{ErrMissingKey},
			[]string{at("filterapp.ini", "[filter-app:nonext]", ""), "no next key"}},
		// Cycles (spec §6.2 item 2).
		{"cycle through use", KindApp, "config:cycles.ini#a", "", []error{ErrCycle},
			[]string{"reference cycle: [app:a] use=b → [app:b] use=a → [app:a]"}},
		{"cycle through next", KindApp, "config:cycles.ini#n1", "", []error{ErrCycle},
			[]string{"[filter-app:n1] next=n2 → [filter-app:n2] next=n1 → [filter-app:n1]"}},
		{"cycle through filter-with", KindApp, "config:cycles.ini#fw", "", []error{ErrCycle},
			[]string{"[filter:fwf] filter-with=fwf → [filter:fwf]"}},
		{"cycle through a pipeline", KindApp, "config:cycles.ini#p", "", []error{ErrCycle}, []string{"[pipeline:p] pipeline=p → [pipeline:p]"}},
		{"cycle through a composite", KindApp, "config:cycles.ini#c", "", []error{ErrCycle},
			[]string{at("cycles.ini", "[composite:c]", "/") + " /=c", "[composite:c] /=c → [composite:c]"}},
		{"cycle through config:", KindApp, "config:cycles.ini#self", "", []error{ErrCycle},
			[]string{"[app:self] use=config:cycles.ini#self → [app:self]"}},
		{"cycle through startup coroutines", KindServer, "config:cycles.ini", "", []error{ErrCycle},
			[]string{at("cycles.ini", "[server:main]", "startup") + " startup=co → ", "reference cycle: [coroutine:co] use=co → [coroutine:co]"}},
		// Factories.
		{"factory error", KindApp, "config:errors.ini#fails", "", []error{ErrFactory},
			[]string{at("errors.ini", "[app:fails]", "use") + " use=egg:t#fail", "application factory egg:t#fail failed: boom"}},
		{"factory panic", KindApp, "config:errors.ini#panics", "", []error{ErrFactory}, []string{"panic: kaboom"}},
		{"factory returns nothing", KindApp, "config:errors.ini#nil", "", []error{ErrFactory}, []string{"returned nil"}},
		{"factory reports a bad value with its key", KindApp, "config:errors.ini#badport", "", []error{ErrFactory},
			[]string{at("errors.ini", "[app:badport]", "port") + " port: bad integer value"}},
		{"a composite's child fails: the whole chain", KindApp, "config:errors.ini#childfails", "", []error{ErrFactory},
			[]string{"[app:childfails] use=egg:t#map → " + at("errors.ini", "[app:childfails]", "/") + " /=fails → " +
				at("errors.ini", "[app:fails]", "use") + " use=egg:t#fail: application factory egg:t#fail failed: boom"}},
		{"a composite's child is misspelt", KindApp, "config:composite.ini#missingchild", "", []error{ErrNoSection},
			[]string{at("composite.ini", "[composite:missingchild]", "/") + " /=hoem", `did you mean "home"?`}},
		{"filter-app factory fails when applied", KindApp, "config:filterapp.ini#failing", "", []error{ErrFactory},
			[]string{at("filterapp.ini", "[filter-app:failing]", "use") + " use=egg:t#failwrap", "cannot wrap"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, _, _ := newSession()
			base := dir
			if tc.base == "-" {
				base = ""
			}
			var err error
			switch tc.kind {
			case KindApp:
				_, err = s.LoadApp(tc.uri, base, nil)
			case KindFilter:
				_, err = s.LoadFilter(tc.uri, base, nil)
			case KindServer:
				_, err = s.LoadServer(tc.uri, base, nil)
			}
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			for _, want := range tc.is {
				if !errors.Is(err, want) {
					t.Errorf("error %q is not %v", msg, want)
				}
			}
			wantContains(t, "error", msg, tc.want...)
			wantNotContains(t, "error", msg, dir+"/errors.ini") // names are relative to base
			if len(s.Root) != 0 || len(s.Coroutines) != 0 {
				t.Errorf("failed load left %d roots, %d coroutines", len(s.Root), len(s.Coroutines))
			}
		})
	}
}

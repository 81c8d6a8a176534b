package pastercmd

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/paster-dev/paster/entrypoints"
	"github.com/paster-dev/paster/runner/builtin"
	"github.com/paster-dev/paster/runner/natscore"
)

// readmeINIExceptions are the README's INI lines that cannot be checked
// here, keyed by the line's text, with the reason. A section whose check
// fails at such a line is reported as excepted instead of failing; an
// exception that matches no README line fails the test, so the table
// cannot outlive the README text it excuses.
var readmeINIExceptions = map[string]string{
	"url = nats://nats1:4222,nats://nats2:4222": "the example's NATS servers nats1 and nats2 exist only on the reader's network; egg:paster#nats connects when it is loaded",
}

// readmeHarness follows each README INI block in the file paster check
// reads: a server and an app to load the block's sections with. Their
// lines come after the block's, so that the file's line N is the block's
// line N.
const readmeHarness = `

[server:readme-check]
use = egg:paster#http
port = 0

[app:readme-check]
use = egg:paster#static
document_root = %(here)s
`

// iniBlock is an ```ini block of README.md: its text and the README line
// of its first line.
type iniBlock struct {
	line int
	text string
}

// readmeINIBlocks returns README's ```ini blocks.
func readmeINIBlocks(readme string) []iniBlock {
	var out []iniBlock
	var cur *iniBlock
	indent := ""
	for i, line := range strings.Split(readme, "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case cur == nil && trimmed == "```ini":
			cur = &iniBlock{line: i + 2}
			indent = line[:len(line)-len(strings.TrimLeft(line, " \t"))]
		case cur != nil && trimmed == "```":
			out = append(out, *cur)
			cur = nil
		case cur != nil:
			cur.text += strings.TrimPrefix(line, indent) + "\n"
		}
	}
	return out
}

// iniSectionHeader matches a section header line of an INI block.
var iniSectionHeader = regexp.MustCompile(`^\[([^\]]+)\]\s*$`)

// iniSection is a section of a README INI block.
type iniSection struct {
	header string // "filter:rid"
	kind   string // "filter"
	name   string // "rid"
	line   int    // the README line of its header
}

// TestREADMEINIBlocks checks every ```ini block of README.md with paster
// check, the real binary: each section of a block is loaded through the
// loader and its factory (an app, composite, pipeline or filter-app as the
// app; a filter in a pipeline before an app; a server as the server; a core
// and a coroutine from a server that names them) beside a harness server
// and app. A section fails when check exits non-zero or logs anything (an
// unknown key's "did you mean" warning, a shadowed key), and the failure
// names the README line. A section that refers to one the block does not
// show (a fragment) is reported as not loadable standalone, its other
// sections still checked one by one; one that fails at a line of
// readmeINIExceptions is reported with the exception's reason.
func TestREADMEINIBlocks(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(readme), "\n")
	blocks := readmeINIBlocks(string(readme))
	if len(blocks) == 0 {
		t.Fatal("README.md shows no ```ini block")
	}
	excepted := make(chan string, 100)
	t.Run("blocks", func(t *testing.T) {
		for _, b := range blocks {
			t.Run(fmt.Sprintf("line%d", b.line), func(t *testing.T) {
				t.Parallel()
				checkINIBlock(t, b, lines, excepted)
			})
		}
	})
	close(excepted)
	used := map[string]bool{}
	for l := range excepted {
		used[l] = true
	}
	for l, why := range readmeINIExceptions {
		if !used[l] {
			t.Errorf("readmeINIExceptions has %q (%s), which no README INI block fails at: remove it", l, why)
		}
	}
}

// checkINIBlock checks the sections of block b (see TestREADMEINIBlocks),
// sending the README lines of the exceptions it applied to excepted.
func checkINIBlock(t *testing.T, b iniBlock, readme []string, excepted chan<- string) {
	var sections []iniSection
	for i, line := range strings.Split(b.text, "\n") {
		if m := iniSectionHeader.FindStringSubmatch(line); m != nil {
			kind, name, _ := strings.Cut(m[1], ":")
			sections = append(sections, iniSection{header: m[1], kind: strings.TrimSpace(kind), name: strings.TrimSpace(name), line: b.line + i})
		}
	}
	shown := map[string]bool{}
	for _, s := range sections {
		shown[s.name] = true
	}
	// One harness section per section that needs one, so that all of
	// them load from the same file.
	harness := readmeHarness
	type run struct {
		sec         iniSection
		server, app string
	}
	var runs []run
	for _, s := range sections {
		r := run{sec: s, server: "readme-check", app: "readme-check"}
		switch s.kind {
		case "DEFAULT", "plugins":
			continue // read with every section of the block
		case "app", "application", "composite", "composit", "pipeline", "filter-app":
			r.app = s.name
		case "filter":
			r.app = "readme-check-filter-" + s.name
			harness += fmt.Sprintf("\n[pipeline:%s]\npipeline = %s readme-check\n", r.app, s.name)
		case "server":
			r.server = s.name
		case "core":
			r.server = "readme-check-core-" + s.name
			harness += fmt.Sprintf("\n[server:%s]\nuse = egg:paster#http\nport = 0\ncore = %s\n", r.server, s.name)
		case "coroutine":
			r.server = "readme-check-coroutine-" + s.name
			harness += fmt.Sprintf("\n[server:%s]\nuse = egg:paster#http\nport = 0\nstartup = %s\n", r.server, s.name)
		default:
			t.Errorf("README line %d: [%s]: teach TestREADMEINIBlocks to check a %q section", s.line, s.header, s.kind)
			continue
		}
		runs = append(runs, r)
	}
	dir := t.TempDir()
	blockLines := strings.Count(b.text, "\n")
	if err := os.WriteFile(filepath.Join(dir, "readme.ini"), []byte(b.text+harness), 0o644); err != nil {
		t.Fatal(err)
	}
	// readmeLines rewrites the file's locations as README ones.
	fileLine := regexp.MustCompile(`readme\.ini:(\d+)`)
	readmeLines := func(s string) string {
		return fileLine.ReplaceAllStringFunc(s, func(m string) string {
			n, _ := strconv.Atoi(strings.TrimPrefix(m, "readme.ini:"))
			if n > blockLines {
				return fmt.Sprintf("(test harness line %d)", n-blockLines)
			}
			return fmt.Sprintf("README.md:%d", b.line+n-1)
		})
	}
	missing := regexp.MustCompile(`no [\w -]*section "([^"]+)"`)
	for _, r := range runs {
		stdout, stderr, exit := paster(t, dir, "check", "readme.ini", "--server-name", r.server, "--app-name", r.app)
		where := fmt.Sprintf("README line %d [%s]", r.sec.line, r.sec.header)
		if exit == 0 {
			if strings.TrimSpace(stderr) != "" {
				t.Errorf("%s: paster check warns:\n%s", where, readmeLines(stderr))
			} else {
				t.Logf("%s: checked", where)
			}
			continue
		}
		if m := missing.FindStringSubmatch(stderr); m != nil && !shown[m[1]] {
			t.Logf("%s: not loadable standalone: it refers to %q, which the block does not show (%s)", where, m[1], strings.TrimSpace(readmeLines(stderr)))
			continue
		}
		// The last location of the error is the line at fault.
		locs := fileLine.FindAllStringSubmatch(stderr, -1)
		if len(locs) > 0 {
			n, _ := strconv.Atoi(locs[len(locs)-1][1])
			if n <= blockLines {
				text := strings.TrimSpace(readme[b.line+n-2])
				if why, ok := readmeINIExceptions[text]; ok {
					t.Logf("%s: not checked: README line %d %q: %s", where, b.line+n-1, text, why)
					excepted <- text
					continue
				}
			}
		}
		t.Errorf("%s: paster check exits %d:\n%s%s", where, exit, readmeLines(stderr), stdout)
	}
}

// TestShippedINIsCheck runs paster check on the configuration files the
// repository ships, every server section of each: development.ini,
// cluster.ini (node b, which connects to node a's NATS, against a copy
// whose nats_port is a NATS server of the test's) and any *.ini under
// examples/. Each must exit 0 and log nothing: no warning.
func TestShippedINIsCheck(t *testing.T) {
	t.Parallel()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	nats, err := natscore.New(natscore.Options{Embedded: &natscore.Embedded{Listen: "127.0.0.1:0", StoreDir: t.TempDir()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nats.Close() })
	_, natsPort, _ := strings.Cut(strings.TrimPrefix(nats.ClientURL(), "nats://"), ":")
	cluster, err := os.ReadFile("../cluster.ini")
	if err != nil {
		t.Fatal(err)
	}
	const natsLine = "\nnats_port = 4222\n"
	if !strings.Contains(string(cluster), natsLine) {
		t.Fatalf("cluster.ini has no line %q", strings.TrimSpace(natsLine))
	}
	clusterB := filepath.Join(t.TempDir(), "cluster.ini")
	if err := os.WriteFile(clusterB, []byte(strings.Replace(string(cluster), natsLine, "\nnats_port = "+natsPort+"\n", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	type checkRun struct {
		file string
		args []string
	}
	runs := []checkRun{
		{"development.ini", []string{"--server-name", "main"}},
		{"development.ini", []string{"--server-name", "plain"}},
		{"cluster.ini", []string{"--server-name", "a"}},
		{clusterB, []string{"--server-name", "b"}},
	}
	examples, err := filepath.Glob("../examples/*/*.ini")
	if err != nil {
		t.Fatal(err)
	}
	more, _ := filepath.Glob("../examples/*.ini")
	// exampleVars are the variables an example is served with (its
	// comment says so); the others are checked without any.
	exampleVars := map[string][]string{
		// paster.service gives www, the directory of the site's files.
		"examples/systemd/site.ini": {"www=" + t.TempDir()},
	}
	for _, f := range append(examples, more...) {
		f = strings.TrimPrefix(f, "../")
		runs = append(runs, checkRun{file: f, args: exampleVars[f]})
	}
	for _, r := range runs {
		t.Run(strings.Join(append([]string{r.file}, r.args...), " "), func(t *testing.T) {
			t.Parallel()
			stdout, stderr, exit := paster(t, root, append([]string{"check", r.file}, r.args...)...)
			if exit != 0 || stderr != "" || !strings.HasSuffix(stdout, "ok\n") {
				t.Errorf("paster check %s %v: exit %d\nstderr:\n%s\nstdout:\n%s", r.file, r.args, exit, stderr, stdout)
			}
		})
	}
}

// TestCheckWarnsUnknownKeys: a misspelt key of a built-in app, filter or
// filter-app makes paster check log a warning naming the file, line,
// section and key and the key it may be a misspelling of (the http
// runner's and the cores' unknown keys fail check:
// TestCheckServerSettings).
func TestCheckWarnsUnknownKeys(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, section, use, key, want string
	}{
		{"static", "app:main", "egg:paster#static", "document_root = %(here)s\nserve_hiden = true", "serve_hidden"},
		{"request_id filter", "filter:f", "egg:paster#request_id", "heder = X-Id", "header"},
		{"gzip filter-app", "filter:f", "egg:paster#gzip", "compress_levl = 5", "compress_level"},
		{"translogger filter-app", "filter:f", "egg:paster#translogger", "fromat = json", "format"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			server := "[server:main]\nuse = egg:paster#http\nport = 0\n"
			app := "[app:main]\nuse = egg:paster#static\ndocument_root = %(here)s\n"
			switch {
			case strings.HasPrefix(tc.section, "filter:"):
				app += "filter-with = f\n"
			case tc.section == "app:main":
				app = ""
			}
			ini := fmt.Sprintf("[%s]\nuse = %s\n%s\n\n%s\n%s", tc.section, tc.use, tc.key, server, app)
			if err := os.WriteFile(filepath.Join(dir, "a.ini"), []byte(ini), 0o644); err != nil {
				t.Fatal(err)
			}
			line := strings.Count(tc.key, "\n") + 3
			misspelt, _, _ := strings.Cut(strings.Split(tc.key, "\n")[strings.Count(tc.key, "\n")], " =")
			stdout, stderr, exit := paster(t, dir, "check", "a.ini")
			if exit != 0 {
				t.Fatalf("exit %d\nstderr:\n%s\nstdout:\n%s", exit, stderr, stdout)
			}
			for _, want := range []string{
				"unknown key ignored", "key=" + misspelt,
				fmt.Sprintf(`at="a.ini:%d [%s]"`, line, tc.section), "did_you_mean=" + tc.want,
			} {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, stderr)
				}
			}
		})
	}
}

// readmeScope is a part of README.md that documents keys of built-in entry
// points: a row of the built-in entry points table or of the Security
// table, a row of a key table (header "key" or "key (default)") of the
// entry point the paragraph before it names (else of the key table before
// it under the same heading), or a list of keys after a paragraph naming
// egg:paster#NAME; a paragraph that names egg:paster#NAME mentions keys
// too.
type readmeScope struct {
	line    int
	entries []string // the entry points of the dist paster it is about
	// keys are the keys the README attributes to the entries: the
	// backticked names outside parentheses of a key cell or list item.
	keys []string
	// mentions are the keys it names at all: the first word of every
	// backticked text ("catch" of `catch = 404 …`).
	mentions []string
}

var (
	backticked   = regexp.MustCompile("`([^`]+)`")
	keyName      = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	eggPaster    = regexp.MustCompile("`egg:paster#([a-z_]+)`")
	parenthesis  = regexp.MustCompile(`\([^()]*\)`)
	tableDivider = regexp.MustCompile(`^\|[-| :]+\|$`)
)

// attributedKeys returns the key names of text: backticked lower-case
// names outside parentheses.
func attributedKeys(text string) []string {
	for {
		stripped := parenthesis.ReplaceAllString(text, "")
		if stripped == text {
			break
		}
		text = stripped
	}
	var out []string
	for _, m := range backticked.FindAllStringSubmatch(text, -1) {
		if keyName.MatchString(m[1]) {
			out = append(out, m[1])
		}
	}
	return out
}

// mentionedKeys returns the first word of every backticked text of text.
func mentionedKeys(text string) []string {
	var out []string
	for _, m := range backticked.FindAllStringSubmatch(text, -1) {
		if f := strings.FieldsFunc(m[1], func(r rune) bool { return r == ' ' || r == '=' }); len(f) > 0 {
			out = append(out, f[0])
		}
	}
	return out
}

// eggNames returns the NAMEs of the `egg:paster#NAME` of text, in order.
func eggNames(text string) []string {
	var out []string
	for _, m := range eggPaster.FindAllStringSubmatch(text, -1) {
		out = append(out, m[1])
	}
	return out
}

// readmeScopes returns the scopes of readme (see readmeScope). Blocks are
// separated by blank lines and headings; code blocks are skipped.
func readmeScopes(readme string) []readmeScope {
	type block struct {
		line    int
		lines   []string
		heading int // the line of the heading it is under
	}
	var blocks []block
	var cur *block
	fenced := false
	heading := 0
	for i, line := range strings.Split(readme, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "```") {
			fenced = !fenced
			cur = nil
			continue
		}
		if !fenced && strings.HasPrefix(trimmed, "#") {
			heading = i + 1
		}
		if fenced || trimmed == "" || strings.HasPrefix(trimmed, "#") {
			cur = nil
			continue
		}
		if cur == nil {
			blocks = append(blocks, block{line: i + 1, heading: heading})
			cur = &blocks[len(blocks)-1]
		}
		cur.lines = append(cur.lines, line)
	}
	var out []readmeScope
	// keyTableEntry is the entry point of the last key table under the
	// current heading: a key table whose paragraph names none continues
	// it ("ACME:" after the TLS keys of egg:paster#http).
	keyTableEntry := ""
	for bi, b := range blocks {
		first := strings.TrimSpace(b.lines[0])
		if bi > 0 && blocks[bi-1].heading != b.heading {
			keyTableEntry = ""
		}
		// intro is the paragraph right before b, if any.
		var intro []string
		if bi > 0 {
			p := blocks[bi-1]
			if p.line+len(p.lines) == b.line-1 && !strings.HasPrefix(p.lines[0], "|") && !strings.HasPrefix(p.lines[0], "- ") {
				intro = eggNames(strings.Join(p.lines, " "))
			}
		}
		switch {
		case strings.HasPrefix(first, "|"):
			header := tableCells(first)
			for j, row := range b.lines[1:] {
				row = strings.TrimSpace(row)
				if tableDivider.MatchString(row) {
					continue
				}
				cells := tableCells(row)
				if len(cells) != len(header) {
					continue
				}
				s := readmeScope{line: b.line + 1 + j}
				var keys string
				switch header[0] {
				case "name": // the built-in entry points: name | kind | keys
					s.entries = []string{strings.Trim(cells[0], "`")}
					keys = cells[2]
				case "where": // Security: where | key (default) | protects against
					s.entries = eggNames(cells[0])
					if cells[0] == "server section" {
						s.entries = []string{"http"}
					}
					keys = cells[1]
				case "key", "key (default)": // a key table: of the entry point its paragraph names
					if len(intro) > 0 {
						keyTableEntry = intro[0]
					}
					if keyTableEntry != "" {
						s.entries = []string{keyTableEntry}
					}
					keys = cells[0]
				}
				if len(s.entries) > 0 {
					s.keys, s.mentions = attributedKeys(keys), mentionedKeys(row)
					out = append(out, s)
				}
			}
		case strings.HasPrefix(first, "- "):
			if len(intro) == 0 {
				continue
			}
			// A list of keys after a paragraph naming its entry point:
			// one scope per item.
			var items []readmeScope
			for j, line := range b.lines {
				if strings.HasPrefix(line, "- ") {
					items = append(items, readmeScope{line: b.line + j, entries: intro[:1]})
				}
				if len(items) > 0 {
					it := &items[len(items)-1]
					it.keys = append(it.keys, attributedKeys(line)...)
					it.mentions = append(it.mentions, mentionedKeys(line)...)
				}
			}
			out = append(out, items...)
		default:
			text := strings.Join(b.lines, " ")
			if names := eggNames(text); len(names) > 0 {
				out = append(out, readmeScope{line: b.line, entries: names, mentions: mentionedKeys(text)})
			}
		}
	}
	return out
}

// tableCells returns the trimmed cells of a Markdown table row.
func tableCells(row string) []string {
	cells := strings.Split(strings.Trim(strings.TrimSpace(row), "|"), "|")
	for i := range cells {
		cells[i] = strings.TrimSpace(cells[i])
	}
	return cells
}

// serverSectionKeys are the keys the loader takes from every server
// section, whatever its runner (entrypoints' load.go).
var serverSectionKeys = []string{"startup", "core"}

// TestREADMEKeys holds README.md's reference to the code: every key the
// README attributes to a built-in entry point (the built-in entry points
// table, the key tables after a paragraph naming egg:paster#NAME, such as
// cors's and ratelimit's, the Security table, key lists such as nats's) is
// one that entry point reads (builtin.Keys: no unknown-key warning), and
// every key each built-in entry point reads is mentioned where the README
// speaks of that entry point, so that no key goes undocumented.
func TestREADMEKeys(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	scopes := readmeScopes(string(readme))
	mentioned := map[string]map[string]bool{}
	for _, s := range scopes {
		for _, e := range s.entries {
			if mentioned[e] == nil {
				mentioned[e] = map[string]bool{}
			}
			for _, k := range s.mentions {
				mentioned[e][k] = true
			}
		}
		for _, e := range s.entries {
			accepted, ok := builtin.Keys(e)
			if !ok {
				t.Errorf("README line %d documents keys of egg:paster#%s, which is not a built-in entry point", s.line, e)
				continue
			}
			for _, k := range s.keys {
				if !slices.Contains(accepted, k) && !(e == "http" && slices.Contains(serverSectionKeys, k)) {
					t.Errorf("README line %d: egg:paster#%s has no key %q (it reads %s)", s.line, e, k, strings.Join(accepted, ", "))
				}
			}
		}
	}
	for _, g := range entrypoints.Groups() {
		for _, name := range builtin.Dist.Names(g.Protocol) {
			keys, ok := builtin.Keys(name)
			if !ok {
				t.Errorf("builtin.Keys has no keys for egg:paster#%s (%s)", name, g.Label)
				continue
			}
			if mentioned[name] == nil && !strings.Contains(string(readme), "`egg:paster#"+name+"`") {
				t.Errorf("README.md does not document egg:paster#%s (%s)", name, g.Label)
			}
			for _, k := range keys {
				if !mentioned[name][k] {
					t.Errorf("README.md does not document key %q of egg:paster#%s (%s): add it to its row or key table", k, name, g.Label)
				}
			}
		}
	}
}

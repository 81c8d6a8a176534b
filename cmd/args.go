package pastercmd

import (
	"flag"
	"fmt"
	"regexp"
	"strings"
)

// parseInterleaved parses fs's options wherever they appear among the
// positional arguments, as PasteScript accepts
// "paster serve dev.ini --reload http_port=8080". A lone "--" ends options.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return positional, nil
		}
		if len(args) > 0 && len(rest) < len(args) && args[len(args)-len(rest)-1] == "--" {
			return append(positional, rest...), nil
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

// configArg is the CONFIG argument of serve and check, split into the URI the
// loader takes and the name in its fragment.
type configArg struct {
	URI  string // with "config:" prepended when the argument had no scheme, fragment removed
	Name string // the #fragment, "" when absent
}

var schemeOfTwoLetters = regexp.MustCompile(`^[A-Za-z]{2,}:`)

// parseConfigArg prepends "config:" unless arg already starts with a scheme of
// two or more letters, so "C:\x.ini" is not taken for a scheme, and splits off
// the #name fragment.
func parseConfigArg(arg string) configArg {
	uri := arg
	if !schemeOfTwoLetters.MatchString(arg) {
		uri = "config:" + arg
	}
	var name string
	if i := strings.LastIndexByte(uri, '#'); i >= 0 {
		uri, name = uri[:i], uri[i+1:]
	}
	return configArg{URI: uri, Name: name}
}

// pick returns the section name for app or server: the explicit option, else
// the config's fragment, else "main".
func (c configArg) pick(option string) string {
	switch {
	case option != "":
		return option
	case c.Name != "":
		return c.Name
	}
	return "main"
}

// target returns the URI that loads section name: a name that is itself a
// URI (PasteDeploy: letters and a colon) is used as it is.
func (c configArg) target(name string) string {
	if schemeOfTwoLetters.MatchString(name) {
		return name
	}
	return c.URI + "#" + name
}

// parseVars turns var=value arguments into the global conf handed to the
// loader. An argument without "=" is an error, as in PasteScript.
func parseVars(args []string) (map[string]string, error) {
	vars := map[string]string{}
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			return nil, fmt.Errorf("variable assignment %q invalid (no \"=\")", a)
		}
		vars[strings.TrimSpace(k)] = v
	}
	return vars, nil
}

// stringList is a flag that may be given several times.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

package entrypoints

import (
	"errors"
	"testing"
)

// TestUnknownPrefix (issue 9.7): a section whose prefix the loader does not
// know ([ap:hello]) is warned about when the file is read, and a lookup of
// its name that finds nothing says why; sections without a prefix (other
// tools' [loggers], paster's [plugins]) are no concern.
func TestUnknownPrefix(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, text, uri string
		is              error
		errWant         []string
		logWant         []string
		logNot          []string
	}{
		{"use names a section with a misspelt prefix", "[ap:hello]\nuse = egg:t#main\n[app:main]\nuse = hello\n", "config:p.ini",
			ErrNoSection, []string{`no application section "hello"`, `[ap:hello] has the name, but its prefix "ap" is not one the loader knows; did you mean [app:hello]?`},
			[]string{`p.ini:1 [ap:hello]: section not loadable: prefix "ap" is not one the loader knows`, `did you mean "app"?`}, nil},
		{"the top-level name", "[servr:main]\nuse = egg:t#srv\n", "config:p.ini",
			ErrNoSection, []string{`[servr:main] has the name`, "did you mean [server:main]?"}, []string{`[servr:main]: section not loadable`}, nil},
		{"a prefix far from every known one", "[thing:x]\na = 1\n[app:main]\nuse = egg:t#main\n", "config:p.ini",
			nil, nil, []string{`p.ini:1 [thing:x]: section not loadable: prefix "thing"`}, []string{"did you mean"}},
		{"sections without a prefix", "[plugins]\npath = bin\n[loggers]\nkeys = root\n[app:main]\nuse = egg:t#main\n", "config:p.ini",
			nil, nil, nil, []string{"section not loadable"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := writeINI(t, "p.ini", tc.text)
			s, _, logs := newSession()
			_, err := s.LoadApp(tc.uri, dir, nil)
			if !errors.Is(err, tc.is) || (tc.is == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tc.is)
			}
			if err != nil {
				wantContains(t, "error", err.Error(), tc.errWant...)
			}
			wantContains(t, "log", logs.String(), tc.logWant...)
			wantNotContains(t, "log", logs.String(), tc.logNot...)
		})
	}
}

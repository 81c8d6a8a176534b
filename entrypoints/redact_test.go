package entrypoints

import (
	"errors"
	"testing"
)

// TestIsSecret documents the rule: a key whose name contains secret, token,
// password, passwd or key, in any case.
func TestIsSecret(t *testing.T) {
	t.Parallel()
	for key, want := range map[string]bool{
		"secret_token": true, "API_KEY": true, "key_file": true, "Password": true, "db_passwd": true,
		"set session_secret": true, "monkey": true, "port": false, "user": false, "pass": false, "": false,
	} {
		if got := IsSecret(key); got != want {
			t.Errorf("IsSecret(%q) = %v, want %v", key, got, want)
		}
	}
	if got := Redact("secret_token", "s3cr3t"); got != Redacted {
		t.Errorf("Redact of a secret = %q", got)
	}
	if got := Redact("port", "8080"); got != "8080" {
		t.Errorf("Redact of port = %q", got)
	}
	if got := Redact("api_key", ""); got != "" {
		t.Errorf("Redact of an empty secret = %q", got)
	}
}

// TestRedaction (issue 8.10): the values of keys named like secrets appear
// in no error message and no log line of the loader (a secret_token value
// reached /health's last_error through a reload error), and other values
// still do.
func TestRedaction(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, text string
		is         error  // nil: the load succeeds
		want       string // in the error or the log
		secrets    []string
	}{
		{"bad % in a secret", "[app:main]\nuse = egg:t#main\nsecret_token = hunter2%zz\n",
			ErrInterpolation, "[app:main] secret_token: '%' must be followed", []string{"hunter2", "%zz"}},
		{"bad reference in a secret", "[app:main]\nuse = egg:t#main\nAPI_KEY = xyzzy-%(nope\n",
			ErrInterpolation, "bad interpolation variable reference", []string{"xyzzy", "nope"}},
		{"bad % in a secret another key names", "[app:main]\nuse = egg:t#main\nurl = db://u:%(db_password)s@h\ndb_password = pa55%word\n",
			ErrInterpolation, "[app:main] url: '%' must be followed", []string{"pa55", "%word"}},
		{"a secret in [DEFAULT]", "[DEFAULT]\nsecret = s3kr1t%\n[app:main]\nuse = egg:t#main\n",
			ErrInterpolation, "[DEFAULT] secret:", []string{"s3kr1t"}},
		{"a local secret hidden by a global", "[DEFAULT]\napi_key = from-default\n[app:main]\nuse = egg:t#main\napi_key = local-secret\n",
			nil, `local value "[redacted]" is ignored`, []string{"local-secret"}},
		{"a factory quoting its secrets", "[DEFAULT]\napi_key = global-secret\n[app:main]\nuse = egg:t#leak\nuser = bob\nPassword = pw-local\n",
			ErrFactory, "login as bob with password", []string{"pw-local", "global-secret"}},
		{"Local.Errorf about a secret", "[app:main]\nuse = egg:t#badtoken\ntoken_ttl = tok-9\n",
			ErrFactory, "token_ttl: bad integer value", []string{"tok-9"}},
		{"a secret in a set line", "[app:main]\nuse = egg:t#main\nset my_token = t0k%\n",
			ErrInterpolation, "set my_token:", []string{"t0k"}},
		{"other values are shown", "[app:main]\nuse = egg:t#badport\nport = eighty\n",
			ErrFactory, `bad integer value: "eighty"`, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := writeINI(t, "red.ini", tc.text)
			s, _, logs := newSession()
			_, err := s.LoadApp("config:red.ini", dir, nil)
			if !errors.Is(err, tc.is) || (tc.is == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tc.is)
			}
			out := logs.String()
			if err != nil {
				out += "\n" + err.Error()
			}
			wantContains(t, "error and log", out, tc.want)
			wantNotContains(t, "error and log", out, tc.secrets...)
		})
	}
}

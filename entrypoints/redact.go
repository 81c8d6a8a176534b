package entrypoints

import (
	"strconv"
	"strings"
)

// Redacted is what stands in error messages and log lines for the value of
// a key that IsSecret names.
const Redacted = "[redacted]"

// secretWords are the parts of a key's name that make its value a secret.
var secretWords = []string{"secret", "token", "password", "passwd", "key"}

// IsSecret reports whether the value of key is kept out of error messages
// and log lines: whether key, lower-cased, contains "secret", "token",
// "password", "passwd" or "key" anywhere. The rule is deliberately broad:
// key_file, api_key, monkey_count and "set db_password" (a set or get line
// is named as written) all count, since a value redacted by mistake costs a
// less helpful message and a value shown by mistake can cost a credential.
func IsSecret(key string) bool {
	k := strings.ToLower(key)
	for _, w := range secretWords {
		if strings.Contains(k, w) {
			return true
		}
	}
	return false
}

// Redact returns value as it may appear in an error message or log line
// about key: Redacted when IsSecret(key) and value is not empty, else value
// unchanged. Other packages use it to log configuration.
func Redact(key, value string) string {
	if value != "" && IsSecret(key) {
		return Redacted
	}
	return value
}

// scrub returns msg without the secret values: each value's quoted form
// ("value", as %q writes it) is replaced whatever its length, the bare
// value only from 4 bytes on, so that a secret of "1" does not garble every
// "1" of the message. Best effort for text the loader did not write (a
// factory's error): a secret it transformed (split, encoded) is not found.
func scrub(msg string, values []string) string {
	for _, v := range values {
		if v == "" {
			continue
		}
		msg = strings.ReplaceAll(msg, strconv.Quote(v), strconv.Quote(Redacted))
		if len(v) >= 4 {
			msg = strings.ReplaceAll(msg, v, Redacted)
		}
	}
	return msg
}

// secretValues returns the values of the keys of m and l that IsSecret
// names.
func secretValues(m map[string]string, l Local) []string {
	var out []string
	for k, v := range m {
		if IsSecret(k) {
			out = append(out, v)
		}
	}
	for k, v := range l.values {
		if IsSecret(k) {
			out = append(out, v)
		}
	}
	return out
}

// redactedError is err with secret values scrubbed from its message; it
// still wraps err for errors.Is and errors.As.
type redactedError struct {
	err error
	msg string
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// redactErr returns err with values scrubbed from its message, or err
// itself when none occurs in it.
func redactErr(err error, values []string) error {
	if err == nil || len(values) == 0 {
		return err
	}
	msg := err.Error()
	if s := scrub(msg, values); s != msg {
		return &redactedError{err: err, msg: s}
	}
	return err
}

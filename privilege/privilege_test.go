package privilege

import (
	"errors"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

func TestLookup(t *testing.T) {
	t.Parallel()
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skipf("no user nobody: %v", err)
	}
	uid, _ := strconv.ParseUint(nobody.Uid, 10, 32)
	gid, _ := strconv.ParseUint(nobody.Gid, 10, 32)
	tests := []struct {
		name, user, group string
		setUID            bool
		uid, gid          uint32
		err               string
	}{
		{name: "user", user: "nobody", setUID: true, uid: uint32(uid), gid: uint32(gid)},
		{name: "numeric user", user: nobody.Uid, setUID: true, uid: uint32(uid), gid: uint32(gid)},
		{name: "user and group", user: "nobody", group: "0", setUID: true, uid: uint32(uid), gid: 0},
		{name: "group only", group: nobody.Gid, gid: uint32(gid)},
		{name: "unknown user", user: "no-such-user-here", err: `no user "no-such-user-here"`},
		{name: "unknown group", user: "nobody", group: "no-such-group-here", err: `no group "no-such-group-here"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			u, err := Lookup(tt.user, tt.group)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if u.SetUID != tt.setUID || (tt.setUID && u.UID != tt.uid) || u.GID != tt.gid || !slices.Contains(u.Groups, u.GID) {
				t.Errorf("Lookup = %+v, want uid %d (set %v) gid %d with gid among the groups", u, tt.uid, tt.setUID, tt.gid)
			}
		})
	}
	if u, err := Lookup("", ""); u != nil || err != nil {
		t.Errorf("Lookup of nothing = %v, %v", u, err)
	}
}

// TestApply: root starts a child as the user; anyone else cannot
// (ErrNotRoot), unless the user is its own.
func TestApply(t *testing.T) {
	t.Parallel()
	u, err := Lookup("nobody", "")
	if err != nil {
		t.Skip(err)
	}
	var attr syscall.SysProcAttr
	err = u.Apply(&attr)
	switch {
	case os.Geteuid() == 0 && (err != nil || attr.Credential == nil || attr.Credential.Uid != u.UID):
		t.Errorf("as root: %v, credential %+v", err, attr.Credential)
	case os.Geteuid() != 0 && !u.Current() && !errors.Is(err, ErrNotRoot):
		t.Errorf("as uid %d: %v, want ErrNotRoot", os.Geteuid(), err)
	}
	self, _ := Lookup(strconv.Itoa(os.Getuid()), strconv.Itoa(os.Getgid()))
	attr = syscall.SysProcAttr{}
	if err := self.Apply(&attr); err != nil || attr.Credential != nil {
		t.Errorf("the process's own user: %v, credential %+v", err, attr.Credential)
	}
}

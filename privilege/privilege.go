// Package privilege looks up the user and group a process should run as
// (paster serve's --user and --group, as PasteScript named them, and
// [plugins] user and group) and gives up root for them: Drop changes the
// running process, Apply makes a child process start as them.
//
// paster serve binds its sockets first, as root (ports below 1024, unix
// sockets in root's directories), then drops; see package engine.
package privilege

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"slices"
	"strconv"
	"syscall"
)

// User is who a process runs as after the drop.
type User struct {
	// Name is how the user (or the group, when only a group was given)
	// was named, for messages.
	Name string
	// SetUID is false when only a group was given: the uid is kept.
	SetUID bool
	UID    uint32
	GID    uint32
	// Groups are the supplementary groups: the user's (its entries in the
	// group database), or only GID when no user was given.
	Groups []uint32
}

// Lookup returns the User for a user name (or numeric uid) and a group name
// (or numeric gid), either of which may be "". Without a group the user's
// primary group is taken; without a user only the group changes. Both ""
// is nil, nil. An unknown user or group is an error saying which.
func Lookup(userName, groupName string) (*User, error) {
	if userName == "" && groupName == "" {
		return nil, nil
	}
	u := &User{Name: userName}
	if userName != "" {
		pw, err := lookupUser(userName)
		if err != nil {
			return nil, err
		}
		uid, _ := strconv.ParseUint(pw.Uid, 10, 32)
		gid, _ := strconv.ParseUint(pw.Gid, 10, 32)
		u.SetUID, u.UID, u.GID = true, uint32(uid), uint32(gid)
		ids, err := pw.GroupIds()
		if err != nil {
			return nil, fmt.Errorf("user %q: its groups: %w", userName, err)
		}
		for _, id := range ids {
			if n, err := strconv.ParseUint(id, 10, 32); err == nil {
				u.Groups = append(u.Groups, uint32(n))
			}
		}
	}
	if groupName != "" {
		gid, err := lookupGroup(groupName)
		if err != nil {
			return nil, err
		}
		u.GID = gid
		if u.Name == "" {
			u.Name = ":" + groupName
		} else {
			u.Name += ":" + groupName
		}
	}
	if !slices.Contains(u.Groups, u.GID) {
		u.Groups = append(u.Groups, u.GID)
	}
	return u, nil
}

func lookupUser(name string) (*user.User, error) {
	u, err := user.Lookup(name)
	if err == nil {
		return u, nil
	}
	if _, nerr := strconv.ParseUint(name, 10, 32); nerr == nil {
		if u, err := user.LookupId(name); err == nil {
			return u, nil
		}
		// A numeric uid without a passwd entry: its own group.
		return &user.User{Uid: name, Gid: name, Username: name}, nil
	}
	return nil, fmt.Errorf("no user %q on this system (see /etc/passwd, getent passwd)", name)
}

func lookupGroup(name string) (uint32, error) {
	if g, err := user.LookupGroup(name); err == nil {
		n, _ := strconv.ParseUint(g.Gid, 10, 32)
		return uint32(n), nil
	}
	if n, err := strconv.ParseUint(name, 10, 32); err == nil {
		return uint32(n), nil
	}
	return 0, fmt.Errorf("no group %q on this system (see /etc/group, getent group)", name)
}

// ErrNotRoot is wrapped by the error of a change of user that only root
// may make.
var ErrNotRoot = errors.New("only root can change to another user")

// Current reports whether the process runs as u already (its uid, when u
// sets one, and its gid).
func (u *User) Current() bool {
	return (!u.SetUID || uint32(os.Geteuid()) == u.UID && uint32(os.Getuid()) == u.UID) &&
		uint32(os.Getegid()) == u.GID && uint32(os.Getgid()) == u.GID
}

// Drop makes the whole process (every thread: syscall.Setuid and friends
// apply to all of them on Linux since Go 1.16) run as u: supplementary
// groups, then gid, then uid, in that order since each needs root. It then
// checks that root cannot be taken back. A process that is not root and
// not u already gets an error wrapping ErrNotRoot; one that is u already
// nothing.
func (u *User) Drop() error {
	if u.Current() {
		return nil
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("running as uid %d: %w (%s)", os.Geteuid(), ErrNotRoot, u.Name)
	}
	groups := make([]int, len(u.Groups))
	for i, g := range u.Groups {
		groups[i] = int(g)
	}
	if err := syscall.Setgroups(groups); err != nil {
		return fmt.Errorf("setgroups %v: %w", groups, err)
	}
	if err := syscall.Setgid(int(u.GID)); err != nil {
		return fmt.Errorf("setgid %d: %w", u.GID, err)
	}
	if !u.SetUID {
		return nil
	}
	if err := syscall.Setuid(int(u.UID)); err != nil {
		return fmt.Errorf("setuid %d: %w", u.UID, err)
	}
	if u.UID != 0 && syscall.Setuid(0) == nil {
		return fmt.Errorf("setuid %d: root could be taken back", u.UID)
	}
	return nil
}

// Apply makes the child process of attr start as u. A process running as
// u already needs nothing; only root may start one as another user
// (ErrNotRoot otherwise). attr must not be nil.
func (u *User) Apply(attr *syscall.SysProcAttr) error {
	if u.Current() {
		return nil
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("running as uid %d: %w (%s)", os.Geteuid(), ErrNotRoot, u.Name)
	}
	uid := uint32(os.Getuid())
	if u.SetUID {
		uid = u.UID
	}
	attr.Credential = &syscall.Credential{Uid: uid, Gid: u.GID, Groups: u.Groups}
	return nil
}

//go:build linux

package plugins

import (
	"context"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/paster-dev/paster/entrypoints"
	"golang.org/x/sys/unix"
)

// copyBinary copies the test plugin src to dst with mode perm.
func copyBinary(t *testing.T, src, dst string, perm os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dst, perm); err != nil { // past the umask
		t.Fatal(err)
	}
}

// TestPinSwapRace swaps a pinned binary and an unpinned one back and forth
// (an atomic exchange of the two names, so the path always exists) while
// the host starts the pinned path again and again: every start either
// refuses the binary with ErrChecksum or runs the pinned one, never the
// other. Hashing one file and executing another by the same path ran the
// unpinned binary within a few starts.
func TestPinSwapRace(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	pinned := filepath.Join(dir, BinaryPrefix+"hello")
	other := filepath.Join(dir, "other")
	copyBinary(t, bin("hello"), pinned, 0o755)
	copyBinary(t, bin("ptest"), other, 0o755)
	sum, err := FileSum(pinned)
	if err != nil {
		t.Fatal(err)
	}
	from := entrypoints.Origin{Plugins: map[string]string{"sha256." + filepath.Base(pinned): hex.EncodeToString(sum)}}

	stop := make(chan struct{})
	swapped := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				swapped <- nil
				return
			default:
			}
			if err := unix.Renameat2(unix.AT_FDCWD, pinned, unix.AT_FDCWD, other, unix.RENAME_EXCHANGE); err != nil {
				swapped <- err
				return
			}
			time.Sleep(100 * time.Microsecond) // pace the swapper, not a synchronisation
		}
	}()
	defer func() {
		close(stop)
		if err := <-swapped; err != nil {
			t.Errorf("swapping: %v", err)
		}
	}()

	// Many starts, bounded in time so that the test stays quick on a
	// loaded machine; it fails on the first unpinned start.
	deadline := time.Now().Add(10 * time.Second)
	starts, served := 0, 0
	for ; starts < 500 && time.Now().Before(deadline); starts++ {
		h := NewHost(HostOptions{Logger: hclog.NewNullLogger(), StartTimeout: 20 * time.Second})
		d, err := h.Binary(pinned, from)
		switch {
		case err == nil:
			served++
			if d.Name != "hello" {
				t.Errorf("start %d: the unpinned binary runs (it serves dist %s)", starts, d.Name)
			}
		case !errors.Is(err, ErrChecksum):
			t.Errorf("start %d: %v", starts, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := h.Close(ctx); err != nil {
			t.Errorf("start %d: Close: %v", starts, err)
		}
		cancel()
		if t.Failed() {
			break
		}
	}
	t.Logf("%d starts, %d ran the pinned binary", starts, served)
	if served == 0 {
		t.Fatal("no start ran the pinned binary: the race was not exercised")
	}
}

// TestWritableRefused: a plugin binary, or a directory on its path, that
// group or others may write is refused unless [plugins] allow_writable is
// set; a sticky directory (like /tmp) is not a risk.
func TestWritableRefused(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		dirMode  os.FileMode
		fileMode os.FileMode
		allow    string
		mention  []string // what the error names ($DIR: the case's directory); nil for no error
		is       error
	}{
		{"private", 0o755, 0o755, "", nil, nil},
		{"group-writable binary", 0o755, 0o775, "", []string{"$DIR/sub/" + BinaryPrefix + "hello", "its group", "allow_writable = true"}, ErrWritable},
		{"world-writable binary", 0o755, 0o757, "", []string{"$DIR/sub/" + BinaryPrefix + "hello", "others", "allow_writable = true"}, ErrWritable},
		{"group-writable directory", 0o775, 0o755, "", []string{"directory $DIR/sub ", "0775", "allow_writable = true"}, ErrWritable},
		{"world-writable directory", 0o777, 0o755, "", []string{"directory $DIR/sub ", "group and others", "allow_writable = true"}, ErrWritable},
		{"sticky world-writable directory", 0o777 | os.ModeSticky, 0o755, "", nil, nil},
		{"allowed", 0o777, 0o777, "true", nil, nil},
		{"bad allow value", 0o755, 0o755, "maybe", []string{`[plugins] allow_writable = "maybe"`}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			base := t.TempDir()
			sub := filepath.Join(base, "sub")
			if err := os.Mkdir(sub, 0o700); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(sub, BinaryPrefix+"hello")
			copyBinary(t, bin("hello"), path, c.fileMode)
			if err := os.Chmod(sub, c.dirMode); err != nil {
				t.Fatal(err)
			}
			from := entrypoints.Origin{}
			if c.allow != "" {
				from.Plugins = map[string]string{"allow_writable": c.allow}
			}
			h := newHost(t, HostOptions{PluginDirs: []string{sub}})
			_, err := h.Egg("hello", from)
			var mention []string
			for _, m := range c.mention {
				mention = append(mention, strings.ReplaceAll(m, "$DIR", base))
			}
			checkErr(t, err, c.is, mention)
		})
	}
}

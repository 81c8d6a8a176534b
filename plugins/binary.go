package plugins

import (
	"crypto/sha256"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// openBinary opens the plugin binary at path for one start: it refuses a
// binary that group or others may replace (unless allowWritable), hashes
// the open file and compares the digest with pin (when pin is not nil). The
// caller executes the returned file itself, not the path (binaryCommand), so
// that what runs is exactly what was hashed: a file renamed over path after
// the hash is not the one executed. The returned sum is that of the file
// executed; the caller closes the file once the process has started.
func openBinary(path string, pin []byte, allowWritable bool) (*os.File, []byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: plugin binary %s: %w", ErrNotPlugin, path, err)
	}
	fail := func(err error) (*os.File, []byte, error) {
		f.Close()
		return nil, nil, err
	}
	st, err := f.Stat()
	if err != nil {
		return fail(fmt.Errorf("plugin binary %s: %w", path, err))
	}
	if !st.Mode().IsRegular() {
		return fail(fmt.Errorf("%w: plugin binary %s is not a regular file", ErrNotPlugin, path))
	}
	if !allowWritable {
		// The file's own mode is read from the open file: it is the one
		// executed. The directories are checked by name, from the binary's
		// up to the root: whoever may write one of them may rename another
		// binary into place.
		if err := writableErr(path, "plugin binary", st.Mode()); err != nil {
			return fail(err)
		}
		for dir := filepath.Dir(path); ; dir = filepath.Dir(dir) {
			dst, err := os.Stat(dir)
			if err != nil {
				return fail(fmt.Errorf("plugin binary %s: %w", path, err))
			}
			if err := writableErr(dir, "directory", dst.Mode()); err != nil {
				return fail(fmt.Errorf("plugin binary %s: %w", path, err))
			}
			if parent := filepath.Dir(dir); parent == dir {
				break
			}
		}
	}
	hs := sha256.New()
	if _, err := io.Copy(hs, f); err != nil {
		return fail(fmt.Errorf("plugin binary %s: reading it: %w", path, err))
	}
	sum := hs.Sum(nil)
	if pin != nil && string(sum) != string(pin) {
		return fail(fmt.Errorf("%w: plugin binary %s has sha256 %x, [plugins] pins %x", ErrChecksum, path, sum, pin))
	}
	return f, sum, nil
}

// writableErr refuses a file or directory that group or others may write.
// A sticky directory (such as /tmp) is accepted: others may add entries to
// it but not rename or remove ours.
func writableErr(path, what string, mode fs.FileMode) error {
	if mode.Perm()&0o022 == 0 || (mode.IsDir() && mode&fs.ModeSticky != 0) {
		return nil
	}
	who := "group and others"
	switch mode.Perm() & 0o022 {
	case 0o020:
		who = "its group"
	case 0o002:
		who = "others"
	}
	return fmt.Errorf("%w: %s %s is writable by %s (mode %04o), who could replace the plugin binary; "+
		"run chmod go-w %s, or set allow_writable = true in [plugins] to accept it",
		ErrWritable, what, path, who, mode.Perm(), path)
}

package sandbox

import (
	"errors"
	"fmt"
	"io/fs"

	"executor/storage/safefs"
)

// Everything beneath a runtime's directory (its mounted src, builds, logs
// and cache, its root's upper layer) is written by the runtime: the daemon
// reaches it only through safefs, which never follows a link, never
// blocks on a FIFO and accepts regular files only. The names below are
// relative to Runtime.Dir.

// openDir opens the runtime's directory. The directory itself is the
// daemon's (the runtime sees only what is beneath it).
func (r *Runtime) openDir() (*safefs.Dir, error) {
	return safefs.OpenDir(r.Dir, safefs.Options{})
}

// refusal says in a sentence why a file a runtime left was not taken.
func refusal(err error) string {
	switch {
	case errors.Is(err, safefs.ErrSymlink):
		return "it is a symbolic link, or a link is on its path"
	case errors.Is(err, safefs.ErrNotRegular):
		return "it is not a regular file"
	case errors.Is(err, safefs.ErrTooLarge):
		return "it is larger than the limit"
	case errors.Is(err, fs.ErrNotExist):
		return "it does not exist"
	default:
		return fmt.Sprintf("%v", err)
	}
}

package images

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	securejoin "github.com/cyphar/filepath-securejoin"
	"github.com/moby/sys/user"

	"executor/storage/safefs"
)

// maxUserDB caps what is read of an image's /etc/passwd and /etc/group.
const maxUserDB = 4 << 20

// LookupUser resolves an image's User (name or id, with an optional group)
// against the /etc/passwd and /etc/group of its mounted root, read beneath
// the root: an image may make them links out of it, FIFOs or huge files, and
// the daemon must not follow, block or fill up.
func LookupUser(rootfs, spec string) (*user.ExecUser, error) {
	d, err := safefs.OpenDir(rootfs, safefs.Options{FollowBeneath: true})
	if err != nil {
		return nil, err
	}
	defer d.Close()
	read := func(name string) (io.Reader, error) {
		data, size, err := d.ReadFile(name, maxUserDB)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil // numeric ids work without the files
		}
		if err != nil {
			return nil, fmt.Errorf("/%s: %w", name, err)
		}
		if size > maxUserDB {
			return nil, fmt.Errorf("/%s is larger than %d bytes", name, maxUserDB)
		}
		return bytes.NewReader(data), nil
	}
	passwd, err := read("etc/passwd")
	if err != nil {
		return nil, err
	}
	group, err := read("etc/group")
	if err != nil {
		return nil, err
	}
	return user.GetExecUser(spec, &user.ExecUser{}, passwd, group)
}

// HasBash reports whether the mounted root has bash, which runtimes' commands
// then run under (sh otherwise), as the reference does.
func HasBash(rootfs string) bool {
	for _, p := range []string{"/bin/bash", "/usr/bin/bash"} {
		full, err := securejoin.SecureJoin(rootfs, p)
		if err != nil {
			continue
		}
		if _, err := os.Stat(full); err == nil {
			return true
		}
	}
	return false
}

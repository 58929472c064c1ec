package sandbox

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"executor/netns"
	"executor/oci"
	"executor/storage/safefs"
)

// openDir opens the runtime's directory, the daemon's way to what is beneath
// it (see "Hostile runtimes" in doc.go); names beneath it are relative.
func (r *Runtime) openDir() (*safefs.Dir, error) {
	return safefs.OpenDir(r.Dir, safefs.Options{})
}

// rootDir is where the runtime's root file system is mounted.
func (r *Runtime) rootDir() string { return filepath.Join(r.Dir, "root") }

// makeDir makes the runtime's directory and the directories mounted into
// it. The directory is private (0700): other host users must not read a
// tenant's source, artifacts or logs, even knowing their paths from the
// mount table.
//
// The directory is the mount point of the runtime's own disk (DiskLimit):
// its root's writes, source, builds, logs and cache all count against it.
func (m *Manager) makeDir(ctx context.Context, r *Runtime) error {
	if err := os.Mkdir(r.Dir, 0o700); err != nil {
		return err
	}
	dk, err := m.spares.Mount(ctx, r.Dir, m.diskConfig(m.cfg.UserNS))
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.disk = dk
	r.mu.Unlock()
	d, err := r.openDir()
	if err != nil {
		return err
	}
	defer d.Close()
	for _, name := range []string{"src", "builds", "logs"} {
		if err := d.Mkdir(name, 0o755); err != nil {
			return err
		}
	}
	return nil
}

// chownDirs gives the runtime's mounted directories, and what is in them, to
// its mapped root, so that root inside the runtime owns them. (The runtime's
// directory itself got that owner and 0700 when its disk was mounted.)
func (r *Runtime) chownDirs(m *oci.IDMap) error {
	if m == nil {
		return nil
	}
	d, err := r.openDir()
	if err != nil {
		return err
	}
	defer d.Close()
	for _, name := range []string{"src", "builds", "logs", "cache"} {
		err := d.ChownTree(name, int(m.HostUID), int(m.HostGID))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("give runtime directories to its root: %w", err)
		}
	}
	return nil
}

// writeNetFiles writes the runtime's /etc/hosts and /etc/resolv.conf, as
// its network renders them.
func (r *Runtime) writeNetFiles() error {
	d, err := r.openDir()
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.WriteFile("hosts", netns.Hosts(r.endpoint.Addr, r.Hostname), 0o644); err != nil {
		return err
	}
	return d.WriteFile("resolv.conf", r.network.ResolvConf().Render(), 0o644)
}

package container

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"reflect"
	"strings"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/manager"
	"github.com/opencontainers/runc/libcontainer/configs"

	"executor/oci"
)

// ParkFlag is executor-init's argument for a parked start: it waits for
// its command on fd 3 (a ParkedCommand, encoded, then EOF) and runs it as it
// runs the command given on its command line. EOF with nothing read makes
// it exit 0.
const ParkFlag = "--park"

// ParkedCommand is what a parked executor-init reads on fd 3.
type ParkedCommand struct {
	Args []string
	Env  []string
	Cwd  string
}

// MarshalBinary encodes c as executor-init reads it: a NUL-terminated field
// for each argument, environment entry and the working directory, each led
// by its kind ('a', 'e', 'd'). None of them can hold a NUL, as none could
// reach the command through execve.
func (c ParkedCommand) MarshalBinary() ([]byte, error) {
	if len(c.Args) == 0 {
		return nil, errors.New("no arguments")
	}
	var b []byte
	field := func(kind byte, v string) error {
		if strings.IndexByte(v, 0) >= 0 {
			return fmt.Errorf("%q holds a NUL byte", v)
		}
		b = append(append(append(b, kind), v...), 0)
		return nil
	}
	for _, a := range c.Args {
		if err := field('a', a); err != nil {
			return nil, fmt.Errorf("argument %w", err)
		}
	}
	for _, e := range c.Env {
		if err := field('e', e); err != nil {
			return nil, fmt.Errorf("environment entry %w", err)
		}
	}
	if c.Cwd != "" {
		if err := field('d', c.Cwd); err != nil {
			return nil, fmt.Errorf("working directory %w", err)
		}
	}
	return b, nil
}

// StartParked creates container id from spec and runs init (the path of
// executor-init inside the container) parked as its main process, as the
// user of p: the namespaces, root, mounts, network, cgroups and seccomp
// filter are all in place, and only the command is missing. Unpark gives
// it one. p's Cwd is made if missing, as for a started container; its Args
// and Env are ignored.
func (r *Runner) StartParked(id string, spec oci.Spec, init string, p Process) (*Container, error) {
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	park := Process{
		Args:       []string{init, ParkFlag},
		Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
		Cwd:        p.Cwd,
		UID:        p.UID,
		GID:        p.GID,
		Groups:     p.Groups,
		extraFiles: []*os.File{pr},
		// init is executor-init, and so is the main process of a
		// restart once unparked (its Args are p's, under init).
		ReportsExit: true,
	}
	c, err := r.Start(id, spec, park)
	// The container holds its copy of the read end (or failed to).
	pr.Close()
	if err != nil {
		pw.Close()
		return nil, err
	}
	c.park = pw
	return c, nil
}

// Parked reports whether c waits for its command.
func (c *Container) Parked() bool { return c.park != nil }

// Unpark gives a parked container its main process, p, with the limits of
// spec applied to its cgroups first: p runs as a started container's main
// process would (Exec and Restart use it from now on), except that
// executor-init got it over a pipe rather than on its command line. p's
// user must be the one the container was parked as. spec must describe the
// same container as the one it was started with, but for its limits.
func (r *Runner) Unpark(c *Container, spec oci.Spec, p Process) error {
	if c.park == nil {
		return errors.New("container: not parked")
	}
	if p.UID != c.main.UID || p.GID != c.main.GID {
		return fmt.Errorf("container: unpark as %d:%d a container parked as %d:%d", p.UID, p.GID, c.main.UID, c.main.GID)
	}
	cfg, err := r.config(c.ID(), spec)
	if err != nil {
		return err
	}
	if filteredByInit(c.cfg) {
		filterByInit(cfg)
	}
	if r.limitsOff == nil {
		if err := c.setCgroups(cfg); err != nil {
			return fmt.Errorf("container: set limits: %w", err)
		}
	}
	c.cfg = cfg
	args := p.Args
	if len(args) > 0 && args[0] == oci.InitPath {
		// The command line executor-init would have been given: the
		// command is what follows "--".
		args = args[1:]
		if len(args) > 0 && args[0] == "--" {
			args = args[1:]
		}
	}
	if len(args) == 0 {
		return errors.New("container: unpark with no command")
	}
	b, err := ParkedCommand{Args: args, Env: p.Env, Cwd: p.Cwd}.MarshalBinary()
	if err != nil {
		return fmt.Errorf("container: unpark: %w", err)
	}
	pw := c.park
	c.park = nil
	_, werr := pw.Write(b)
	cerr := pw.Close()
	if err := errors.Join(werr, cerr); err != nil {
		return fmt.Errorf("container: hand the command to executor-init: %w", err)
	}
	c.main.Args, c.main.Env, c.main.Cwd, c.main.ReportsExit = p.Args, p.Env, p.Cwd, p.ReportsExit
	c.main.extraFiles = nil // a restart runs the command directly
	return nil
}

// setCgroups puts cfg's limits on c's cgroups, those that differ from the
// ones c has (see changedLimits), through a cgroup manager of their paths,
// not libcontainer's Container.Set: that then writes its state file anew
// (the whole configuration as JSON, renamed over the old file, which ext4
// flushes first), 0.6 ms of its 1 ms on a prewarmed cold start's path. The state file keeps the parked limits, and nothing reads them
// back: a restart and an exec take c.cfg, and usage and OOM verdicts read
// the cgroups themselves.
func (c *Container) setCgroups(cfg *configs.Config) error {
	res := cfg.Cgroups.Resources
	var was *cgroups.Resources
	if c.cfg != nil && c.cfg.Cgroups != nil {
		was = c.cfg.Cgroups.Resources
	}
	if was != nil && res != nil {
		if reflect.DeepEqual(was, res) {
			// Parked with the limits it runs with (a cold start that
			// parks while it copies the request's files).
			return nil
		}
		if changed, ok := changedLimits(was, res); ok {
			res = changed
		}
	}
	if len(c.cgPaths) == 0 {
		// No paths known (the state could not be read at the start):
		// libcontainer's own way, which finds them.
		lc, err := c.lc()
		if err != nil {
			return err
		}
		return lc.Set(*cfg)
	}
	// A copy: the cgroup v2 manager keeps the resources it last set in
	// its config, which must stay cfg's whole set.
	cg := *cfg.Cgroups
	m, err := manager.NewWithPaths(&cg, maps.Clone(c.cgPaths))
	if err != nil {
		return err
	}
	return m.Set(res)
}

// closePark ends a parked wait that will never be given a command: its
// executor-init reads EOF and exits.
func (c *Container) closePark() {
	if c.park != nil {
		c.park.Close()
		c.park = nil
	}
}

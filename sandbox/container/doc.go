// Package container runs runtimes' containers with runc's libcontainer. It
// is the only user of libcontainer besides package oci, which builds the
// configurations this package runs.
//
// # Runners and containers
//
// A Runner holds what every container of one executor shares: the
// libcontainer state directory (Config.StateDir, one subdirectory per
// container), the cgroup parent (Config.CgroupParent: a container's cgroup
// is <parent>/<id> on every hierarchy), the cgroup version of the host,
// detected once by New, and the seccomp profile, compiled once by New unless
// Config.Unconfined turns it off: libcontainer's own compiler runs in an
// executor-spawn child, and a main process that is executor-init installs
// the program on itself (filter.go); any other main process, and every
// container of a runner that could not compile it (no executor-spawn, a
// kernel before 5.5), has libcontainer compile the profile in its init, at
// each start.
//
// Runner.Start makes a Container: it turns an oci.Spec into a libcontainer
// configuration with oci.Config and runs a Process as the container's init,
// its main process. Container ids begin with IDPrefix (NewID makes them), so
// that the leftovers of an earlier daemon can be told from everything else
// under the cgroup parent.
//
// # The main process
//
// The main process's stdout and stderr share one FIFO in the container's
// state directory, drained all the time into a bounded buffer that keeps
// the last 64 KiB (Container.Output): a runtime never blocks on a full
// pipe, and the tail is what explains a crash. Container.Done is closed once
// the main process has exited and its output is drained; Container.Exit
// then says how it ended: an exit code, a signal, or an error from waiting
// on it. A main process that is executor-init (Process.ReportsExit) also
// gets a FIFO to report its command's exit code on, for a daemon that
// adopts the container (below).
//
// Container.Exec runs another process in the container, as the main
// process's user, with its environment and working directory; its output
// goes to the caller's writers. Container.Restart replaces an exited
// container with a new one of the same configuration and main process.
//
// # Out-of-memory verdicts
//
// The kernel's OOM killer may kill any process of a container's cgroup;
// whether it killed the main process is what a caller needs to know, and
// libcontainer's OOM notifications are not reliable on cgroup v2. So the
// verdict comes from the cgroup's own kill counter (memory.events on v2,
// memory.oom_control on v1): the main process died of OOM when it died of
// SIGKILL (status 137, taken itself or passed on by a shell or an init) and
// the counter rose past the last verdict. A caller that sees an exchange
// with the runtime succeed marks the kills before it as survived
// (Container.MarkOOM, OOMMark.Survived), so an unrelated kill of a child
// never explains a later death.
//
// # Adoption
//
// A daemon may exit without destroying its containers (a live restore):
// they keep running, with their state, cgroups, roots and network in place.
// The next daemon takes each over with Runner.Adopt, given the main process
// it recorded (Process is JSON-serialisable for that) and the output tail it
// kept. An adopted Container works like a started one (Exec, Stop, Destroy,
// Restart, counters, OOM verdicts, output), but its main process is not the
// daemon's child: Done is closed when a pidfd of it turns readable, and its
// exit code is the one executor-init reported on its FIFO; without a report
// (killed by SIGKILL, or not executor-init) it is unknown (Exit has Code -1
// and Err wrapping ErrExitUnknown; OOMKilled is still judged from the
// cgroup's counter). Output goes on from the kept tail with what the
// runtime writes after the adoption (what it wrote while no daemon read its
// FIFO is dropped by executor-init). A container that is not running, or
// whose state is missing or broken, is refused with ErrNotAdoptable, for the
// caller to remove.
//
// # Leftovers
//
// After a daemon crash its containers keep running. Without live restore,
// before serving, a new daemon calls, in this order,
// Runner.RemoveLeftovers (kill and destroy every container under the state
// directory, remove state too broken to load), Runner.KillStrays (kill
// processes left in <parent>/rt-* cgroups whose state is gone) and, once
// whatever else the runtimes held is released, Runner.SweepCgroups. After a
// live restore their keep argument spares the containers it adopted.
// Runner.RemoveCgroupParent removes the parent at shutdown.
//
// # Cgroup v2
//
// cgroup v2 lets no cgroup but the root both hold processes and hand domain
// controllers to its children. A daemon started in its cgroup parent or
// above it (systemd's Delegate=yes layout) calls
// Runner.EnterSupervisorCgroup to move itself into a leaf below the parent
// first.
//
// # Init
//
// libcontainer starts a container by re-executing the current binary with
// the argument "init": the program (and every test binary of a package that
// starts containers) must call libcontainer.Init for it and blank-import
// github.com/opencontainers/runc/libcontainer/nsenter.
package container

package main

import (
	"context"
	stdflag "flag" // parse.go has a parser named flag
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"

	"golang.org/x/sys/unix"
)

// Exit codes of the command line. A daemon that stops on an error exits 1 and one with a configuration error 2
// (see serve).
const (
	exitOK          = 0
	exitAPIError    = 1   // the daemon answered with an error
	exitUsage       = 2   // the command line is wrong
	exitUnreachable = 3   // the daemon could not be reached, or the connection was lost
	exitInterrupted = 130 // SIGINT or SIGTERM, as a shell reports it
)

// runCLI handles the command line when it asks for something other than the
// daemon: it returns handled false to run the daemon. No arguments run the
// daemon, which takes its settings from the environment only. "executor
// init" never gets here: libcontainer's hook (main.go's init) takes it first.
func runCLI(args []string, stdout, stderr io.Writer) (code int, handled bool) {
	if len(args) == 0 {
		return 0, false
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	c := &cli{stdout: stdout, stderr: stderr, getenv: os.Getenv, terminalWidth: terminalWidth(stdout)}
	c.hostname, _ = os.Hostname()
	return c.run(ctx, args), true
}

// cli is one run of the command line, with what it reads from its host.
type cli struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	// terminalWidth is the width of stdout when it is a terminal, 0 when it is not: progress is drawn as bars
	// on a terminal and written as plain lines elsewhere.
	terminalWidth int
	// hostname is this host's name: the daemon names runtimes "<hostname>-<id>", and runtimes lists the id.
	hostname string
}

// command is one subcommand.
type command struct {
	name    string
	args    string // the arguments, as usage shows them
	summary string
	about   string // more, for "executor help COMMAND"
	// minArgs and maxArgs bound the positional arguments; maxArgs -1 is no bound.
	minArgs, maxArgs int
	// daemon commands talk to a running daemon and take --addr and --key.
	daemon bool
	// keyed daemon commands need the API key.
	keyed bool
	flags func(fs *stdflag.FlagSet, inv *invocation)
	run   func(c *cli, ctx context.Context, inv *invocation) int
}

// invocation is a parsed command line.
type invocation struct {
	cmd  *command
	args []string
	help bool // -h on a command: its help instead of running it
	// addr is --addr, "" when not given (OPR_EXECUTOR_LISTEN then); key likewise --key.
	addr, key string
	// logs
	timeout    int
	timestamps bool
}

// commands lists the subcommands in the order usage shows them.
func commands() []*command {
	return []*command{
		{name: "runtimes", summary: "list the runtimes: id, status, image, created", maxArgs: 0, daemon: true, keyed: true,
			about: "The id is the runtime's name without this host's name (the daemon names runtimes <hostname>-<id>);\n" +
				"a runtime of a daemon on another host shows its whole name.",
			run: (*cli).runtimes},
		{name: "rm", args: "ID...", summary: "remove runtimes", minArgs: 1, maxArgs: -1, daemon: true, keyed: true,
			about: "Stops and removes each runtime, as DELETE /v1/runtimes/ID does. Exits 1 if any could not be removed.",
			run:   (*cli).rm},
		{name: "logs", args: "ID", summary: "follow a runtime's build output until the build ends", minArgs: 1, maxArgs: 1, daemon: true, keyed: true,
			about: "Streams GET /v1/runtimes/ID/logs: the build output so far, then as it comes, until the build ends,\n" +
				"the runtime goes away or the timeout passes. Waits up to 10 seconds for a runtime that does not exist yet.",
			flags: func(fs *stdflag.FlagSet, inv *invocation) {
				fs.IntVar(&inv.timeout, "timeout", 600, "stop following after `SECONDS`")
				fs.BoolVar(&inv.timestamps, "timestamps", false, "prefix each line with its time (v5 runtimes)")
			},
			run: (*cli).logs},
		{name: "health", summary: "check that the daemon serves", maxArgs: 0, daemon: true,
			about: "Prints ok when the daemon answers GET /v1/health; with the key, also the CPU usage it reports.",
			run:   (*cli).health},
		{name: "pull", args: "IMAGE", summary: "pull an image into the daemon's store, showing progress", minArgs: 1, maxArgs: 1, daemon: true, keyed: true,
			about: "Asks the daemon to pull IMAGE (POST /v1/images), as a runtime's creation would: an image already in\n" +
				"its store is not pulled again. Progress is drawn as bars on a terminal and written as lines otherwise.",
			run: (*cli).pull},
		{name: "version", summary: "print the version, commit and build date", maxArgs: 0, run: (*cli).version},
		{name: "help", args: "[COMMAND]", summary: "print this help, or a command's", maxArgs: 1, run: (*cli).help},
	}
}

func findCommand(name string) *command {
	for _, cmd := range commands() {
		if cmd.name == name {
			return cmd
		}
	}
	return nil
}

// usageError is a wrong command line: one line for stderr, and exit 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{msg: fmt.Sprintf(format, args...)} }

// parseArgs reads the command line (args without the program name, at least one). Flags of a command may come
// before or after its arguments; "--" ends the flags.
func parseArgs(args []string) (*invocation, error) {
	inv := &invocation{}
	top := newFlagSet("executor")
	var help, version bool
	top.BoolVar(&help, "h", false, "print this help")
	top.BoolVar(&help, "help", false, "print this help")
	top.BoolVar(&version, "version", false, "print the version, commit and build date")
	connectionFlags(top, inv)
	if err := top.Parse(args); err != nil {
		return nil, flagError(err)
	}
	rest := top.Args()
	switch {
	case help:
		inv.cmd = findCommand("help")
		if len(rest) > 0 && findCommand(rest[0]) != nil {
			inv.args = rest[:1]
		}
		return inv, nil
	case version:
		inv.cmd = findCommand("version")
		return inv, nil
	case len(rest) == 0:
		// Flags and no command: the daemon takes no flags.
		return nil, usagef("flags need a command; the daemon itself is configured by OPR_EXECUTOR_* variables only")
	}
	inv.cmd = findCommand(rest[0])
	if inv.cmd == nil {
		return nil, usagef("unknown command %q", rest[0])
	}
	fs := newFlagSet("executor " + inv.cmd.name)
	fs.BoolVar(&inv.help, "h", false, "print this command's help")
	fs.BoolVar(&inv.help, "help", false, "print this command's help")
	if inv.cmd.daemon {
		connectionFlags(fs, inv)
	}
	if inv.cmd.flags != nil {
		inv.cmd.flags(fs, inv)
	}
	pos, err := parseInterspersed(fs, rest[1:])
	if err != nil {
		return nil, flagError(err)
	}
	if inv.help {
		return inv, nil
	}
	inv.args = pos
	switch c := inv.cmd; {
	case len(pos) < c.minArgs:
		return nil, usagef("missing argument: executor %s %s", c.name, c.args)
	case c.maxArgs == 0 && len(pos) > 0:
		return nil, usagef("%s takes no arguments, got %q", c.name, pos[0])
	case c.maxArgs >= 0 && len(pos) > c.maxArgs:
		return nil, usagef("too many arguments: executor %s %s", c.name, c.args)
	}
	for _, a := range pos {
		if a == "" {
			return nil, usagef("%s: an empty argument", inv.cmd.name)
		}
	}
	if inv.timeout < 0 {
		return nil, usagef("--timeout must not be negative")
	}
	return inv, nil
}

// parseInterspersed parses flags anywhere among args, as a person types them ("logs ID --timestamps"), and
// returns the other arguments in order. Everything after "--" is an argument.
func parseInterspersed(fs *stdflag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		// flag stops at the first argument, or just after a "--" it took.
		if used := len(args) - len(rest); used > 0 && args[used-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	return pos, nil
}

// newFlagSet is a flag set that reports errors rather than printing them or exiting.
func newFlagSet(name string) *stdflag.FlagSet {
	fs := stdflag.NewFlagSet(name, stdflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// connectionFlags are the flags of every command that talks to the daemon.
func connectionFlags(fs *stdflag.FlagSet, inv *invocation) {
	fs.StringVar(&inv.addr, "addr", inv.addr, "the daemon's API as `HOST:PORT` or an http(s) URL (default: OPR_EXECUTOR_LISTEN)")
	fs.StringVar(&inv.key, "key", inv.key, "the API `KEY` (default: OPR_EXECUTOR_SECRET, which unlike a flag other users cannot read)")
}

// flagError words the flag package's errors as ours.
func flagError(err error) error {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		return usagef("unknown flag --%s", strings.TrimPrefix(name, "-"))
	}
	return usagef("%s", msg)
}

// run parses and runs args and returns the exit code.
func (c *cli) run(ctx context.Context, args []string) int {
	inv, err := parseArgs(args)
	if err != nil {
		fmt.Fprintf(c.stderr, "executor: %v\nRun 'executor --help' for usage.\n", err)
		return exitUsage
	}
	if inv.help {
		c.commandHelp(inv.cmd)
		return exitOK
	}
	return inv.cmd.run(c, ctx, inv)
}

func (c *cli) help(_ context.Context, inv *invocation) int {
	if len(inv.args) == 1 {
		cmd := findCommand(inv.args[0])
		if cmd == nil {
			fmt.Fprintf(c.stderr, "executor: unknown command %q\nRun 'executor --help' for usage.\n", inv.args[0])
			return exitUsage
		}
		c.commandHelp(cmd)
		return exitOK
	}
	c.usage(c.stdout)
	return exitOK
}

// usage is what --help prints.
func (c *cli) usage(w io.Writer) {
	fmt.Fprint(w, `Usage:
  executor                      run the daemon
  executor COMMAND [ARGS]       talk to a running daemon, or print something

The daemon serves the Open Runtimes Executor API. It takes no flags: its settings are OPR_EXECUTOR_*
environment variables (OPR_EXECUTOR_SECRET, OPR_EXECUTOR_LISTEN, OPR_EXECUTOR_DATA_DIR, ...), listed with
their defaults under "Configuration" in the README. A bad one stops it at start, naming the variable.

Commands:
`)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, cmd := range commands() {
		fmt.Fprintf(tw, "  %s %s\t%s\n", cmd.name, cmd.args, cmd.summary)
	}
	tw.Flush()
	fmt.Fprintf(w, `
The commands that talk to the daemon take:
  --addr HOST:PORT  the daemon's API, or its http(s) URL (default: OPR_EXECUTOR_LISTEN as the daemon
                    reads it, %s when unset; an unspecified host, 0.0.0.0 or [::], is this host's loopback)
  --key KEY         the API key (default: OPR_EXECUTOR_SECRET; a key given as a flag can be read by every
                    user of this host, the variable cannot)

Run 'executor help COMMAND' for a command's flags.

Exit status: 0 done, 1 the daemon answered with an error, 2 a wrong command line, 3 the daemon could not be
reached (or the connection was lost), 130 interrupted.
`, listenDefault())
}

// commandHelp is what "executor help COMMAND" and "executor COMMAND -h" print.
func (c *cli) commandHelp(cmd *command) {
	w := c.stdout
	fmt.Fprintf(w, "Usage: executor %s", cmd.name)
	if cmd.daemon || cmd.flags != nil {
		fmt.Fprint(w, " [FLAGS]")
	}
	if cmd.args != "" {
		fmt.Fprint(w, " "+cmd.args)
	}
	fmt.Fprintf(w, "\n\n%s.\n", strings.ToUpper(cmd.summary[:1])+cmd.summary[1:])
	if cmd.about != "" {
		fmt.Fprintf(w, "%s\n", cmd.about)
	}
	fs := newFlagSet(cmd.name)
	inv := &invocation{}
	if cmd.daemon {
		connectionFlags(fs, inv)
	}
	if cmd.flags != nil {
		cmd.flags(fs, inv)
	}
	first := true
	fs.VisitAll(func(f *stdflag.Flag) {
		if first {
			fmt.Fprint(w, "\nFlags:\n")
			first = false
		}
		name, usage := stdflag.UnquoteUsage(f)
		line := "  --" + f.Name
		if name != "" {
			line += " " + name
		}
		if f.DefValue != "" && f.DefValue != "false" {
			usage += " (default " + f.DefValue + ")"
		}
		fmt.Fprintf(w, "%-22s %s\n", line, usage)
	})
}

func (c *cli) version(context.Context, *invocation) int {
	fmt.Fprintf(c.stdout, "executor %s\n", version)
	if commit != "" {
		fmt.Fprintf(c.stdout, "commit:  %s\n", commit)
	}
	if buildDate != "" {
		fmt.Fprintf(c.stdout, "built:   %s\n", buildDate)
	}
	return exitOK
}

// terminalWidth is the width of w when it is a terminal, else 0.
func terminalWidth(w io.Writer) int {
	f, ok := w.(*os.File)
	if !ok {
		return 0
	}
	ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
	if err != nil {
		return 0
	}
	if ws.Col == 0 {
		return 80 // a terminal that does not say
	}
	return int(ws.Col)
}

// interrupted is the exit code of a command whose context (runCLI's: SIGINT, SIGTERM) ended, if it did:
// whatever failed then failed because of it.
func interrupted(ctx context.Context) (int, bool) {
	if ctx.Err() != nil {
		return exitInterrupted, true
	}
	return 0, false
}

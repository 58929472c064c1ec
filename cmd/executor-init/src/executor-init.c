/*
 * executor-init is the first process of every runtime: it starts the
 * runtime's command, passes the signals it gets on to it, reaps every orphan
 * that ends up as its child (a PID namespace's init inherits them all), and
 * exits with the command's status. Without it a server running as PID 1
 * ignores SIGTERM it does not handle and leaves zombies behind. With --park
 * it first waits for its command on fd 3 (a prewarmed runtime), with its
 * signals already caught and its output pipe made, so the command starts as
 * soon as it comes; a signal that would have ended the command ends the wait.
 *
 * The command's stdout and stderr are a pipe of executor-init's, which it
 * copies on to its own stdout, the executor's FIFO. Runtimes outlive a
 * restart of the executor (live restore), and the FIFO's reader goes with the
 * executor: written to directly, it would kill the command with SIGPIPE, or
 * leave it failing with EPIPE. executor-init instead keeps reading, drops
 * what finds no reader, and passes the output on again once the next
 * executor opens the FIFO. It never blocks on that FIFO: while the executor
 * does not read, it stops reading the command's pipe (the command waits, as
 * on any full pipe) but goes on passing signals and reaping.
 *
 * With --exit-fd N it also writes the command's exit code, in decimal and a
 * newline, on fd N as it exits: an executor that adopted the runtime after a
 * restart is not its parent and cannot wait for it, but reads the code there
 * (a FIFO too, written only if some executor reads it).
 *
 * It is C, one thread, built static (no libc needed in the runtime's root),
 * and bind-mounted read-only into each runtime by the executor. Written in Go
 * it ran 7-8 threads in every runtime and took 2-3 ms longer from its start
 * to its command's: every runtime's start pays for that, and pivot_root at
 * each container start walks every thread on the host.
 *
 * With --seccomp-fd N it first installs the seccomp filter on fd N (a
 * classic BPF program, struct sock_filter[], as the kernel takes it) on
 * itself, before it does anything else: the executor compiles its profile
 * once (libcontainer's own compiler, its load caught in a process that
 * ran it) rather than libcontainer compiling it again in every container's
 * init, 4-5 ms of each start. Everything it then runs inherits the filter;
 * when the filter cannot be installed, it runs nothing and exits 127.
 *
 * --seccomp-flags F gives its load flags, as a number: libcontainer's for
 * the profile (SECCOMP_FILTER_FLAG_SPEC_ALLOW for moby's default), of which
 * only SPEC_ALLOW and LOG are taken.
 *
 * With --exec it installs the filter and then becomes the command (execve):
 * a command the executor runs in a running runtime (a build), which must be
 * filtered as the runtime is, and keeps its own stdout, stderr and status.
 *
 * Usage: executor-init [--exit-fd N] [--seccomp-fd N [--seccomp-flags F]]
 *                      { --park | --exec -- COMMAND [ARG...] | [--] COMMAND [ARG...] }
 *
 * The parked command on fd 3 is a sequence of NUL-terminated fields, each
 * led by its kind: 'a' an argument, 'e' an environment entry (KEY=VALUE),
 * 'd' the working directory; then EOF (sandbox/container.ParkedCommand).
 * EOF with nothing read means the runtime was never needed: exit 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* How long, once the command exited, its last output may take to pass on:
 * the executor may have stopped reading, or an orphan write without pause. */
#define DRAIN_MS 2000
/* The most a parked command may take on fd 3. */
#define PARKED_MAX (64 << 20)
#define BUF_SIZE (32 << 10)

static void say(const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	int n = snprintf(msg, sizeof msg, "executor-init: ");
	va_start(ap, fmt);
	n += vsnprintf(msg + n, sizeof msg - n, fmt, ap);
	va_end(ap);
	if (n >= (int)sizeof msg - 1)
		n = sizeof msg - 2;
	msg[n++] = '\n';
	/* Best effort: stderr may be anything, or nothing. */
	ssize_t w = write(2, msg, n);
	(void)w;
}

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* output is the command's pipe and what of it is yet to pass on to stdout. */
struct output {
	int r;          /* the pipe's read end, non-blocking */
	int eof;        /* every writer closed the pipe */
	int out_nb;     /* stdout is non-blocking: wait for it in poll */
	char buf[BUF_SIZE];
	size_t off, len; /* buf[off:len] waits for stdout */
};

/* flush writes what waits for stdout, as much as stdout takes now. A write
 * that fails finds no reader (EPIPE: the executor is gone, or not yet back
 * after a restart) and drops what it held; the next is tried all the same,
 * so output flows again once an executor opens the FIFO. */
static void flush(struct output *o)
{
	while (o->off < o->len) {
		ssize_t n = write(1, o->buf + o->off, o->len - o->off);
		if (n > 0) {
			o->off += n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return; /* stdout is full: poll says when it is not */
		break;    /* EPIPE, or any other failure: dropped */
	}
	o->off = o->len = 0;
}

/* fill reads what the command wrote, once what was read before is passed
 * on; it reports whether it read anything. */
static int fill(struct output *o)
{
	if (o->eof || o->len > 0)
		return 0;
	for (;;) {
		ssize_t n = read(o->r, o->buf, sizeof o->buf);
		if (n > 0) {
			o->off = 0;
			o->len = n;
			return 1;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n == 0 || errno != EAGAIN)
			o->eof = 1;
		return 0;
	}
}

/* drain passes on what the command left in its pipe once it exited. Orphans
 * it left (nohup server &) may hold the pipe open for ever, so it reads only
 * until the pipe is empty, not until EOF, and waits for stdout at most until
 * DRAIN_MS after the exit. */
static void drain(struct output *o)
{
	long long deadline = now_ms() + DRAIN_MS;
	for (;;) {
		flush(o);
		/* An orphan that writes without pause keeps the pipe from
		 * ever being empty: the deadline ends the drain then too. */
		long long left = deadline - now_ms();
		if (left <= 0)
			return;
		if (o->len > 0) {
			struct pollfd p = {.fd = 1, .events = POLLOUT};
			if (poll(&p, 1, (int)left) < 0 && errno != EINTR)
				return;
			continue;
		}
		if (!fill(o))
			return; /* empty, EOF or an error */
	}
}

/* reap collects every exited child; it reports whether the command itself
 * ended, with its exit code in *code. */
static int reap(pid_t child, int *code)
{
	int done = 0;
	for (;;) {
		int ws;
		pid_t pid = waitpid(-1, &ws, WNOHANG);
		if (pid < 0 && errno == EINTR)
			continue;
		if (pid <= 0)
			return done;
		if (pid == child) {
			done = 1;
			if (WIFEXITED(ws))
				*code = WEXITSTATUS(ws);
			else if (WIFSIGNALED(ws))
				*code = 128 + WTERMSIG(ws);
		}
	}
}

/* supervise copies the command's output and passes signals on to its
 * process group until it exits, and returns its exit code. */
static int supervise(pid_t child, int sfd, struct output *o)
{
	int code = 0;
	for (;;) {
		struct pollfd p[3];
		int n = 0, want_out = o->len > 0 && o->out_nb;
		p[n++] = (struct pollfd){.fd = sfd, .events = POLLIN};
		if (want_out)
			p[n++] = (struct pollfd){.fd = 1, .events = POLLOUT};
		else if (!o->eof && o->len == 0)
			p[n++] = (struct pollfd){.fd = o->r, .events = POLLIN};
		if (poll(p, n, -1) < 0) {
			if (errno == EINTR)
				continue;
			say("poll: %s", strerror(errno));
			return 126;
		}
		if (n > 1 && p[1].revents) {
			if (want_out)
				flush(o);
			else if (fill(o))
				flush(o);
		}
		if (!p[0].revents)
			continue;
		struct signalfd_siginfo si;
		while (read(sfd, &si, sizeof si) == sizeof si) {
			switch (si.ssi_signo) {
			case SIGCHLD:
				if (reap(child, &code)) {
					drain(o);
					return code;
				}
				break;
			case SIGPIPE:
				/* Raised by our own write to an executor that is
				 * gone: passed on, it would kill the runtime it is
				 * there to spare. */
				break;
			default:
				/* To the command's whole process group: shells and
				 * the servers they start go together, as under a
				 * terminal. */
				kill(-child, si.ssi_signo);
			}
		}
	}
}

/* look_path resolves a command name against PATH the way a shell does; it
 * returns name itself when it holds a slash, NULL when nothing is found. */
static char *look_path(const char *name)
{
	if (strchr(name, '/'))
		return strdup(name);
	const char *path = getenv("PATH");
	if (!path || !*path)
		path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
	for (const char *p = path;;) {
		const char *end = strchrnul(p, ':');
		size_t dl = end - p;
		char *full;
		if (dl == 0) {
			full = malloc(strlen(name) + 3);
			if (full)
				sprintf(full, "./%s", name);
		} else {
			full = malloc(dl + strlen(name) + 2);
			if (full)
				sprintf(full, "%.*s/%s", (int)dl, p, name);
		}
		if (!full)
			return NULL;
		struct stat st;
		if (stat(full, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 0111))
			return full;
		free(full);
		if (!*end)
			return NULL;
		p = end + 1;
	}
}

/* read_parked reads the whole of fd 3 while answering signals: it returns
 * the bytes read (*len of them, NULL and 0 for EOF at once), or NULL with
 * *code set when executor-init must exit instead. */
static char *read_parked(int sfd, size_t *len, int *code)
{
	size_t cap = 4096, n = 0;
	char *b = malloc(cap);
	if (!b) {
		say("read the command: out of memory");
		*code = 127;
		return NULL;
	}
	for (;;) {
		struct pollfd p[2] = {{.fd = 3, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			say("read the command: poll: %s", strerror(errno));
			goto fail;
		}
		if (p[1].revents) {
			struct signalfd_siginfo si;
			while (read(sfd, &si, sizeof si) == sizeof si) {
				switch (si.ssi_signo) {
				case SIGCHLD: case SIGPIPE: case SIGURG: case SIGWINCH: case SIGCONT:
					break; /* no command to pass them on to, nor to end */
				default:
					free(b);
					*code = 128 + si.ssi_signo;
					return NULL;
				}
			}
		}
		if (!p[0].revents)
			continue;
		if (n == cap) {
			if (cap >= PARKED_MAX) {
				say("read the command: more than %d bytes", PARKED_MAX);
				goto fail;
			}
			char *nb = realloc(b, cap * 2);
			if (!nb) {
				say("read the command: out of memory");
				goto fail;
			}
			b = nb;
			cap *= 2;
		}
		ssize_t r = read(3, b + n, cap - n);
		if (r < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			say("read the command: %s", strerror(errno));
			goto fail;
		}
		if (r == 0)
			break;
		n += r;
	}
	close(3);
	if (n == 0) {
		free(b);
		*code = 0;
		return NULL;
	}
	*len = n;
	return b;
fail:
	free(b);
	*code = 127;
	return NULL;
}

/* unpark waits for the parked command and takes on its environment and
 * working directory, as the container's init would have been given them; it
 * returns the command's arguments, or NULL with *code to exit with. */
static char **unpark(int sfd, int *code)
{
	size_t len;
	char *b = read_parked(sfd, &len, code);
	if (!b)
		return NULL;
	if (b[len - 1] != '\0') {
		say("bad command: its last field is not terminated");
		*code = 127;
		return NULL;
	}
	size_t nargs = 0, nenv = 0;
	for (size_t i = 0; i < len; i += strlen(b + i) + 1) {
		if (b[i] == 'a')
			nargs++;
		else if (b[i] == 'e')
			nenv++;
		else if (b[i] != 'd') {
			say("bad command: a field of kind %#x", (unsigned char)b[i]);
			*code = 127;
			return NULL;
		}
	}
	if (nargs == 0) {
		say("bad command: no arguments");
		*code = 127;
		return NULL;
	}
	char **args = calloc(nargs + 1, sizeof *args);
	char **env = calloc(nenv + 2, sizeof *env);
	if (!args || !env) {
		say("bad command: out of memory");
		*code = 127;
		return NULL;
	}
	const char *cwd = NULL;
	int has_home = 0;
	size_t ai = 0, ei = 0;
	for (size_t i = 0; i < len; i += strlen(b + i) + 1) {
		char *v = b + i + 1;
		if (b[i] == 'a')
			args[ai++] = v;
		else if (b[i] == 'd')
			cwd = v;
		else if (strchr(v, '=') && *v != '=') {
			/* A key given twice takes its last value, as setenv
			 * would have: the earlier entry goes. */
			size_t kl = strchr(v, '=') - v + 1;
			for (size_t j = 0; j < ei; j++) {
				if (strncmp(env[j], v, kl) == 0) {
					memmove(env + j, env + j + 1, (ei - j - 1) * sizeof *env);
					ei--;
					break;
				}
			}
			env[ei++] = v;
			has_home |= strncmp(v, "HOME=", 5) == 0;
		}
	}
	/* libcontainer gave this process the user's HOME when its environment
	 * had none, as it would have given the command's. */
	const char *home = getenv("HOME");
	if (!has_home && home && *home) {
		char *h = malloc(strlen(home) + 6);
		if (h) {
			sprintf(h, "HOME=%s", home);
			env[ei++] = h;
		}
	}
	environ = env;
	if (cwd && *cwd && chdir(cwd) != 0) {
		say("chdir %s: %s", cwd, strerror(errno));
		*code = 127;
		return NULL;
	}
	return args;
}

/* report_exit writes code on fd. Without a reader (no executor runs, or the
 * one that started the runtime waits for it as its parent) the write fails
 * with EPIPE, which is fine: the code is for an executor that adopted the
 * runtime, and one that did reads the FIFO. SIGPIPE is blocked. */
static void report_exit(int fd, int code)
{
	char msg[16];
	int n = snprintf(msg, sizeof msg, "%d\n", code);
	ssize_t w = write(fd, msg, n);
	(void)w;
	close(fd);
}

/* run runs the command args name (or the parked one) and returns its exit
 * code. */
static int run(char **args, int parked)
{
	/* Every signal is blocked and read from a signalfd, before the child
	 * exists, so that none is lost; the child unblocks them. A signal this
	 * process was started with ignored would never reach the signalfd:
	 * every one is set to its default first (blocked, none is taken). */
	sigset_t all;
	sigfillset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
	for (int s = 1; s < NSIG; s++)
		if (s != SIGKILL && s != SIGSTOP)
			signal(s, SIG_DFL);
	int sfd = signalfd(-1, &all, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sfd < 0) {
		say("signalfd: %s", strerror(errno));
		return 126;
	}
	int pfd[2];
	if (pipe2(pfd, O_CLOEXEC) != 0) {
		say("pipe: %s", strerror(errno));
		return 126;
	}
	static struct output o;
	o.r = pfd[0];
	fcntl(o.r, F_SETFL, fcntl(o.r, F_GETFL) | O_NONBLOCK);
	/* The executor's FIFO (or any pipe) is this process's alone to write:
	 * made non-blocking, a reader that stops reading never blocks the
	 * signals and reaping. A terminal or a file stays as it is. */
	struct stat st;
	if (fstat(1, &st) == 0 && S_ISFIFO(st.st_mode)) {
		int fl = fcntl(1, F_GETFL);
		o.out_nb = fl >= 0 && fcntl(1, F_SETFL, fl | O_NONBLOCK) == 0;
	}

	int code;
	if (parked && !(args = unpark(sfd, &code)))
		return code;

	char *path = look_path(args[0]);
	if (!path) {
		say("%s: not found in PATH", args[0]);
		return 127;
	}
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	sigset_t none;
	sigemptyset(&none);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
	posix_spawn_file_actions_adddup2(&fa, pfd[1], 2);
	posix_spawnattr_init(&attr);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
	posix_spawnattr_setpgroup(&attr, 0);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setsigdefault(&attr, &all);
	pid_t child;
	int err = posix_spawn(&child, path, &fa, &attr, args, environ);
	close(pfd[1]);
	if (err != 0) {
		say("start %s: %s", args[0], strerror(err));
		return 126;
	}
	return supervise(child, sfd, &o);
}

/* install_filter installs the seccomp program on fd on this process, which
 * every process it starts inherits, and closes fd. The program is the
 * executor's, on a sealed memfd; it is read with pread, as other runtimes'
 * inits read the same open file at the same time. */
static int install_filter(int fd, unsigned flags)
{
	struct stat st;
	if (fstat(fd, &st) != 0) {
		say("seccomp filter on fd %d: %s", fd, strerror(errno));
		return -1;
	}
	if (!S_ISREG(st.st_mode) || st.st_size <= 0 || st.st_size % sizeof(struct sock_filter) != 0 ||
	    st.st_size > (off_t)(BPF_MAXINSNS * sizeof(struct sock_filter))) {
		say("seccomp filter on fd %d: not a program (%lld bytes)", fd, (long long)st.st_size);
		return -1;
	}
	struct sock_filter *insns = malloc(st.st_size);
	if (!insns) {
		say("seccomp filter: out of memory");
		return -1;
	}
	for (off_t got = 0; got < st.st_size;) {
		ssize_t n = pread(fd, (char *)insns + got, st.st_size - got, got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			say("seccomp filter on fd %d: %s", fd, n < 0 ? strerror(errno) : "short read");
			return -1;
		}
		got += n;
	}
	close(fd);
	struct sock_fprog prog = {.len = st.st_size / sizeof *insns, .filter = insns};
	/* runc has set it already (the configuration's NoNewPrivileges);
	 * without it the kernel takes a filter only from a process with
	 * CAP_SYS_ADMIN. */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
		say("seccomp filter: no_new_privs: %s", strerror(errno));
		return -1;
	}
	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog) != 0) {
		say("seccomp filter: %s", strerror(errno));
		return -1;
	}
	free(insns);
	return 0;
}

/* fd_arg parses a descriptor number above 2 given to flag. */
static int fd_arg(const char *flag, const char *v)
{
	char *end;
	errno = 0;
	long n = strtol(v, &end, 10);
	if (errno || *end || end == v || n < 3 || n > INT_MAX) {
		say("%s \"%s\": not a descriptor above 2", flag, v);
		return -1;
	}
	return (int)n;
}

int main(int argc, char **argv)
{
	(void)argc;
	char **args = argv + 1;
	int exit_fd = -1, filter_fd = -1;
	unsigned long filter_flags = 0;
	for (;;) {
		int *fd = NULL;
		if (args[0] && args[1] && strcmp(args[0], "--exit-fd") == 0)
			fd = &exit_fd;
		else if (args[0] && args[1] && strcmp(args[0], "--seccomp-fd") == 0)
			fd = &filter_fd;
		else if (args[0] && args[1] && strcmp(args[0], "--seccomp-flags") == 0) {
			const unsigned long known = SECCOMP_FILTER_FLAG_LOG | SECCOMP_FILTER_FLAG_SPEC_ALLOW;
			char *end;
			errno = 0;
			filter_flags = strtoul(args[1], &end, 10);
			if (errno || *end || end == args[1] || (filter_flags & ~known)) {
				say("--seccomp-flags \"%s\": not a set of LOG and SPEC_ALLOW", args[1]);
				return 127;
			}
			args += 2;
			continue;
		} else
			break;
		if ((*fd = fd_arg(args[0], args[1])) < 0)
			return 127;
		args += 2;
	}
	/* First: nothing of the runtime's may run before it. */
	if (filter_fd >= 0 && install_filter(filter_fd, (unsigned)filter_flags) != 0)
		return 127;
	if (exit_fd >= 0)
		/* The command must not inherit it: it would be the runtime's
		 * to write a status of its choosing on. */
		fcntl(exit_fd, F_SETFD, FD_CLOEXEC);
	if (args[0] && strcmp(args[0], "--exec") == 0) {
		if (exit_fd >= 0) {
			say("--exec: it becomes the command, and reports no exit on fd %d", exit_fd);
			return 127;
		}
		args++;
		if (args[0] && strcmp(args[0], "--") == 0)
			args++;
		if (!args[0]) {
			say("--exec: no command");
			return 127;
		}
		char *path = look_path(args[0]);
		if (!path) {
			say("%s: not found in PATH", args[0]);
			return 127;
		}
		execve(path, args, environ);
		int err = errno;
		say("exec %s: %s", args[0], strerror(err));
		return err == ENOENT ? 127 : 126;
	}
	int parked = args[0] && strcmp(args[0], "--park") == 0 && !args[1];
	if (!parked && args[0] && strcmp(args[0], "--") == 0)
		args++;
	int code;
	if (!parked && !args[0]) {
		say("usage: executor-init [--exit-fd N] [--seccomp-fd N [--seccomp-flags F]] { --park | --exec -- COMMAND [ARG...] | -- COMMAND [ARG...] }");
		code = 127;
	} else {
		code = run(args, parked);
	}
	if (exit_fd >= 0)
		report_exit(exit_fd, code);
	return code;
}

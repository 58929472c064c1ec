#!/bin/sh
# manpage.sh HELP_TEXT: executor(8) on stdout, built around `executor --help`
# (the file HELP_TEXT) so that the manual and the binary never disagree; what
# --help leaves to the README (settings, files, the unit) is summed up here
# and points there. make install installs it.
set -eu
help=$1
[ -s "$help" ] || {
	echo "manpage.sh: $help is empty or missing" >&2
	exit 1
}
cat <<'EOF'
.TH EXECUTOR 8 "" "executor" "System Administration"
.SH NAME
executor \- daemonless Open Runtimes executor, and its command line
.SH DESCRIPTION
Without arguments, \fBexecutor\fR is the daemon: it serves the Open Runtimes Executor /v1 HTTP API and runs
every runtime itself, pulling OCI images, running containers through libcontainer and wiring each into a bridge.
It is configured by \fBOPR_EXECUTOR_*\fR environment variables only; a bad value stops it at start, naming the
variable. With a command it talks to a running daemon or prints something; \fB\-\-help\fR says:
.PP
.RS 2
.nf
EOF
# Troff reads a backslash as an escape and a line starting with . or ' as a
# request: escape both so the text comes out as --help printed it.
sed -e 's/\\/\\e/g' -e "s/^[.']/\\\\\\&&/" "$help"
cat <<'EOF'
.fi
.RE
.SH FILES
.TP
.I /etc/executor/executor.env
the daemon's settings, read by \fIexecutor.service\fR (mode 0600: it holds the API key)
.TP
.I executor-init
the static PID 1 of every runtime, run from the daemon's own directory unless \fBOPR_EXECUTOR_INIT\fR names
another
.TP
.I executor-spawn
starts the runtimes' containers for the daemon, which runs it from its own directory
.TP
.I /var/lib/executor
images, layers, runtime directories and container state (\fBOPR_EXECUTOR_DATA_DIR\fR)
.SH SEE ALSO
.BR systemctl (1),
.BR systemd.exec (5);
the README (installed beside the example environment file under share/doc/executor) lists every setting with
its default.
EOF

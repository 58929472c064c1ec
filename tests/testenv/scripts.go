package testenv

import "fmt"

// Helper scripts of the test runtime images. They follow the Open Runtimes
// helpers (see shared/spec/runtime-protocol.md §4) closely enough for the
// executor's build and start commands, but run on busybox ash: busybox tar
// has no --exclude and busybox has no bash, which is why they differ in
// details.

// startScript is helpers/start.sh "<server command>" (v3/v4/v5).
const startScript = `#!/bin/sh
# Test runtime start helper: unpack the build artifact into the function
# directory, load the environment saved at build time, run the server command.
set -e
FUNCTION_DIR=/usr/local/server/src/function
mkdir -p "$FUNCTION_DIR"
if [ -f /mnt/code/code.tar.gz ]; then
    # gzip by default; plain tar when built with OPEN_RUNTIMES_BUILD_COMPRESSION=none.
    tar -xzf /mnt/code/code.tar.gz -C "$FUNCTION_DIR" 2>/dev/null || tar -xf /mnt/code/code.tar.gz -C "$FUNCTION_DIR"
fi
if [ -f "$FUNCTION_DIR/.open-runtimes" ]; then
    # The entrypoint saved at build time wins over the one passed at start.
    set -a
    . "$FUNCTION_DIR/.open-runtimes"
    set +a
fi
cd /usr/local/server
exec sh -c "$1"
`

// buildScript is helpers/build.sh "<install command>" (v3/v4/v5).
const buildScript = `#!/bin/sh
# Test runtime build helper: copy the source, run the install command, pack the
# (output directory of the) build into /mnt/code/code.tar.gz.
set -e
mkdir -p /usr/local/build
# "/." copies dotfiles too (v5 behaviour, shopt -s dotglob in the real helper).
cp -R /mnt/code/. /usr/local/build/
cd /usr/local/build
echo "Environment preparation started."
sh -c "$1"
if [ -n "$OPEN_RUNTIMES_OUTPUT_DIRECTORY" ]; then
    cd "$OPEN_RUNTIMES_OUTPUT_DIRECTORY"
fi
echo "OPEN_RUNTIMES_ENTRYPOINT=$OPEN_RUNTIMES_ENTRYPOINT" > .open-runtimes
# busybox tar has no --exclude: drop the copied-in artifact instead.
rm -f code.tar.gz
if [ "$OPEN_RUNTIMES_BUILD_COMPRESSION" = "none" ]; then
    # Still named code.tar.gz: that is the only name the executor looks for.
    tar -cf /mnt/code/code.tar.gz .
else
    tar -czf /mnt/code/code.tar.gz .
fi
echo "Build finished."
`

// serverScript is helpers/server.sh for protocol.
func serverScript(protocol string) string {
	return fmt.Sprintf(`#!/bin/sh
exec /usr/local/server/runtime-server -protocol %s
`, protocol)
}

// v2StartScript is the v2 image CMD (/usr/local/src/start.sh): the v2
// executor mounts the artifact at /tmp/code.tar.gz and passes no command.
const v2StartScript = `#!/bin/sh
set -e
mkdir -p /usr/code-start
if [ -f /tmp/code.tar.gz ]; then
    tar -xzf /tmp/code.tar.gz -C /usr/code-start 2>/dev/null || tar -xf /tmp/code.tar.gz -C /usr/code-start
fi
cd /usr/local/src
exec /usr/local/src/runtime-server -protocol v2
`

// v2BuildScript is /usr/local/src/build.sh, run by the executor as
// "tar -zxf /tmp/code.tar.gz -C /usr/code && cd /usr/local/src/ && ./build.sh".
const v2BuildScript = `#!/bin/sh
set -e
mkdir -p /usr/builds
cp -R /usr/code/. /usr/builds/
cd /usr/builds
echo "Environment preparation started."
rm -f code.tar.gz
tar -czf /usr/code/code.tar.gz .
echo "Build finished."
`

// bashShim stands in for bash, which busybox lacks: the executor runs
// runtimeEntrypoint and build wrappers with "bash -c".
const bashShim = `#!/bin/sh
exec /bin/sh "$@"
`

// nohupShim stands in for nohup, which busybox-static lacks; the executor's
// start command is "... && nohup helpers/start.sh ...".
const nohupShim = `#!/bin/sh
exec "$@"
`

#!/usr/bin/env bash
# make demo: one execution end to end on a machine with no internet. Builds
# the test runtime image, serves it from a local registry reached through a
# registries.conf mirror of docker.io, starts the executor and runs one
# execution with curl. Everything it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
TAGS='containers_image_openpgp containers_image_storage_stub seccomp'
work=$(mktemp -d /tmp/executor-demo.XXXXXX)
# Runtimes run as an unprivileged uid: they must be able to traverse to the data dir.
chmod 711 "$work"
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT

go build -tags "$TAGS" -o "$work/testimages" ./tests/cmd/testimages
"$work/testimages" -registry-dir "$work/registry" -out-conf "$work/registries.conf" -keep-running >"$work/registry.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 600); do [ -s "$work/registries.conf" ] && grep -q 'openruntimes/test' "$work/registry.log" 2>/dev/null && break; sleep 0.2; done
[ -s "$work/registries.conf" ] || { cat "$work/registry.log"; echo "demo: registry did not come up"; exit 1; }
echo "== test images pushed to a local registry"; cat "$work/registry.log"

mkdir -p "$work/fn"
printf 'demo function code\n' >"$work/fn/index.js"
# Sources come from a storage root (OPR_EXECUTOR_STORAGE_ROOTS), which must
# not hold the data dir.
mkdir -p "$work/storage"
tar -C "$work/fn" -czf "$work/storage/code.tar.gz" index.js

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' 2>/dev/null || echo 19900)
OPR_EXECUTOR_ENV=development OPR_EXECUTOR_SECRET=demo-secret OPR_EXECUTOR_LISTEN=127.0.0.1:$port \
OPR_EXECUTOR_DATA_DIR="$work/data" OPR_EXECUTOR_STORAGE_ROOTS="$work/storage" OPR_EXECUTOR_NETWORK=executor-demo OPR_EXECUTOR_CGROUP_PARENT=/executor-demo \
CONTAINERS_REGISTRIES_CONF="$work/registries.conf" ./bin/executor >"$work/executor.log" 2>&1 &
pids=($! "${pids[@]}")
healthy=
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$port/v1/health" >/dev/null && { healthy=1; break; }; sleep 0.1; done
[ -n "$healthy" ] || { tail -n 40 "$work/executor.log"; echo "demo: the executor did not become healthy"; exit 1; }

# execute WHAT BODY [EXPECT]: one execution, its reply printed. The demo
# fails unless the executor answered 200, the function answered 200 and,
# when given, EXPECT is in the reply: curl alone exits 0 on a 400.
execute() {
	local reply="$work/reply.json" status
	status=$(curl -sS -o "$reply" -w '%{http_code}' -X POST "http://127.0.0.1:$port/v1/runtimes/demo/executions" \
		-H 'Authorization: Bearer demo-secret' -H 'Content-Type: application/json' -H 'Accept: application/json' \
		-d "$2") || { echo "demo: $1: curl failed"; exit 1; }
	cat "$reply"; echo
	if [ "$status" != 200 ]; then
		tail -n 40 "$work/executor.log"
		echo "demo: $1 failed: the executor answered HTTP $status (above)"
		exit 1
	fi
	grep -q '"statusCode":200[,}]' "$reply" || { echo "demo: $1 failed: the function did not answer 200"; exit 1; }
	if [ -n "${3:-}" ] && ! grep -qF -- "$3" "$reply"; then
		echo "demo: $1 failed: the reply lacks $3"
		exit 1
	fi
}

echo "== POST /v1/runtimes/demo/executions (cold start from openruntimes/test:v5-1)"
execute "cold execution" "{\"image\":\"openruntimes/test:v5-1\",\"source\":\"$work/storage/code.tar.gz\",\"entrypoint\":\"index.js\",
	\"runtimeEntrypoint\":\"cp /tmp/code.tar.gz /mnt/code/code.tar.gz && nohup helpers/start.sh \\\"sh helpers/server.sh\\\"\",
	\"path\":\"/hello?from=demo\",\"method\":\"POST\",\"body\":\"hi\"}" 'demo function code'
echo "== warm execution"
execute "warm execution" '{"path":"/logs"}'
echo "== demo passed"
